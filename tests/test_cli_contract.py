"""The CLI's error contract (README): a user-caused failure is one line on stderr, exit code 2, saying what is wrong
and what to do; SIGTERM cleans up like Ctrl-C; ``--json`` is strict JSON; every command has ``--help`` examples;
the flags mean the same thing in every command; ``-q`` silences the clients' progress bars too (issue 11).

In-process (``main([...])``) except where the process matters: signals, and the progress bars of ``datasets``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hfsoup.cli import main
from hfsoup.cli.app import build_parser
from conftest import make_cifar_like, save_model_dir


class _Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(argv, capsys) -> _Proc:
    """``main(argv)`` in-process, quiet; a usage error (``SystemExit``) counts as its exit code."""
    capsys.readouterr()
    try:
        code = main(["-q", *map(str, argv)])
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return _Proc(code, captured.out, captured.err)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hfsoup: error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def leftovers(root: Path) -> list[str]:
    """Hidden temporaries of the atomic writers (``.NAME.tmp-…``, ``.NAME.old-…``) anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def model0(tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("models") / "m0", seed=0)


def write_dataset(root: Path, labels, *, images=None) -> Path:
    """A parquet dataset folder with a test split: PNG images (or the given raw image values) and a plain int
    ``label`` column (no ClassLabel: any value can be stored)."""
    import datasets

    n = len(labels)
    base = make_cifar_like(n, seed=3)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"img": images if images is not None else list(base["img"]),
                                     "label": list(labels)}, features=features)
    (root / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


# -- 7. SIGTERM ---------------------------------------------------------------------------------------------------
def test_sigterm_mid_run_leaves_no_temporary_and_no_output(tmp_path):
    """A run killed with SIGTERM (a scheduler, `kill`) while its output folder is being built exits 143 with one
    line and removes its hidden temporary folder: --out does not exist, nothing `.tmp` is left anywhere."""
    out = tmp_path / "demo-out"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HFSOUP_DEBUG"}
    env.update(HFSOUP_NO_PROGRESS="1", HF_HOME=str(tmp_path / "hf"), TMPDIR=str(scratch))
    # The demo builds its whole folder (study, report) inside `.demo-out.tmp-*`: a long window, found by polling.
    proc = subprocess.Popen([sys.executable, "-m", "hfsoup", "-q", "demo", "--out", str(out), "--max-pairs", "40",
                             "--limit", "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".demo-out.tmp-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary folder never appeared"
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the run: the study is writing into the temporary folder
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["hfsoup: terminated by SIGTERM (outputs are written atomically: nothing partial was left)"]
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert list(scratch.glob("hfsoup-*")) == []  # the demo's scratch folder is gone too (torch keeps its own)


# -- 10. labels outside the model's classes ----------------------------------------------------------------------
@pytest.mark.parametrize("bad, row", [(-100, 2), (100, 0), (-1, 4), (250, 3)])
def test_labels_outside_the_models_classes_are_an_error_naming_column_and_value(bad, row, model0, tmp_path, capsys):
    labels = [1, 2, 3, 4, 5, 6]
    labels[row] = bad
    data = write_dataset(tmp_path / "ds", labels)
    out = tmp_path / "soup"
    proc = run_main(["eval", model0, "--dataset", data, "--json"], capsys)
    assert_one_line_error(proc, f"label column 'label' of '{data}' [test] holds {bad} at row {row}",
                          "--label-column")
    assert proc.stdout == ""
    if bad >= 0:  # a model's class count decides
        assert "outside the model's 100 classes [0, 100)" in proc.stderr
    # the same check on every evaluation path: a soup's evaluation too, before anything is written
    other = save_model_dir(tmp_path / "m1", seed=1)
    proc = run_main(["mix", model0, other, "--out", out, "--eval-split", "test", "--dataset", data], capsys)
    assert_one_line_error(proc, f"label column 'label' of '{data}' [test] holds {bad} at row {row}")
    assert not out.exists() and leftovers(tmp_path) == []


def test_metrics_from_logits_refuses_labels_outside_the_logits():
    from hfsoup.errors import DatasetError
    from hfsoup.eval.metrics import metrics_from_logits

    logits = torch.zeros(3, 10)
    with pytest.raises(DatasetError, match=r"^the labels hold -100 at row 1: a negative label"):
        metrics_from_logits(logits, torch.tensor([0, -100, 1]))
    with pytest.raises(DatasetError, match=r"hold 10 at row 2: outside the model's 10 classes \[0, 10\)"):
        metrics_from_logits(logits, torch.tensor([0, 9, 10]))
    assert metrics_from_logits(logits, torch.tensor([0, 9, 1])).num_samples == 3


def test_study_run_checks_labels_against_the_models(model0, tmp_path, capsys):
    data = write_dataset(tmp_path / "ds", [3, -100, 5])
    other = save_model_dir(tmp_path / "m1", seed=1)
    proc = run_main(["study", "run", model0, other, "--out", tmp_path / "study", "--dataset", data], capsys)
    assert_one_line_error(proc, "label column 'label'", "holds -100 at row 1")


# -- 11c. user-caused failures that were internal errors -----------------------------------------------------------
def test_device_cuda_without_a_gpu_is_a_user_error(model0, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["eval", model0, "--device", "cuda"], ["eval", model0, "--device", "cuda:1"],
                 ["study", "run", model0, model0, "--out", "x", "--device", "cuda"]):
        proc = run_main(argv, capsys)
        assert_one_line_error(proc)
        assert proc.stderr == ("hfsoup: error: CUDA is not available on this machine: drop --device or use "
                               "--device cpu\n")
    proc = run_main(["eval", model0, "--device", "gpu"], capsys)
    assert_one_line_error(proc, "unknown --device 'gpu'", "cpu, cuda, cuda:N or mps")


@pytest.mark.parametrize("argv", [
    ["eval", "M", "--batch-size", "0"], ["eval", "M", "--batch-size", "-4"], ["eval", "M", "--limit", "0"],
    ["eval", "M", "--limit", "-1"], ["mix", "M", "M", "--no-save", "--eval-split", "test", "--batch-size", "0"],
    ["soup", "M", "M", "--no-save", "--limit", "0"], ["study", "run", "M", "M", "--out", "o", "--batch-size", "0"],
    ["study", "run", "M", "M", "--out", "o", "--limit", "-5"], ["demo", "--limit", "0"], ["demo", "--threads", "0"],
    ["data", "cifar100c", "--from", "x", "--out", "o", "--shard-rows", "0"]])
def test_counts_and_sizes_must_be_positive(argv, capsys):
    proc = run_main(argv, capsys)
    assert_one_line_error(proc, "must be a positive integer (1 or more)", "--help")


@pytest.mark.parametrize("case", ["read-only", "permission", "full", "quota"])
def test_a_read_only_or_full_disk_is_one_line_naming_the_path(case, model0, tmp_path, monkeypatch, capsys):
    out = tmp_path / "soup"
    code = {"read-only": errno.EROFS, "permission": errno.EACCES, "full": errno.ENOSPC, "quota": errno.EDQUOT}[case]
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        # the atomic folder's temporary sibling cannot be created (root ignores chmod, so it is simulated)
        if self.name.startswith(".soup.tmp-"):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.delenv("HFSOUP_DEBUG", raising=False)
    other = save_model_dir(tmp_path / "m1", seed=1)
    proc = run_main(["mix", model0, other, "--out", out], capsys)
    meaning = {"read-only": "read-only file system (EROFS)", "permission": "permission denied (EACCES)",
               "full": "no space left on device (ENOSPC)", "quota": "disk quota exceeded (EDQUOT)"}[case]
    verb = "cannot access" if case == "permission" else "cannot write"
    assert_one_line_error(proc, f"{verb} '{out}': {meaning}: ", "choose")  # the user's path, not the temporary
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_full_disk_while_writing_a_file_is_a_user_error(model0, tmp_path, monkeypatch, capsys):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    other = save_model_dir(tmp_path / "m1", seed=1)
    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "soup"
    proc = run_main(["mix", model0, other, "--out", out], capsys)
    assert_one_line_error(proc, "cannot write: no space left on device (ENOSPC): free some disk space")
    assert not out.exists() and leftovers(tmp_path) == []


def test_undecodable_image_bytes_name_the_row_and_column(model0, tmp_path, capsys):
    good = list(make_cifar_like(4, seed=5).cast_column("img", __import__("datasets").Image(decode=False))["img"])
    images = [good[0], good[1], {"bytes": b"not a png at all", "path": None}, good[3]]
    data = write_dataset(tmp_path / "ds", [1, 2, 3, 4], images=images)
    proc = run_main(["eval", model0, "--dataset", data], capsys)
    assert_one_line_error(proc, f"image column 'img' of '{data}': row 2 cannot be decoded", "--image-column")


def test_a_file_that_is_not_parquet_is_one_line(model0, tmp_path, capfd):
    # `datasets` also logs this failure on its own handler (the real stderr, hence capfd): one line all the same
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    capfd.readouterr()
    code = main(["-q", "eval", str(model0), "--dataset", str(bad)])
    err = capfd.readouterr().err
    assert_one_line_error(_Proc(code, "", err), f"local dataset '{bad}' cannot be read (ArrowInvalid: ",
                          "pass a parquet file or folder")


# -- 12b. a missing local dataset is not a bad Hub id -------------------------------------------------------------
@pytest.mark.parametrize("value", ["./nope", "../nope", "~/hfsoup-no-such-dataset", "ABS", "a/b/c", "x.parquet"])
def test_a_missing_local_dataset_says_the_path_does_not_exist(value, model0, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    value = str(tmp_path / "nope") if value == "ABS" else value
    proc = run_main(["eval", model0, "--dataset", value], capsys)
    assert_one_line_error(proc, f"local dataset '{value}' does not exist: check the path")
    assert "Hub" not in proc.stderr.split("check the path")[0]


def test_hub_ids_are_not_taken_for_paths():
    from hfsoup.data.images import looks_like_path

    assert not any(looks_like_path(v) for v in ("uoft-cs/cifar100", "cifar100", "org/name.v2", "sklearn:digits"))
    assert all(looks_like_path(v) for v in ("./d", "../d", "/d", "~/d", "a/b/c", "d.parquet", ".", ".."))


# -- 13. non-finite losses in --json and tables -------------------------------------------------------------------
@pytest.fixture
def overflowing_model(tmp_path) -> Path:
    """A model whose logit of class 0 overflows to -inf: on images of class 0 its cross-entropy is +inf."""
    from safetensors.torch import load_file, save_file

    folder = save_model_dir(tmp_path / "overflow", seed=0)
    weights = load_file(str(folder / "model.safetensors"))
    weights["fc.weight"][0] = -3e38  # pooled features are >= 0 (ReLU): the sum overflows float32
    weights["fc.bias"][0] = -3e38
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(weights, str(folder / "model.safetensors"), metadata=meta)
    return folder


def test_json_writes_null_for_a_non_finite_loss_and_says_why(overflowing_model, model0, tmp_path, capsys):
    data = write_dataset(tmp_path / "ds", [0, 0, 0, 0])
    # fp32 pinned: with auto on a device with native bf16 the record of the precision check is in the document
    # too, and its losses are not finite either (tests/test_gpu_machine.py)
    proc = run_main(["eval", overflowing_model, "--dataset", data, "--json", "--precision", "fp32"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
    doc = json.loads(proc.stdout)
    assert doc["models"][0]["loss"] is None and doc["models"][0]["accuracy"] == 0.0
    assert doc["non_finite"] == {"models[0].loss": "inf"}
    proc = run_main(["eval", overflowing_model, "--dataset", data], capsys)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "not finite" in text.split("note:")[0]  # the table cell
    assert "note: the loss of overflow is not finite: the logits overflow" in text
    # mix/soup: the same null + reason in --json, the same cell and note in the tables
    argv = ["mix", overflowing_model, model0, "--alpha", "0", "--no-save", "--eval-split", "test", "--dataset", data]
    proc = run_main([*argv, "--json"], capsys)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["soups"][0]["results"]["test"]["loss"] is None
    assert doc["non_finite"]["soups[0].results.test.loss"] == "inf"
    assert doc["non_finite"]["ingredients[0].results.test.loss"] == "inf"
    proc = run_main(argv, capsys)
    assert proc.returncode == 0, proc.stderr
    assert "note: the loss of overflow, soup α=0 is not finite" in " ".join(proc.stdout.split())


# -- 16. every command has --help examples ------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, prefix: str = "hfsoup"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _commands(sub, f"{prefix} {name}")


def test_every_command_has_help_examples(capsys):
    commands = dict(_commands(build_parser()))
    assert {"hfsoup data", "hfsoup data cifar100c", "hfsoup demo", "hfsoup eval", "hfsoup zoo init"} <= set(commands)
    missing = [name for name, p in commands.items() if "examples:\n  hfsoup " not in (p.epilog or "")]
    assert missing == []
    for name in ("data", "demo"):
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and f"examples:\n  hfsoup {name}" in capsys.readouterr().out


# -- 17. one meaning per flag -----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, dest, value, old", [
    (["eval", "m", "--eval-split", "val"], "split", "val", None),
    (["eval", "m", "--split", "val"], "split", "val", "--split"),
    (["mix", "a", "b", "--eval-split", "val"], "split", "val", None),
    (["eval", "m", "--dataset-revision", "v1"], "dataset_revision", "v1", None),
    (["eval", "m", "--revision", "v1"], "dataset_revision", "v1", "--revision"),
    (["soup", "a", "b", "--dataset-revision", "v1"], "dataset_revision", "v1", None),
    (["study", "report", "org/x", "--dataset-revision", "v1"], "dataset_revision", "v1", None),
    (["study", "report", "org/x", "--revision", "v1"], "dataset_revision", "v1", "--revision"),
    (["push", "f", "org/x", "--revision", "b1"], "revision", "b1", None),  # push: the branch written to
])
def test_flags_mean_the_same_everywhere_old_spellings_deprecated(argv, dest, value, old, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    if old is None:
        assert err == ""
    else:
        new = {"--split": "--eval-split", "--revision": "--dataset-revision"}[old]
        assert err == (f"hfsoup: warning: {old} is deprecated here, use {new} (the old spelling will be removed "
                       f"in the next release)\n")


def test_eval_old_and_new_split_spellings_give_the_same_result(model0, cifar_parquet, capsys):
    docs = []
    for flag in ("--eval-split", "--split"):
        proc = run_main(["eval", model0, "--dataset", cifar_parquet, flag, "val", "--limit", "3", "--json"], capsys)
        assert proc.returncode == 0, proc.stderr
        docs.append(json.loads(proc.stdout))
    assert docs[0] == docs[1] and docs[0]["data"]["split"] == "val"
    help_text = build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "--eval-split" in help_text and "--split " not in help_text and "--revision " not in help_text


# -- 23. -q silences the progress bars of datasets ------------------------------------------------------------------
def test_quiet_silences_the_datasets_progress_bars(model0, tmp_path):
    data = write_dataset(tmp_path / "ds", [1, 2, 3])
    runs = {}
    for quiet in (False, True):
        env = {k: v for k, v in os.environ.items()
               if k not in ("TQDM_DISABLE", "HFSOUP_NO_PROGRESS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                            "HF_HUB_DISABLE_PROGRESS_BARS")}
        env["HF_HOME"] = str(tmp_path / f"hf-{quiet}")  # a cold datasets cache: the split is generated
        argv = [sys.executable, "-m", "hfsoup", *(["-q"] if quiet else []), "eval", str(model0), "--dataset",
                str(data), "--json"]
        runs[quiet] = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert runs[quiet].returncode == 0, runs[quiet].stderr
    assert "Generating test split" in runs[False].stderr  # the bar this test looks for, without -q
    assert runs[True].stderr == ""
