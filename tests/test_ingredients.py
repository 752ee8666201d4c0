"""Model references, ingredients, compatibility checks and the round trip through timm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hfsoup
from hfsoup import (CorruptFileError, HfSoupError, IncompatibleModelsError, ModelReferenceError,
                    UnsafeCheckpointError)
from hfsoup.core.safetensors_io import sha256_file
from conftest import make_model, save_model_dir


@pytest.mark.parametrize("text,repo,rev", [
    ("org/name", "org/name", None),
    ("org/name@v1.0", "org/name", "v1.0"),
    ("hf-hub:org/name@0123456789abcdef0123456789abcdef01234567", "org/name",
     "0123456789abcdef0123456789abcdef01234567"),
    ("hf-hub:org/name", "org/name", None),
])
def test_parse_hub_references(text, repo, rev):
    ref = hfsoup.parse_reference(text)
    assert (ref.repo_id, ref.revision, ref.is_local) == (repo, rev, False)


def test_parse_local_references(tmp_path):
    assert hfsoup.parse_reference(str(tmp_path)).local_path == tmp_path
    assert hfsoup.parse_reference(f"local-dir:{tmp_path}").local_path == tmp_path
    assert hfsoup.parse_reference("./does/not/exist").is_local


@pytest.mark.parametrize("text", ["", "org/na me", "a/b/c@x y", "org//name"])
def test_bad_references_are_one_line_errors(text):
    with pytest.raises(ModelReferenceError):
        hfsoup.resolve(text)


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(ModelReferenceError, match="does not exist") as e:
        hfsoup.load_ingredient(str(tmp_path / "nope"))
    assert isinstance(e.value, LookupError) and e.value.path == tmp_path / "nope"
    assert e.value.reference == str(tmp_path / "nope") and e.value.repo_id is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelReferenceError, match="config.json"):
        hfsoup.load_ingredient(str(tmp_path / "empty"))
    d = save_model_dir(tmp_path / "m", seed=0)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelReferenceError, match="model.safetensors"):
        hfsoup.load_ingredient(str(d))


def test_ingredient_reads_header_metadata_and_layout(tmp_path):
    d = save_model_dir(tmp_path / "m", seed=3, metadata={"branch_epoch": 200, "variant": 2})
    ing = hfsoup.load_ingredient(str(d))
    assert ing.architecture == "resnet10_cifar_nano"
    assert ing.num_classes == 100
    assert ing.metadata["branch_epoch"] == "200" and ing.metadata["format"] == "pt"
    assert ing.tensors["fc.weight"].shape == (100, 64)
    assert ing.tensors["bn1.num_batches_tracked"].dtype == torch.int64
    assert ing.sha256 == sha256_file(d / "model.safetensors")


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    d = save_model_dir(tmp_path / "m", seed=0)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(CorruptFileError, match="truncated") as e:
        hfsoup.load_ingredient(str(d))
    assert isinstance(e.value, ValueError) and e.value.path == d / "model.safetensors"
    (d / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CorruptFileError):
        hfsoup.load_ingredient(str(d))
    (d / "config.json").write_text("{broken")
    with pytest.raises(CorruptFileError, match="config.json") as e:
        hfsoup.load_ingredient(str(d))
    assert e.value.path == d / "config.json"


def test_incompatible_architectures_and_shapes(tmp_path):
    a = save_model_dir(tmp_path / "a", seed=0)
    b = save_model_dir(tmp_path / "b", seed=0, arch="resnet10_cifar_tiny")
    c = save_model_dir(tmp_path / "c", seed=0, num_classes=10)
    with pytest.raises(IncompatibleModelsError, match="different architectures") as e:
        hfsoup.load_ingredients([str(a), str(b)])
    assert isinstance(e.value, ValueError) and e.value.keys == []
    with pytest.raises(IncompatibleModelsError, match="fc.weight") as e:
        hfsoup.load_ingredients([str(a), str(c)])
    assert e.value.keys == ["fc.bias", "fc.weight"]  # the 100-class head vs the 10-class one


def test_mismatched_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    a = save_model_dir(tmp_path / "a", seed=0)
    b = save_model_dir(tmp_path / "b", seed=1)
    sd = load_file(str(b / "model.safetensors"))
    sd["extra.weight"] = torch.zeros(2)
    del sd["fc.bias"]
    save_file(sd, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(IncompatibleModelsError) as e:
        hfsoup.load_ingredients([str(a), str(b)])
    assert "missing fc.bias" in str(e.value) and "unexpected extra.weight" in str(e.value)
    assert e.value.keys == ["extra.weight", "fc.bias"]


def test_one_ingredient_is_not_a_soup(tmp_path):
    a = save_model_dir(tmp_path / "a", seed=0)
    with pytest.raises(HfSoupError, match="at least 2"):
        hfsoup.uniform_soup([str(a)])


def test_pickle_checkpoints_need_opt_in(tmp_path):
    import timm

    model = make_model(0)
    folder = tmp_path / "timm-bin"
    timm.models.save_for_hf(model, str(folder), safe_serialization=False)
    assert (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists()
    with pytest.raises(UnsafeCheckpointError, match="--allow-pickle") as e:
        hfsoup.load_ingredient(str(folder))
    assert e.value.path == folder / "pytorch_model.bin"
    ing = hfsoup.load_ingredient(str(folder), allow_pickle=True)
    assert torch.equal(ing.state_dict()["fc.weight"], model.state_dict()["fc.weight"])


def test_accepts_folders_written_by_timm_save_for_hf(tmp_path):
    import timm

    folders = []
    for seed in (0, 1):
        model = make_model(seed, bn_steps=1)
        timm.models.save_for_hf(model, str(tmp_path / f"t{seed}"), safe_serialization=True)
        folders.append(str(tmp_path / f"t{seed}"))
    soup = hfsoup.mix(*folders, 1.0)
    assert torch.equal(soup.state_dict["conv1.weight"], make_model(1).state_dict()["conv1.weight"])


def test_soup_reloads_bit_exactly_through_timm_local_dir(model_dirs, tmp_path):
    import timm

    soup = hfsoup.uniform_soup([str(d) for d in model_dirs])
    out = hfsoup.save_soup(soup, tmp_path / "soup")
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert type(model).__name__ == "CifarResNet"
    for key, value in model.state_dict().items():
        assert torch.equal(value, soup.state_dict[key]), key
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), soup.create_model()(x))


def test_written_files_and_metadata(model_dirs, tmp_path):
    from safetensors import safe_open

    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.25)
    out = hfsoup.save_soup(soup, tmp_path / "soup")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "soup.json"]
    manifest = json.loads((out / "soup.json").read_text())
    assert manifest["recipe"] == "mix" and manifest["parameters"]["alpha"] == 0.25
    assert [i["weight"] for i in manifest["ingredients"]] == [0.75, 0.25]
    assert manifest["ingredients"][0]["path"] == model_dirs[0].name  # the folder's name, not the local path
    assert manifest["sha256"] == sha256_file(out / "model.safetensors")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["recipe"] == "mix"
    assert json.loads(meta["weights"]) == [0.75, 0.25]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet10_cifar_nano" and config["num_classes"] == 100
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and "- model-soup" in card
    assert "- merge" in card
    assert f"**Weights SHA-256:** `{manifest['sha256']}`" in card


def test_existing_output_is_not_overwritten_without_force(model_dirs, tmp_path):
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.5)
    out = tmp_path / "soup"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(hfsoup.OutputExistsError, match="--force"):
        hfsoup.save_soup(soup, out)
    assert (out / "keep.txt").read_text() == "precious"
    hfsoup.save_soup(soup, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or backup folders left


def test_interrupted_write_leaves_nothing(model_dirs, tmp_path, monkeypatch):
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.5)
    from hfsoup.core import files

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "replace_folder", boom)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        hfsoup.save_soup(soup, out / "soup")
    assert list(out.iterdir()) == []


def test_every_entry_point_takes_pathlib_paths(model_dirs):
    """pathlib.Path arguments used to crash mix/uniform/weighted/load_ingredients (AttributeError)."""
    a, b, c = (Path(d) for d in model_dirs)
    as_str = hfsoup.mix(str(a), str(b), 0.25)
    as_path = hfsoup.mix(a, b, 0.25)
    assert [i.reference for i in as_path.ingredients] == [str(a), str(b)]
    for key, value in as_str.state_dict.items():
        assert torch.equal(value, as_path.state_dict[key]), key
    uni = hfsoup.uniform_soup([a, b, c])
    assert torch.equal(uni.state_dict["fc.weight"], hfsoup.uniform_soup([str(a), str(b), str(c)]).state_dict["fc.weight"])
    w = hfsoup.weighted_soup([a, b], [0.75, 0.25])  # = mix(a, b, alpha=0.25)
    assert torch.equal(w.state_dict["fc.weight"], as_path.state_dict["fc.weight"])
    assert [i.name for i in hfsoup.load_ingredients([a, Path(str(b))])] == [a.name, b.name]
