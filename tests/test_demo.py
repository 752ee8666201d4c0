"""``hfsoup demo``: the embedded mini-zoo is souped offline and its numbers match ``hfsoup eval`` / ``hfsoup mix``."""

from __future__ import annotations

import json

import pytest

from hfsoup.study.demo import asset_dir


pytestmark = pytest.mark.skipif(not (asset_dir() / "branches").is_dir(), reason="mini-zoo assets not built")


def test_mini_zoo_layout_and_metadata():
    from hfsoup.study.demo import load_zoo_members
    from hfsoup.zoo.config import load_config

    zoo = asset_dir()
    cfg = load_config(zoo / "zoo.yaml")
    members = load_zoo_members(zoo)
    assert len(members) == len(cfg.branches.epochs) * len(cfg.branches.variants)
    for e in cfg.branches.epochs:
        assert (zoo / "trunk" / f"e{e:03d}" / "model.safetensors").is_file()
    m = members[0]["meta"]
    assert m["kind"] == "branch" and m["dataset"] == "sklearn:digits" and m["parent"].startswith("trunk/")
    assert m["architecture"] == "resnet10_cifar_nano"


def test_demo_runs_offline_and_matches_mix_and_eval(tmp_path, monkeypatch, capsys):
    from hfsoup.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--max-pairs", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "soup_gain_vs_shared_epochs.png").stat().st_size > 1000
    assert "shared epochs" in (out / "report.txt").read_text()
    assert len(report["pairs"]) == 4 and report["bins"] and report["recipes"][0]["recipe"] == "best ingredient"
    assert main(["demo", "--out", str(out)]) != 0  # refuses to overwrite without --force
    capsys.readouterr()

    pair = report["pairs"][0]
    paths = {m["name"]: m["path"] for m in report["models"]}
    assert main(["-q", "mix", paths[pair["a"]], paths[pair["b"]], "--alpha", "0.5", "--eval-split", "test",
                 "--dataset", "sklearn:digits", "--no-save", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    soup = doc["soups"][0]["results"]["test"]
    assert soup["accuracy"] == pytest.approx(pair["soup_accuracy"], abs=1e-9)
    assert soup["loss"] == pytest.approx(pair["soup_loss"], rel=1e-6)
    assert soup["gain"]["accuracy_gain"] == pytest.approx(pair["accuracy_gain"], abs=1e-9)
    accs = {i["reference"]: i["results"]["test"]["accuracy"] for i in doc["ingredients"]}
    models = {m["path"]: m["test"]["accuracy"] for m in report["models"]}
    for ref, acc in accs.items():
        assert models[ref] == pytest.approx(acc, abs=1e-9)
