"""``hfsoup demo``: the pair study and its report on the embedded mini-zoo, offline. The printed numbers are the
written tables' (recomputed here from pairs.parquet / models.parquet), and a soup's numbers match ``hfsoup mix``.
The end-to-end run uses a quick selection of pairs (``--max-pairs``): the full demo makes the same computations
on every pair."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfsoup.study.demo import MINI_ZOO_YAML, asset_dir, select_pairs


pytestmark = pytest.mark.skipif(not (asset_dir() / "branches").is_dir(), reason="mini-zoo assets not built")


def test_mini_zoo_layout_and_metadata():
    from hfsoup.study.demo import load_zoo_members
    from hfsoup.zoo.config import load_config

    zoo = asset_dir()
    cfg = load_config(zoo / "zoo.yaml")
    # the packaged config is the one --rebuild trains with
    assert (zoo / "zoo.yaml").read_text(encoding="utf-8") == MINI_ZOO_YAML
    members = load_zoo_members(zoo)
    assert len(members) == len(cfg.branches.epochs) * len(cfg.branches.variants) == 24
    assert [(m["branch_epoch"], m["variant"]) for m in members] == sorted(
        itertools.product(cfg.branches.epochs, cfg.branches.variants))
    for e in cfg.branches.epochs:
        assert (zoo / "trunk" / f"e{e:03d}" / "model.safetensors").is_file()
    m = members[0]["meta"]
    assert m["kind"] == "branch" and m["dataset"] == "sklearn:digits" and m["parent"].startswith("trunk/")
    assert m["architecture"] == "resnet10_cifar_nano"
    # the package stays small: weights are stored as float16
    size = sum(p.stat().st_size for p in zoo.rglob("*") if p.is_file())
    assert size < 10 * 2 ** 20


def test_select_pairs_all_or_spread_over_the_bins():
    members = [{"branch_epoch": e} for e in (2, 2, 2, 4, 4, 8)]
    assert select_pairs(members) == list(itertools.combinations(range(6), 2))
    assert select_pairs(members, 100) == list(itertools.combinations(range(6), 2))
    # one pair of each shared-epoch bin in turn (bins 2, 4), then the next of each
    assert select_pairs(members, 2) == [(0, 1), (3, 4)]
    assert select_pairs(members, 3) == [(0, 1), (0, 2), (3, 4)]


def _check_demo_against_tables(doc: dict, out: Path) -> None:
    """Every number of demo.json recomputed from the study's tables and the report's summary."""
    import pyarrow.parquet as pq

    pairs = pq.read_table(out / "study" / "pairs.parquet").to_pylist()
    models = pq.read_table(out / "study" / "models.parquet").to_pylist()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert all(p["status"] == "ok" and p["alpha"] == 0.5 for p in pairs)
    acc = {m["name"]: m["acc"] for m in models}
    assert {m["name"]: m["acc"] for m in doc["models"]} == acc
    for p in pairs:
        assert p["acc_gain"] == pytest.approx(p["soup_acc"] - max(acc[p["model_a"]], acc[p["model_b"]]), abs=1e-12)
        assert p["shared_epochs"] == min(p["epoch_a"], p["epoch_b"])
    # by shared epochs: the pairs, their mean gain in points and the fraction of positive soups
    epochs = sorted({p["shared_epochs"] for p in pairs})
    assert [b["shared_epochs"] for b in doc["bins"]] == [str(e) for e in epochs]
    for b, e in zip(doc["bins"], epochs):
        g = np.array([100 * p["acc_gain"] for p in pairs if p["shared_epochs"] == e])
        assert b["pairs"] == len(g)
        assert b["mean_gain_pp"] == pytest.approx(float(g.mean()), abs=1e-9)
        assert b["p_positive"] == pytest.approx(float((g > 1e-9).mean()), abs=1e-12)
        assert b["p_positive_lo"] <= b["p_positive"] <= b["p_positive_hi"]
    # the headline is the report's, and its first number is the fraction of positive soups
    assert doc["headline"] == summary["headline"]
    first = doc["headline"][0]
    assert first["finding"] == "soups with a positive accuracy gain"
    positive = sum(100 * p["acc_gain"] > 1e-9 for p in pairs)
    assert first["value"] == pytest.approx(positive / len(pairs), abs=1e-12)
    assert first["ours"].endswith(f"({positive}/{len(pairs)})")
    # the recipes against the best model
    best = max(models, key=lambda m: m["acc"])
    r0 = doc["recipes"][0]
    assert (r0["recipe"], r0["note"], r0["test_accuracy"]) == ("best ingredient", best["name"], best["acc"])
    for r in doc["recipes"]:
        assert r["gain_vs_best"] == r["test_accuracy"] - best["acc"]


def test_demo_runs_offline_and_matches_mix(tmp_path, monkeypatch, capsys):
    from hfsoup.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--max-pairs", "2"]) == 0
    printed = capsys.readouterr().out

    # the files: the study's tables, its report, the demo's summary; nothing else is left behind
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "demo.txt", "report", "study"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    for name in ("pairs.parquet", "models.parquet", "study.json"):
        assert (out / "study" / name).is_file()
    # fp32 asked for, not auto: the documented numbers on every CPU (auto picks bf16 on one with AMX)
    settings = json.loads((out / "study" / "study.json").read_text())["settings"]
    assert settings["precision"] == "fp32" and settings["precision_choice"]["requested"] == "fp32"
    for name in ("report.md", "report.html", "summary.json"):
        assert (out / "report" / name).is_file()
    assert not list((out / "report").rglob("*.svg"))  # the demo skips the SVG copies
    doc = json.loads((out / "demo.json").read_text())
    text = (out / "demo.txt").read_text()
    assert text.strip() in printed

    # the quick run: two pairs, one per shared-epoch bin, and only their four models
    assert [m["name"] for m in doc["models"]] == ["b004-v1", "b004-v2", "b008-v1", "b008-v2"]
    assert doc["study"]["total_rows"] == 2 and doc["study"]["failed"] == 0
    assert doc["test"]["num_samples"] == doc["test"]["limit"] == 200 and doc["test"]["split_size"] == 360
    assert text.startswith("Mini-zoo: 4 branches (2 branch epochs x 2 variants) of resnet10_cifar_nano trained on "
                           "160 training images of sklearn:digits\nTest set: 200 images (the first 200 of 360, to "
                           "keep the demo near 2 minutes: --limit 360 for all), so one image = 0.50 accuracy points; "
                           "2 midpoint soups (alpha = 0.5)")
    assert [r["recipe"] for r in doc["recipes"]] == ["best ingredient", "uniform (all)",
                                                     "uniform (branch epoch 8)", "greedy (val)", "RADIN (val)"]
    assert doc["recipes"][1]["models"] == 4 and doc["recipes"][2]["models"] == 2
    _check_demo_against_tables(doc, out)
    for h in doc["headline"]:
        assert h["finding"] in text and h["ours"] in text
    for b in doc["bins"]:
        assert f"{b['shared_epochs']:>13} {b['pairs']:>6} {b['mean_gain_pp']:>+10.2f}" in text

    # an existing output is refused (one line, nothing changed) without --force
    before = (out / "demo.json").read_bytes()
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfsoup: error:") and "--force" in err and len(err.splitlines()) == 1
    assert (out / "demo.json").read_bytes() == before

    # `hfsoup mix` of a pair gives the study's numbers
    import pyarrow.parquet as pq

    pair = pq.read_table(out / "study" / "pairs.parquet").to_pylist()[0]
    paths = {m["name"]: m["path"] for m in doc["models"]}
    # the demo evaluates in fp32 on the CPU on every machine (DEMO_PRECISION): mix the same way
    assert main(["-q", "mix", paths[pair["model_a"]], paths[pair["model_b"]], "--alpha", "0.5", "--eval-split",
                 "test", "--dataset", "sklearn:digits", "--limit", "200", "--no-save", "--json", "--device", "cpu",
                 "--precision", "fp32"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    soup = mixed["soups"][0]["results"]["test"]
    assert soup["accuracy"] == pytest.approx(pair["soup_acc"], abs=1e-9)
    assert soup["loss"] == pytest.approx(pair["soup_loss"], rel=1e-5)
    assert soup["gain"]["accuracy_gain"] == pytest.approx(pair["acc_gain"], abs=1e-9)
    accs = {i["reference"]: i["results"]["test"]["accuracy"] for i in mixed["ingredients"]}
    assert accs == {paths[pair["model_a"]]: pair["acc_a"], paths[pair["model_b"]]: pair["acc_b"]}


def test_rebuild_script_parser_is_the_clis():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "build_mini_zoo.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "rebuild the embedded mini-zoo" in proc.stdout and "--resume" in proc.stdout
