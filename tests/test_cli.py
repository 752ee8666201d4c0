"""The ``hfsoup`` CLI as a user runs it: outputs, JSON documents, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hfsoup.cli import main
from conftest import save_model_dir


def run_cli(*args, env=None):
    """Run the real console entry point in a subprocess (no progress bars)."""
    e = dict(os.environ, HFSOUP_NO_PROGRESS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "hfsoup", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=300)


class _Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Run ``main`` in-process (same error handling as the console script, without interpreter start-up)."""

    def run(*args):
        capsys.readouterr()
        code = main(["-q", *map(str, args)])
        captured = capsys.readouterr()
        return _Proc(code, captured.out, captured.err)

    return run


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hfsoup: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_mix_with_eval_json(model_dirs, cifar_parquet, tmp_path, capsys):
    out = tmp_path / "soup-ab"
    code = main(["-q", "mix", str(model_dirs[0]), str(model_dirs[1]), "--alpha", "0.5", "--out", str(out),
                 "--eval-split", "test", "--dataset", str(cifar_parquet), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (soup,) = doc["soups"]
    r = soup["results"]["test"]
    assert 0 <= r["accuracy"] <= 1 and r["loss"] > 0
    best = max(i["results"]["test"]["accuracy"] for i in doc["ingredients"])
    assert r["gain"]["accuracy_gain"] == pytest.approx(r["accuracy"] - best)
    assert all({"accuracy", "loss"} <= set(i["results"]["test"]) for i in doc["ingredients"])
    manifest = json.loads((out / "soup.json").read_text())
    assert soup["sha256"] == manifest["sha256"]
    assert manifest["results"]["test"]["models"]["soup"]["accuracy"] == r["accuracy"]
    assert "model-index" in (out / "README.md").read_text()


def test_mix_curve_writes_one_soup_per_alpha(model_dirs, tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["-q", "mix", str(model_dirs[0]), str(model_dirs[1]), "--alpha", "0,0.5,1", "--out", str(out),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["alpha"] for s in doc["soups"]] == [0, 0.5, 1]
    assert sorted(p.name for p in out.iterdir()) == ["alpha-0.000", "alpha-0.500", "alpha-1.000"]
    a = load_file(str(model_dirs[0] / "model.safetensors"))
    end = load_file(str(out / "alpha-0.000" / "model.safetensors"))
    assert all(torch.equal(a[k], end[k]) for k in a)


def test_uniform_soup_and_eval_reports_gain(model_dirs, cifar_parquet, tmp_path, capsys):
    out = tmp_path / "soup-u"
    assert main(["-q", "soup", *map(str, model_dirs), "--recipe", "uniform", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["-q", "eval", str(out), *map(str, model_dirs), "--dataset", str(cifar_parquet), "--limit", "20",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"]["num_samples"] == 20
    soup_row = doc["models"][0]
    assert soup_row["gain_against"] == [str(d) for d in model_dirs]
    best = max(r["accuracy"] for r in doc["models"][1:])
    assert soup_row["gain"]["accuracy_gain"] == pytest.approx(soup_row["accuracy"] - best)
    assert "gain" not in doc["models"][1]


def test_human_table_output(model_dirs, cifar_parquet, capsys):
    args = ["-q", "eval", str(model_dirs[0]), "--dataset", str(cifar_parquet), "--limit", "5"]
    assert main(args + ["--json"]) == 0
    loss = json.loads(capsys.readouterr().out)["models"][0]["loss"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich may wrap the title
    assert "accuracy" in out and "test, 5 images" in out and f"{loss:.4f}" in out and "│ m0 │" in out


def test_help_has_examples(capsys):
    for cmd in ("mix", "soup", "eval", "push"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and "examples:" in capsys.readouterr().out, cmd


@pytest.mark.parametrize("case", ["alpha", "one-model", "incompatible", "missing", "exists", "corrupt", "columns",
                                  "offline-repo"])
def test_bad_input_is_one_line_and_writes_nothing(case, model_dirs, cifar_parquet, tmp_path, cli):
    a, b = str(model_dirs[0]), str(model_dirs[1])
    out = tmp_path / "out"
    if case == "alpha":
        proc, frag = cli("mix", a, b, "--alpha", "1.5", "--out", out), "alpha must be in [0, 1]"
    elif case == "one-model":
        proc, frag = cli("soup", a, "--out", out), "at least 2"
    elif case == "incompatible":
        other = save_model_dir(tmp_path / "tiny", seed=0, arch="resnet10_cifar_tiny")
        proc, frag = cli("mix", a, other, "--out", out), "different architectures"
    elif case == "missing":
        proc, frag = cli("mix", a, tmp_path / "nope", "--out", out), "does not exist"
    elif case == "exists":
        out.mkdir()
        proc, frag = cli("mix", a, b, "--out", out), "--force"
    elif case == "corrupt":
        (model_dirs[1] / "model.safetensors").write_bytes(b"\x00" * 20)
        proc, frag = cli("mix", a, b, "--out", out), "not a valid safetensors file"
    elif case == "columns":
        proc, frag = cli("mix", a, b, "--out", out, "--eval-split", "test", "--dataset", cifar_parquet,
                             "--image-column", "picture"), "--image-column"
    else:
        # a real process: the HF variables are read when huggingface_hub is imported
        proc, frag = run_cli("mix", "someorg/not-cached", b, "--out", out,
                             env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}), "not in the local HF cache"
    assert_one_line_error(proc, frag)
    assert not out.exists() or case == "exists" and list(out.iterdir()) == []


def test_no_output_without_out_or_no_save(model_dirs, cli):
    proc = cli("mix", model_dirs[0], model_dirs[1])
    assert_one_line_error(proc, "--out")


def test_tables_explain_greedy_and_radin_decisions(model_dirs, cifar_parquet, tmp_path, cli):
    greedy = cli("soup", *model_dirs, "--recipe", "greedy", "--dataset", cifar_parquet, "--out", tmp_path / "g")
    assert greedy.returncode == 0, greedy.stderr
    assert "greedy decisions on the held-out split (val)" in " ".join(greedy.stdout.split())  # titles may wrap
    assert greedy.stdout.count("kept") >= 1 and "m0" in greedy.stdout
    radin = cli("soup", *model_dirs, "--recipe", "radin", "--budget", "2", "--dataset", cifar_parquet,
                "--out", tmp_path / "r")
    assert radin.returncode == 0, radin.stderr
    assert "2 evaluated on val" in " ".join(radin.stdout.split()) and radin.stdout.count("winner") == 1
