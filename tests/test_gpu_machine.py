"""What a machine with a GPU (or a CPU with native bf16) changes, tested on this CPU by simulating native bf16:
``--precision auto`` of a study is decided once per study folder (a resumed run and every ``--shard`` keep the
recorded choice, no new check), a precision check whose loss is not finite never passes and says so, the check runs
with deterministic cuDNN kernels, CPU processes under ``accelerate launch`` hide the GPUs, and the demo rebuild's
note names only the conditions that differ.

The simulated bf16 is emulated on this CPU (slow): the models are the mini-zoo's nano ones, on 16 images.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import hfsoup
from hfsoup.eval import precision as P
from test_cli_contract import overflowing_model, run_main, write_dataset  # noqa: F401 - a fixture among them

BRANCHES = Path(hfsoup.__file__).resolve().parent / "assets" / "mini_zoo" / "branches"


def _native_bf16_cpu(monkeypatch) -> None:
    """This CPU counts as one with native bf16 (AVX-512 BF16): ``auto`` runs its check here, as on a GPU."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_BF16")
    assert P.native_bf16("cpu")


def _check_outcome(monkeypatch, passed: bool) -> list:
    """The precision check's real figures, with its verdict forced to ``passed``; returns the list of checks run."""
    real, calls = P.compare_logits, []

    def forced(*args, **kwargs):
        check = dataclasses.replace(real(*args, **kwargs), passed=passed)
        calls.append(check)
        return check

    monkeypatch.setattr(P, "compare_logits", forced)
    return calls


def _study(out: Path, tmp_path: Path, **kw):
    from hfsoup.study.run import StudyConfig, run_study

    refs = [BRANCHES / "b016-v1", BRANCHES / "b016-v2", BRANCHES / "b016-v3"]  # 3 pairs, 1 α: 3 rows
    kw = {"precision": "auto", **kw}
    return run_study(StudyConfig(sources=[str(r) for r in refs], out=out, dataset="sklearn:digits", limit=16,
                                 alphas=[0.5], device="cpu", cache_dir=tmp_path / "cache", progress=False, **kw))


def _settings(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())["settings"]


# -- a study's auto: decided once per folder ----------------------------------------------------------------------
def test_a_resumed_auto_study_keeps_the_recorded_precision_without_a_new_check(tmp_path, monkeypatch):
    """The first run's check failed (fp32); the rerun's would pass. It used to plan in bf16 before its check and
    refuse its own folder ("another precision (fp32 vs bf16 now)"); now it keeps fp32 and checks nothing."""
    _native_bf16_cpu(monkeypatch)
    out = tmp_path / "study"
    calls = _check_outcome(monkeypatch, passed=False)
    first = _study(out, tmp_path, shard=(0, 2))  # a part of the rows, as a run killed midway
    assert len(calls) == 1 and 0 < first.computed < 3
    assert _settings(out)["precision"] == "fp32"
    assert _settings(out)["precision_choice"]["reason"] == "native bf16 on this cpu, but results differ"

    calls = _check_outcome(monkeypatch, passed=True)
    rerun = _study(out, tmp_path)
    assert calls == []  # no new check
    assert (rerun.done_before, rerun.computed, rerun.table_rows) == (first.computed, 3 - first.computed, 3)
    settings = _settings(out)
    assert settings["precision"] == "fp32"
    choice = settings["precision_choice"]
    assert (choice["requested"], choice["precision"]) == ("auto", "fp32")
    assert choice["reason"] == ("kept from the run already in this folder (auto: native bf16 on this cpu, but "
                                "results differ)")
    assert choice["check"]["passed"] is False  # the record of the check that decided
    _study(out, tmp_path)  # once more: the same record, not "kept from … kept from …"
    assert _settings(out)["precision_choice"]["reason"] == choice["reason"]


def test_the_shards_of_an_auto_study_keep_the_first_shards_choice(tmp_path, monkeypatch):
    """The other way round: shard 0 chose bf16; shard 1's check would fail. It used to re-plan in fp32 and refuse
    the folder ("another precision (bf16 vs fp32 now)"); now it computes its rows in bf16."""
    _native_bf16_cpu(monkeypatch)
    out = tmp_path / "study"
    calls = _check_outcome(monkeypatch, passed=True)
    first = _study(out, tmp_path, shard=(0, 2))
    assert len(calls) == 1 and _settings(out)["precision"] == "bf16"
    calls = _check_outcome(monkeypatch, passed=False)
    second = _study(out, tmp_path, shard=(1, 2))
    assert calls == [] and first.computed + second.computed == 3
    assert _settings(out)["precision"] == "bf16" and _settings(out)["precision_choice"]["precision"] == "bf16"


def test_an_explicit_precision_still_refuses_a_folder_of_another(tmp_path, monkeypatch):
    """Only ``auto`` adopts the folder's precision: ``--precision bf16`` in an fp32 folder is refused, as before."""
    from hfsoup.study.inputs import StudyInputError

    _native_bf16_cpu(monkeypatch)
    _check_outcome(monkeypatch, passed=False)
    out = tmp_path / "study"
    _study(out, tmp_path, shard=(0, 2))  # auto: fp32 after the failed check
    with pytest.raises(StudyInputError, match=r"another precision \(fp32 vs bf16 now\)"):
        _study(out, tmp_path, shard=(1, 2), precision="bf16")


def test_the_recorded_choice_reads_back():
    from hfsoup.core.files import dumps_json

    check = P.PrecisionCheck("bf16", 4, 1.0, 0.5, 0.5, float("inf"), float("inf"), False)
    choice = P.PrecisionChoice("auto", "fp32", "why", check)
    back = P.PrecisionChoice.from_dict(json.loads(dumps_json(choice.to_dict())))
    assert back == choice and not back.check.finite
    nulls = dict(choice.to_dict(), check=dict(check.to_dict(), loss=None, loss_fp32=None))  # null: not finite
    assert math.isnan(P.PrecisionChoice.from_dict(nulls).check.loss)
    assert P.PrecisionChoice.from_dict({"precision": "bf16"}) == P.PrecisionChoice("auto", "bf16", "", None)


# -- a check whose loss is not finite -------------------------------------------------------------------------------
def test_a_check_whose_loss_is_not_finite_never_passes_and_auto_says_why(monkeypatch):
    _native_bf16_cpu(monkeypatch)
    labels = torch.tensor([0, 0, 1])
    logits = torch.tensor([[float("-inf"), 1.0], [float("-inf"), 2.0], [0.0, 3.0]])
    check = P.compare_logits(logits, logits.clone(), labels)  # identical logits, both losses +inf
    assert check.agreement == 1.0 and check.accuracy == check.accuracy_fp32
    assert check.loss == check.loss_fp32 == float("inf") and not check.finite and not check.passed
    finite = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    assert not P.compare_logits(finite, logits, labels).passed  # fp32 finite, the candidate not
    assert not P.compare_logits(logits, finite, labels).passed  # and the other way round
    choice = P.choose_precision("auto", "cpu", logits_fn=lambda p: logits, labels=labels)
    assert choice.precision == "fp32" and choice.check == check
    assert choice.reason == ("native bf16 on this cpu, but the check's loss is not finite (the logits overflow): "
                             "nothing to compare")


def test_eval_json_of_an_overflowing_model_under_auto_records_the_failed_check(overflowing_model, tmp_path,
                                                                                 monkeypatch, capsys):
    """On a device with native bf16, ``auto`` checks; the check's losses are +inf: fp32, with the reason, and the
    document lists the check's non-finite losses beside the model's (as on the H100 run)."""
    _native_bf16_cpu(monkeypatch)
    data = write_dataset(tmp_path / "ds", [0, 0, 0, 0])
    proc = run_main(["eval", overflowing_model, "--dataset", data, "--json", "--device", "cpu"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
    doc = json.loads(proc.stdout)
    precision = doc["data"]["precision"]
    assert (precision["requested"], precision["precision"]) == ("auto", "fp32")
    assert "the check's loss is not finite" in precision["reason"] and precision["check"]["passed"] is False
    assert doc["non_finite"] == {"models[0].loss": "inf", "data.precision.check.loss": "inf",
                                 "data.precision.check.loss_fp32": "inf"}


# -- the check runs with deterministic kernels ----------------------------------------------------------------------
def test_the_check_runs_with_deterministic_cudnn_and_restores_the_settings(monkeypatch):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    seen = []

    def logits(precision):
        seen.append((precision, cudnn.benchmark, cudnn.deterministic))
        return torch.tensor([[0.0, 1.0]])

    P.check_precision(logits, torch.tensor([1]))
    assert seen == [("fp32", False, True), ("bf16", False, True)]
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)


# -- CPU processes on a machine with GPUs ---------------------------------------------------------------------------
def test_cpu_processes_under_accelerate_launch_hide_the_gpus():
    from hfsoup.cli.app import cpu_processes_hide_gpus

    env = {"ACCELERATE_USE_CPU": "1", "WORLD_SIZE": "2"}
    assert cpu_processes_hide_gpus(env) and env["CUDA_VISIBLE_DEVICES"] == ""
    for env in ({"ACCELERATE_USE_CPU": "true", "WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": "0"},  # the user's
                {"ACCELERATE_USE_CPU": "1", "WORLD_SIZE": "1"},  # not launched
                {"WORLD_SIZE": "2"}, {"ACCELERATE_USE_CPU": "0", "WORLD_SIZE": "2"}):  # GPU processes
        before = dict(env)
        assert not cpu_processes_hide_gpus(env) and env == before
    for entry in ("hfsoup/train.py", "hfsoup/study/__main__.py"):  # the accelerate-launch entry points call it
        text = (Path(hfsoup.__file__).resolve().parents[1] / entry).read_text()
        assert "cpu_processes_hide_gpus()" in text.split('if __name__ == "__main__":')[1].split("sys.exit")[0]


# -- the demo rebuild's note ----------------------------------------------------------------------------------------
def test_the_rebuild_note_names_only_the_conditions_that_differ():
    from hfsoup.study.demo import conditions_note

    here = {"torch": "2.11.0", "cpu_capability": "AVX512", "machine": "x86_64", "threads": 1, "system": "Linux"}
    assert conditions_note(dict(here), here) is None
    assert conditions_note(dict(here, system="Darwin"), here) is None  # not a reproducibility condition
    note = conditions_note(dict(here, torch="2.0.0"), here)
    assert "(torch 2.0.0 there, 2.11.0 here)" in note and "cpu_capability" not in note
    note = conditions_note(dict(here, threads=2, cpu_capability="AVX2"), here)
    assert "(cpu_capability AVX2 there, AVX512 here; threads 2 there, 1 here)" in note and "torch 2" not in note
