"""Data loading through ``datasets`` (parquet folders, saved datasets, column names, the held-out split) and
evaluation numbers against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hfsoup
from hfsoup import DatasetError
from hfsoup.eval.metrics import EvalResult
from conftest import make_cifar_like, make_model, write_parquet_dataset


def test_loads_parquet_folder_with_cifar_columns(cifar_parquet):
    data = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    ref = make_cifar_like(40, seed=2)
    assert len(data) == 40 and data.images.dtype == torch.uint8 and data.images.shape == (40, 3, 32, 32)
    assert data.labels.tolist() == ref["fine_label"]
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), np.asarray(ref[0]["img"]))
    assert data.class_names[:2] == ["class_0", "class_1"]


def test_heldout_split_is_train_test_split_of_train(cifar_parquet):
    import datasets

    train = datasets.load_dataset(str(cifar_parquet), split="train")
    expected = train.train_test_split(test_size=0.05, seed=42)
    val = hfsoup.load_image_data(str(cifar_parquet), "val", progress=False)
    main = hfsoup.load_image_data(str(cifar_parquet), "train-main", progress=False)
    assert len(val) == len(expected["test"]) == 3 and len(main) == 57
    assert val.labels.tolist() == expected["test"]["fine_label"]
    assert main.labels.tolist() == expected["train"]["fine_label"]
    train_idx, val_idx = hfsoup.heldout_indices(50_000)
    assert len(val_idx) == 2_500 and len(train_idx) == 47_500 and not set(val_idx) & set(train_idx)
    assert val.indices_sha256 and val.describe()["indices_sha256"] == val.indices_sha256


def test_fingerprint_tracks_content(cifar_parquet):
    a = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    b = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    c = hfsoup.load_image_data(str(cifar_parquet), "test", limit=10, progress=False)
    assert a.fingerprint == b.fingerprint != c.fingerprint and len(c) == 10


def test_other_column_names_and_saved_datasets(tmp_path):
    import datasets

    root = write_parquet_dataset(tmp_path / "mirror", image_column="image", label_column="label")
    data = hfsoup.load_image_data(str(root), "test", progress=False)  # auto-detected image/label
    assert len(data) == 40
    with pytest.raises(DatasetError, match="--image-column"):
        hfsoup.load_image_data(str(root), "test", image_column="img", progress=False)
    with pytest.raises(DatasetError, match="--label-column"):
        hfsoup.load_image_data(str(root), "test", label_column="fine_label", progress=False)
    dd = datasets.DatasetDict({"test": make_cifar_like(8, seed=3)})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(hfsoup.load_image_data(str(tmp_path / "saved"), "test", progress=False)) == 8
    with pytest.raises(DatasetError, match="no 'train' split"):
        hfsoup.load_image_data(str(tmp_path / "saved"), "val", progress=False)


def test_unloadable_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="missing-folder") as e:
        hfsoup.load_image_data(str(tmp_path / "missing-folder"), "test", progress=False)
    assert isinstance(e.value, LookupError) and e.value.dataset == str(tmp_path / "missing-folder")
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(DatasetError, match="unknown split") as e:
        hfsoup.load_image_data(str(tmp_path), "validation", progress=False)
    assert e.value.split == "validation"


def test_offline_dataset_not_in_cache_says_so(hub, hub_offline):
    """The offline branch for real: ``huggingface_hub`` and ``datasets`` read ``HF_HUB_OFFLINE`` when imported,
    so the fixture patches their constants; nothing may reach the (running) Hub stand-in."""
    import datasets.config

    hub_offline()
    assert datasets.config.HF_HUB_OFFLINE
    n = len(hub.requests)
    with pytest.raises(DatasetError) as e:
        hfsoup.load_image_data("org/never-cached", "test", progress=False)
    msg = str(e.value)
    assert msg.startswith("dataset 'org/never-cached' is not in the local HF cache") and "HF_HUB_OFFLINE=1" in msg
    assert e.value.dataset == "org/never-cached" and len(msg.splitlines()) == 1
    assert len(hub.requests) == n


def test_evaluation_matches_an_independent_computation(cifar_parquet):
    data = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    model = make_model(0, bn_steps=2)
    result = hfsoup.evaluate_model(model, data, batch_size=7, progress=False)
    model.cpu()  # evaluation ran on the default device (CUDA where present); the reference runs on the CPU
    mean = torch.tensor((0.5071, 0.4867, 0.4408)).view(1, 3, 1, 1)
    std = torch.tensor((0.2675, 0.2565, 0.2761)).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((data.images.float() / 255 - mean) / std)
    assert result.num_samples == 40
    assert result.accuracy == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())
    assert result.loss == pytest.approx(F.cross_entropy(logits, data.labels).item(), rel=1e-5)


def test_soup_gain_definition():
    soup = EvalResult(accuracy=0.80, loss=0.70, num_samples=10)
    ings = [EvalResult(0.75, 0.9, 10), EvalResult(0.78, 0.8, 10)]
    gain = hfsoup.soup_gain(soup, ings)
    assert gain["accuracy_gain"] == pytest.approx(0.02) and gain["loss_gain"] == pytest.approx(0.1)
    assert not gain["collapsed"]
    assert hfsoup.soup_gain(EvalResult(0.01, 5.0, 10), ings)["collapsed"]


def test_soup_evaluate_records_results(model_dirs, cifar_parquet):
    data = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.5)
    entry = hfsoup.evaluate_soup(soup, data, progress=False)
    models = entry.models
    assert set(models) == {"soup", str(model_dirs[0]), str(model_dirs[1])}
    expected = hfsoup.evaluate_model(soup.create_model(), data, progress=False)
    assert models["soup"].accuracy == expected.accuracy and models["soup"].loss == pytest.approx(expected.loss)
    best = max(models[str(d)].accuracy for d in model_dirs[:2])
    assert entry.gain["accuracy_gain"] == pytest.approx(models["soup"].accuracy - best)
