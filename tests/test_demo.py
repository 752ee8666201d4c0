"""``hfsoup demo``: the embedded mini-zoo is souped offline, its report is consistent with itself, and its numbers
match ``hfsoup mix``. The end-to-end run uses a quick selection of pairs (``--max-pairs``): the full demo makes the
same computations on every pair."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfsoup.study.demo import asset_dir, collapse_threshold, select_pairs


pytestmark = pytest.mark.skipif(not (asset_dir() / "branches").is_dir(), reason="mini-zoo assets not built")


def test_mini_zoo_layout_and_metadata():
    from hfsoup.study.demo import load_zoo_members
    from hfsoup.zoo.config import load_config

    zoo = asset_dir()
    cfg = load_config(zoo / "zoo.yaml")
    members = load_zoo_members(zoo)
    assert len(members) == len(cfg.branches.epochs) * len(cfg.branches.variants)
    assert [(m["branch_epoch"], m["variant"]) for m in members] == sorted(
        itertools.product(cfg.branches.epochs, cfg.branches.variants))
    for e in cfg.branches.epochs:
        assert (zoo / "trunk" / f"e{e:03d}" / "model.safetensors").is_file()
    m = members[0]["meta"]
    assert m["kind"] == "branch" and m["dataset"] == "sklearn:digits" and m["parent"].startswith("trunk/")
    assert m["architecture"] == "resnet10_cifar_nano"


def test_select_pairs_all_or_spread_over_the_bins():
    members = [{"branch_epoch": e} for e in (2, 2, 2, 4, 4, 8)]
    assert select_pairs(members) == list(itertools.combinations(range(6), 2))
    assert select_pairs(members, 100) == list(itertools.combinations(range(6), 2))
    # one pair of each shared-epoch bin in turn (bins 2, 4), then the next of each
    assert select_pairs(members, 2) == [(0, 1), (3, 4)]
    assert select_pairs(members, 3) == [(0, 1), (0, 2), (3, 4)]


def _check_report_against_itself(report: dict) -> None:
    """Every derived number of the report recomputed from its own measurements."""
    models = {m["name"]: m for m in report["models"]}
    thr = collapse_threshold(10)
    assert report["collapse_threshold"] == thr
    for p in report["pairs"]:
        a, b = models[p["a"]], models[p["b"]]
        acc_a, acc_b = a["test"]["accuracy"], b["test"]["accuracy"]
        assert p["shared_epochs"] == min(a["branch_epoch"], b["branch_epoch"])
        assert p["same_branch_epoch"] == (a["branch_epoch"] == b["branch_epoch"])
        assert p["best_ingredient_accuracy"] == max(acc_a, acc_b)
        assert p["accuracy_gain"] == p["soup_accuracy"] - max(acc_a, acc_b)
        assert p["loss_gain"] == min(a["test"]["loss"], b["test"]["loss"]) - p["soup_loss"]
        assert p["collapsed"] == (p["soup_accuracy"] < thr)
    epochs = sorted({p["shared_epochs"] for p in report["pairs"]})
    assert [b["shared_epochs"] for b in report["bins"]] == epochs
    for b in report["bins"]:
        g = np.array([p["accuracy_gain"] for p in report["pairs"] if p["shared_epochs"] == b["shared_epochs"]])
        assert b["pairs"] == len(g)
        assert b["mean_gain"] == float(g.mean()) and b["median_gain"] == float(np.median(g))
        assert b["p_gain_positive"] == float((g > 0).mean())
    best = max(report["models"], key=lambda m: m["test"]["accuracy"])
    first = report["recipes"][0]
    assert (first["recipe"], first["note"], first["test_accuracy"]) == ("best ingredient", best["name"],
                                                                       best["test"]["accuracy"])
    for r in report["recipes"]:
        assert r["gain_vs_best"] == r["test_accuracy"] - best["test"]["accuracy"]


def test_demo_runs_offline_and_matches_mix(tmp_path, monkeypatch, capsys):
    from hfsoup.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--max-pairs", "2"]) == 0
    printed = capsys.readouterr().out

    # the files: the report, its table (also printed) and the figure; nothing else is left behind
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.txt", "soup_gain_vs_shared_epochs.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert (out / "soup_gain_vs_shared_epochs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    text = (out / "report.txt").read_text()
    assert text.strip() in printed
    assert text.startswith(f"Mini-zoo: 4 branches of sklearn:digits; 2 midpoint soups (alpha = 0.5) on the test "
                           f"split")
    for b in report["bins"]:
        assert f"{b['shared_epochs']:>13} {b['pairs']:>6} {100 * b['mean_gain']:>+10.2f}" in text

    # the quick run: two pairs, one per shared-epoch bin, and only their four models
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("b002-v1", "b002-v2"), ("b004-v1", "b004-v2")]
    assert [m["name"] for m in report["models"]] == ["b002-v1", "b002-v2", "b004-v1", "b004-v2"]
    assert [r["recipe"] for r in report["recipes"]] == ["best ingredient", "uniform (all)",
                                                        "uniform (branch epoch 4)", "greedy (val)", "RADIN (val)"]
    assert report["recipes"][1]["models"] == 4 and report["recipes"][2]["models"] == 2
    assert report["test"]["num_samples"] == 360
    _check_report_against_itself(report)

    # an existing output is refused (one line, nothing changed) without --force
    before = (out / "report.json").read_bytes()
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfsoup: error:") and "--force" in err and len(err.splitlines()) == 1
    assert (out / "report.json").read_bytes() == before

    # `hfsoup mix` of a pair gives the demo's numbers
    pair = report["pairs"][1]
    paths = {m["name"]: m["path"] for m in report["models"]}
    assert main(["-q", "mix", paths[pair["a"]], paths[pair["b"]], "--alpha", "0.5", "--eval-split", "test",
                 "--dataset", "sklearn:digits", "--no-save", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    soup = doc["soups"][0]["results"]["test"]
    assert soup["accuracy"] == pytest.approx(pair["soup_accuracy"], abs=1e-9)
    assert soup["loss"] == pytest.approx(pair["soup_loss"], rel=1e-6)
    assert soup["gain"]["accuracy_gain"] == pytest.approx(pair["accuracy_gain"], abs=1e-9)
    accs = {i["reference"]: i["results"]["test"]["accuracy"] for i in doc["ingredients"]}
    assert sorted(accs) == sorted([paths[pair["a"]], paths[pair["b"]]])
    models = {m["path"]: m["test"]["accuracy"] for m in report["models"]}
    for ref, acc in accs.items():
        assert models[ref] == pytest.approx(acc, abs=1e-9)


def test_rebuild_script_parser_is_the_clis():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "build_mini_zoo.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "rebuild the embedded mini-zoo" in proc.stdout and "--resume" in proc.stdout
