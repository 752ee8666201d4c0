"""CIFAR-100-C: conversion of a generated release in the original layout, loading by corruption/severity,
evaluation against an independent computation, and the CLI (data cifar100c, eval, mix --eval-corrupted)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_model, save_model_dir

BLOCK = 4
CORRS = ("fog", "snow", "gaussian_noise", "saturate")  # 3 common + 1 extra


def make_release(root: Path, block: int = BLOCK, corruptions=CORRS, seed: int = 0) -> Path:
    folder = root / "CIFAR-100-C"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 100, size=block)
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))  # the release stores uint8 labels
    for c in corruptions:
        np.save(folder / f"{c}.npy", rng.integers(0, 256, size=(5 * block, 32, 32, 3), dtype=np.uint8))
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    from hfsoup.data.cifar100c_release import convert_release

    out = tmp_path_factory.mktemp("conv") / "c100c"
    convert_release(release, out, shard_rows=8, progress=False)  # 20 rows -> 3 shards per corruption
    return out


def _run_cli(argv, capsys):
    from hfsoup.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- conversion and loading ----------------------------------------------------------------------------------
def test_convert_round_trip_and_selection(release, converted):
    import datasets

    from hfsoup.data.cifar100c import CIFAR100_FINE_LABELS, load_corrupted

    assert sorted(p.name for p in converted.iterdir() if p.is_dir()) == sorted(CORRS)
    assert len(list((converted / "fog").glob("*.parquet"))) == 3
    card = (converted / "README.md").read_text()
    assert "config_name: fog" in card and "config_name: all" in card and "cc-by-4.0" in card
    labels = np.load(release / "labels.npy")[:BLOCK].astype(np.int64)

    full = datasets.load_dataset(str(converted), "fog", split="test")
    assert full.column_names == ["image", "label", "corruption", "severity"]
    assert full.features["label"].names == list(CIFAR100_FINE_LABELS)
    assert full["severity"] == [s for s in range(1, 6) for _ in range(BLOCK)]
    assert len(datasets.load_dataset(str(converted), "all", split="test")) == 5 * BLOCK * len(CORRS)

    cells = load_corrupted(str(converted), "fog,saturate", "2-3", progress=False)
    assert sorted(cells) == [("fog", 2), ("fog", 3), ("saturate", 2), ("saturate", 3)]
    for (c, s), data in cells.items():
        raw = np.load(release / f"{c}.npy")[(s - 1) * BLOCK:s * BLOCK]
        assert torch.equal(data.images, torch.from_numpy(raw).permute(0, 3, 1, 2))  # pixel-exact, in order
        assert data.labels.tolist() == labels.tolist()
        assert data.class_names[26] == "crab"


def test_tar_input_matches_folder(release, converted, tmp_path):
    from hfsoup.data.cifar100c_release import convert_release

    tar_path = tmp_path / "CIFAR-100-C.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(release, arcname="CIFAR-100-C")
    out = tmp_path / "from-tar"
    result = convert_release(tar_path, out, shard_rows=8, progress=False)
    assert (result.out, result.converted_from, result.corruptions) == (out, "CIFAR-100-C.tar",
                                                                         ["gaussian_noise", "snow", "fog", "saturate"])
    assert (result.images_per_severity, result.rows_per_corruption) == (BLOCK, 5 * BLOCK)
    assert result.files["fog"] == [f"fog/test-0000{i}-of-00003.parquet" for i in range(3)]
    assert json.loads((out / "conversion.json").read_text()) == result.manifest()
    assert result.to_dict()["out"] == str(out) and "out" not in result.manifest()
    for c in CORRS:
        for a, b in zip(sorted((converted / c).glob("*.parquet")), sorted((out / c).glob("*.parquet"))):
            assert a.read_bytes() == b.read_bytes()  # deterministic: same bytes (re-push skips them)


def test_selection_parsing():
    from hfsoup.data.cifar100c import COMMON_CORRUPTIONS, parse_corruptions, parse_severities
    from hfsoup.errors import DatasetError

    assert parse_corruptions("common") == ("common", list(COMMON_CORRUPTIONS))
    assert parse_corruptions("all")[1][-4:] == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert parse_corruptions("snow,fog") == ("snow+fog", ["snow", "fog"])
    assert parse_severities("1-5") == [1, 2, 3, 4, 5] and parse_severities("3") == [3]
    assert parse_severities("5,1") == [1, 5]
    for bad in ("0", "6", "2-7", "x"):
        with pytest.raises(DatasetError):
            parse_severities(bad)
    with pytest.raises(DatasetError, match="unknown corruption 'rain'"):
        parse_corruptions("fog,rain")


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["no-labels", "bad-shape", "unknown-name", "labels-not-repeated"])
def test_bad_release_is_one_line_error(case, tmp_path, capsys):
    folder = make_release(tmp_path / "r", corruptions=("fog",))
    if case == "no-labels":
        (folder / "labels.npy").unlink()
    elif case == "bad-shape":
        np.save(folder / "fog.npy", np.zeros((19, 32, 32, 3), dtype=np.uint8))
    elif case == "unknown-name":
        np.save(folder / "rain.npy", np.zeros((20, 32, 32, 3), dtype=np.uint8))
    else:
        np.save(folder / "labels.npy", np.arange(20))
    rc, out, err = _run_cli(["-q", "data", "cifar100c", "--from", str(folder), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2, err
    assert err.startswith("hfsoup: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))


def test_bad_selection_and_bad_dataset(converted, tmp_path, capsys, cifar_parquet):
    m = save_model_dir(tmp_path / "m", seed=0)
    for extra in (["--severity", "6"], ["--corruptions", "rain"]):
        rc, _, err = _run_cli(["-q", "eval", str(m), "--dataset", f"cifar100-c={converted}", *extra], capsys)
        assert rc == 2 and err.count("\n") == 1, err
    # A parquet dataset without the expected columns (configs present, columns missing).
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    (bad / "fog").mkdir(parents=True)
    pq.write_table(pa.table({"image": [b"x"], "label": [1]}), bad / "fog" / "test-0.parquet")
    (bad / "README.md").write_text("---\nconfigs:\n- config_name: fog\n  data_files:\n  - split: test\n"
                                   "    path: fog/*.parquet\n---\n")
    rc, _, err = _run_cli(["-q", "eval", str(m), "--dataset", f"cifar100-c={bad}", "--corruptions", "fog"], capsys)
    assert rc == 2 and "no column" in err and err.count("\n") == 1, err
    # A clean CIFAR parquet folder has no per-corruption configs.
    rc, _, err = _run_cli(["-q", "eval", str(m), "--dataset", f"cifar100-c={cifar_parquet}", "--corruptions",
                           "fog"], capsys)
    assert rc == 2 and err.count("\n") == 1, err


# -- evaluation ----------------------------------------------------------------------------------------------
def test_evaluate_corrupted_matches_manual(release, converted):
    import hfsoup

    model = make_model(3, bn_steps=2)
    # fp32 on the CPU, as the reference below (a GPU's convolutions, or auto's bf16 where the device has it
    # natively, differ from it beyond rel=1e-5)
    res = hfsoup.evaluate_corrupted({"m": model}, str(converted), corruptions="fog,snow", severities="1-2",
                                    progress=False, batch_size=3, device="cpu", precision="fp32")
    model.cpu()
    mean = np.array([0.5071, 0.4867, 0.4408]).reshape(1, 3, 1, 1)
    std = np.array([0.2675, 0.2565, 0.2761]).reshape(1, 3, 1, 1)
    labels = torch.from_numpy(np.load(release / "labels.npy")[:BLOCK].astype(np.int64))
    for s in (1, 2):
        accs, losses = [], []
        for c in ("fog", "snow"):
            raw = np.load(release / f"{c}.npy")[(s - 1) * BLOCK:s * BLOCK].transpose(0, 3, 1, 2)
            x = torch.from_numpy(((raw / 255.0 - mean) / std).astype(np.float32))
            with torch.no_grad():
                logits = model.eval()(x)
            acc = (logits.argmax(1) == labels).double().mean().item()
            loss = F.cross_entropy(logits.double(), labels).item()
            cell = res.cells["m"][(c, s)]
            assert cell.accuracy == pytest.approx(acc) and cell.loss == pytest.approx(loss, rel=1e-5)
            accs.append(acc), losses.append(loss)
        assert res.mean("m", s).accuracy == pytest.approx(np.mean(accs))
        assert res.mean("m", s).loss == pytest.approx(np.mean(losses), rel=1e-5)


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_convert_then_eval_json(tmp_path, capsys, converted):
    converted_partial = converted
    from hfsoup.data.cifar100c import CORRUPTIONS

    release = make_release(tmp_path / "full", block=2, corruptions=CORRUPTIONS)  # all 19, 2 images per severity
    out = tmp_path / "conv"
    rc, stdout, err = _run_cli(["-q", "data", "cifar100c", "--from", str(release), "--out", str(out), "--json"],
                               capsys)
    assert rc == 0, err
    info = json.loads(stdout)
    assert info["corruptions"] == list(CORRUPTIONS) and info["images_per_severity"] == 2
    rc, _, err = _run_cli(["-q", "data", "cifar100c", "--from", str(release), "--out", str(out)], capsys)
    assert rc == 2 and "--force" in err

    a, b = save_model_dir(tmp_path / "a", seed=1), save_model_dir(tmp_path / "b", seed=2)
    rc, stdout, err = _run_cli(["-q", "mix", str(a), str(b), "--alpha", "0.5", "--out", str(tmp_path / "s")],
                               capsys)
    assert rc == 0, err
    rc, stdout, err = _run_cli(["-q", "eval", str(tmp_path / "s"), str(a), str(b), "--dataset",
                                f"cifar100-c={out}", "--corruptions", "common", "--severity", "1-2", "--json"],
                               capsys)
    assert rc == 0, err
    doc = json.loads(stdout)
    assert len(doc["corrupted_data"]["corruptions"]) == 15 and doc["corrupted_data"]["config"] == "common"
    soup_row = doc["models"][0]
    assert set(soup_row["corrupted"]["mean"]) == {"s1", "s2"}
    assert set(soup_row["corrupted"]["per_corruption"]["fog"]["s2"]) >= {"accuracy", "loss"}
    assert "accuracy_gain" in soup_row["corrupted"]["gain"]["s1"]
    assert "gain" not in doc["models"][1]["corrupted"]
    rc, _, err = _run_cli(["-q", "eval", str(a), "--dataset", f"cifar100-c={converted_partial}"], capsys)
    assert rc == 2 and "has no corruption" in err and err.count("\n") == 1


def test_cli_mix_eval_corrupted(converted, cifar_parquet, tmp_path, capsys):
    a, b = save_model_dir(tmp_path / "a", seed=1), save_model_dir(tmp_path / "b", seed=2)
    out = tmp_path / "soup"
    rc, stdout, err = _run_cli(["-q", "mix", str(a), str(b), "--alpha", "0.5", "--eval-split", "test", "--dataset",
                                str(cifar_parquet), "--eval-corrupted", "--corrupted-dataset", str(converted),
                                "--corruptions", "fog,snow", "--severity", "3", "--json", "--out", str(out)], capsys)
    assert rc == 0, err
    doc = json.loads(stdout)
    res = doc["soups"][0]["results"]
    key = "cifar100-c/snow+fog/s3"
    assert set(res) == {"test", key}
    assert {"accuracy", "loss"} <= set(res[key]) and {"accuracy_gain", "loss_gain", "robustness_gap",
                                                      "robustness_gap_gain"} <= set(res[key]["gain"])
    assert "accuracy_gain" in res["test"]["gain"]
    cor = doc["corrupted"]
    assert len(cor["ingredients"]) == 2 and cor["data"]["severities"] == [3]
    manifest = json.loads((out / "soup.json").read_text())
    assert manifest["results"][key]["models"]["soup"]["accuracy"] == pytest.approx(res[key]["accuracy"])
    card = (out / "README.md").read_text()
    assert "config: snow+fog-s3" in card  # model-index: one entry per corruption set and severity


# -- publishing and loading back through the Hub stand-in ------------------------------------------------------
def test_push_then_load_from_the_hub(release, converted, hub, capsys):
    """`hfsoup data cifar100c --push` publishes a dataset repo that `datasets` loads back per corruption."""
    from hfsoup.data.cifar100c import load_corrupted

    rc, out, err = _run_cli(["-q", "data", "cifar100c", "--from", str(converted), "--push", "org/cifar100-c",
                             "--json"], capsys)
    assert rc == 0, err
    pushed = json.loads(out)["push"]
    head = hub.head("org/cifar100-c", repo_type="dataset")
    assert pushed["commit"] == head.sha and pushed["repo_type"] == "dataset"
    assert len(hub.commits("org/cifar100-c", repo_type="dataset")) == 2  # the repo's initial commit + ours
    local_files = sorted(p.relative_to(converted).as_posix() for p in converted.rglob("*") if p.is_file())
    assert sorted(pushed["files"]) == local_files == sorted(f for f in head.files if f != ".gitattributes")
    assert all(head.files[f] == (converted / f).read_bytes() for f in local_files)
    # re-running is safe: nothing changed, so no new commit
    rc, _, err = _run_cli(["-q", "data", "cifar100c", "--from", str(converted), "--push", "org/cifar100-c"], capsys)
    assert rc == 0, err
    assert len(hub.commits("org/cifar100-c", repo_type="dataset")) == 2
    assert hub.head("org/cifar100-c", repo_type="dataset").sha == head.sha

    remote = load_corrupted("org/cifar100-c", "fog,saturate", "2-3", progress=False)
    local = load_corrupted(str(converted), "fog,saturate", "2-3", progress=False)
    assert remote.keys() == local.keys()
    for key in local:
        assert torch.equal(remote[key].images, local[key].images) and torch.equal(remote[key].labels,
                                                                                  local[key].labels)
    pinned = load_corrupted("org/cifar100-c", "fog", 1, revision=head.sha, progress=False)
    assert torch.equal(pinned[("fog", 1)].images, local_fog1(converted))


def local_fog1(converted):
    from hfsoup.data.cifar100c import load_corrupted

    return load_corrupted(str(converted), "fog", 1, progress=False)[("fog", 1)].images


def test_push_to_a_new_revision_branch_creates_it(converted, hub, capsys, tmp_path):
    """`--push REPO --revision BRANCH` to a branch that does not exist yet creates it (from main) and commits
    there; main keeps what it had. Before, the Hub answered "Revision Not Found"."""
    from hfsoup.data.cifar100c import load_corrupted

    rc, _, err = _run_cli(["-q", "data", "cifar100c", "--from", str(converted), "--push", "org/c100c", "--json"],
                          capsys)
    assert rc == 0, err
    main_sha = hub.head("org/c100c", repo_type="dataset").sha
    converted_copy = shutil.copytree(converted, tmp_path / "c100c-v2")
    (converted_copy / "README.md").write_text((converted / "README.md").read_text() + "\nRevision two.\n")
    rc, out, err = _run_cli(["-q", "data", "cifar100c", "--from", str(converted_copy), "--push", "org/c100c",
                             "--revision", "v2", "--json"], capsys)
    assert rc == 0, err
    repo = hub.repos[("dataset", "org/c100c")]
    doc = json.loads(out)["push"]
    assert repo.refs["v2"] == doc["commit"] != main_sha and repo.refs["main"] == main_sha
    assert hub.head("org/c100c", "v2", repo_type="dataset").files["README.md"].endswith(b"Revision two.\n")
    assert not hub.head("org/c100c", repo_type="dataset").files["README.md"].endswith(b"Revision two.\n")
    cells = load_corrupted("org/c100c", "fog", 2, revision="v2", progress=False)  # the branch loads back
    assert torch.equal(cells[("fog", 2)].images, load_corrupted(str(converted), "fog", 2, progress=False)[("fog", 2)]
                       .images)
