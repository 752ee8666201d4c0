"""Evaluation precision: the choice per device (``auto`` = bf16 only with native bf16 and results that hold), the
check's thresholds, bf16 forced, the record in soup.json and the card, the option of every evaluating command, and
the benchmark scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hfsoup
from hfsoup.eval import precision as P
from conftest import make_model

ROOT = Path(__file__).resolve().parents[1]


def _no_native_bf16_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "fma", "f16c"})


def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_runs_no_check(monkeypatch):
    _no_native_bf16_cpu(monkeypatch)
    calls = []
    choice = P.choose_precision("auto", "cpu", logits_fn=lambda p: calls.append(p), labels=torch.zeros(4))
    assert choice == P.PrecisionChoice("auto", "fp32", "no native bf16 on this cpu") and calls == []
    assert choice.to_dict() == {"requested": "auto", "precision": "fp32", "reason": "no native bf16 on this cpu",
                                "check": None}


@pytest.mark.parametrize("flags,capability,native", [({"avx2"}, "AVX2", False), ({"avx512f"}, "AVX512", False),
                                                     ({"avx512_bf16"}, "AVX512", True), ({"amx_bf16"}, "AVX512", True),
                                                     (set(), "AMX", True)])
def test_native_bf16_on_cpus_needs_amx_or_avx512_bf16(monkeypatch, flags, capability, native):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(P, "cpu_flags", lambda: flags)
    assert P.native_bf16("cpu") is native
    assert P.native_bf16("meta") is False


def _logits(n=1000, k=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * 3
    labels = logits.argmax(1).clone()
    labels[: n // 4] = (labels[: n // 4] + 1) % k  # 75 % accuracy
    return logits, labels


def _flip(logits, rows):
    """Logits whose top-1 prediction changes on ``rows`` (the second-best class wins) and nowhere else."""
    out = logits.clone()
    for r in rows:
        top2 = out[r].topk(2).indices
        out[r, top2[0]], out[r, top2[1]] = out[r, top2[1]].item(), out[r, top2[0]].item()
    return out


def test_check_thresholds_decide_on_known_inputs():
    ref, labels = _logits()
    same = P.compare_logits(ref, ref.clone(), labels)
    assert (same.agreement, same.accuracy, same.accuracy_fp32, same.passed) == (1.0, 0.75, 0.75, True)
    assert same.num_samples == 1000 and same.loss == same.loss_fp32
    # one prediction in 1000 changes (99.9 % agreement, accuracy -0.1 point): at the thresholds, passes
    one = P.compare_logits(ref, _flip(ref, [500]), labels)
    assert one.agreement == 0.999 and one.accuracy_delta == pytest.approx(0.001) and one.passed
    # two changes: 99.8 % agreement, fails
    two = P.compare_logits(ref, _flip(ref, [500, 600]), labels)
    assert two.agreement == 0.998 and not two.passed
    # the same predictions but a loss 1 % off: fails on the loss alone
    scaled = P.compare_logits(ref, ref * 1.05, labels)
    assert scaled.agreement == 1.0 and scaled.accuracy_delta == 0 and scaled.loss_relative > P.MAX_LOSS_RELATIVE
    assert not scaled.passed
    slightly = P.compare_logits(ref, ref * 1.0001, labels)
    assert slightly.loss_relative < P.MAX_LOSS_RELATIVE and slightly.passed
    # two flips that cancel in accuracy (one right->wrong, one wrong->right): agreement decides
    assert not P.compare_logits(ref, _flip(ref, [0, 999]), labels).passed
    assert P.compare_logits(ref[:0], ref[:0], labels[:0]).passed is False  # nothing checked: no pass


def test_auto_with_native_bf16_follows_the_check(monkeypatch):
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    ref, labels = _logits()
    good = P.choose_precision("auto", "cpu", logits_fn=lambda p: ref if p == "fp32" else ref * 1.0001, labels=labels)
    assert good.precision == "bf16" and good.check.passed and good.check.precision == "bf16"
    bad = P.choose_precision("auto", "cpu", logits_fn=lambda p: ref if p == "fp32" else _flip(ref, range(10)),
                             labels=labels)
    assert bad.precision == "fp32" and not bad.check.passed and bad.reason.endswith("but results differ")
    assert P.choose_precision("auto", "cpu").precision == "fp32"  # nothing to check on: fp32


def test_forced_bf16_evaluates_in_bf16_and_records_the_check(monkeypatch, cifar_parquet):
    _no_native_bf16_cpu(monkeypatch)
    from hfsoup.eval.metrics import choose_eval_precision, predict_logits

    data = hfsoup.load_image_data(str(cifar_parquet), "test", progress=False)
    model = make_model(0)
    fp32 = predict_logits(model, data, batch_size=16, device="cpu", progress=False, precision="fp32")
    assert torch.equal(predict_logits(model, data, batch_size=16, device="cpu", progress=False), fp32)  # auto
    bf16 = predict_logits(model, data, batch_size=16, device="cpu", progress=False, precision="bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # autocast did run
    torch.testing.assert_close(bf16, fp32, rtol=0.1, atol=0.1)
    choice = choose_eval_precision("bf16", model, data, device="cpu", batch_size=16)
    assert choice.precision == "bf16" and choice.reason.startswith("requested (no native bf16 on this cpu")
    assert choice.check.num_samples == len(data) and choice.check == P.compare_logits(fp32, bf16, data.labels)
    assert json.loads(json.dumps(choice.to_dict()))["check"]["thresholds"]["min_agreement"] == 0.999
    with pytest.raises(hfsoup.HfSoupError, match="unknown precision 'fp16'"):
        predict_logits(model, data, precision="fp16")


def test_the_ambient_precision_reaches_evaluations_not_told_one(monkeypatch, cifar_parquet):
    _no_native_bf16_cpu(monkeypatch)  # the last evaluation's auto is fp32 without a check (not so on an AMX CPU)
    from hfsoup.eval.metrics import predict_logits

    data = hfsoup.load_image_data(str(cifar_parquet), "test", limit=8, progress=False)
    model = make_model(0)
    seen = []
    real = P.autocast
    monkeypatch.setattr("hfsoup.eval.metrics.autocast", lambda p, d: seen.append(p) or real(p, d))
    with P.use_precision("bf16"):
        predict_logits(model, data, device="cpu", progress=False)
        predict_logits(model, data, device="cpu", progress=False, precision="fp32")  # an explicit one wins
    predict_logits(model, data, device="cpu", progress=False)
    assert seen == ["bf16", "fp32", "fp32"] and P.ambient_precision() == "auto"


def test_soup_records_its_precision_in_soup_json_and_the_card(model_dirs, cifar_parquet, tmp_path, monkeypatch):
    _no_native_bf16_cpu(monkeypatch)
    from hfsoup.eval.soup import evaluate_soup
    from hfsoup.hub.format import save_soup

    data = hfsoup.load_image_data(str(cifar_parquet), "test", limit=8, progress=False)
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.5)
    entry = evaluate_soup(soup, data, batch_size=8, device="cpu", progress=False)
    assert entry.data["precision"] == {"requested": "auto", "precision": "fp32",
                                       "reason": "no native bf16 on this cpu", "check": None}
    out = save_soup(soup, tmp_path / "soup")
    manifest = json.loads((out / "soup.json").read_text())
    assert manifest["results"]["test"]["data"]["precision"]["precision"] == "fp32"
    assert "Evaluated on `test` in fp32 (auto: no native bf16 on this cpu)." in (out / "README.md").read_text()


def test_every_evaluating_command_has_the_precision_option():
    from hfsoup.cli.app import build_parser

    parser = build_parser()
    for argv in (["eval", "m"], ["mix", "a", "b"], ["soup", "a", "b"], ["study", "run", "z", "--out", "o"]):
        args = parser.parse_args(argv)
        assert args.precision == "auto", argv
        assert parser.parse_args([*argv, "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "m", "--precision", "fp16"])


def test_study_precision_name():
    from hfsoup.study.engine import precision_name

    assert precision_name(torch.device("cpu")) == "fp32" or P.native_bf16("cpu")
    assert precision_name(torch.device("cpu"), True, "bf16") == "bf16+compile"
    assert precision_name(torch.device("cpu"), False, "fp32") == "fp32"


def _bench(script: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_average_runs_and_prints_read_average_and_ratio(tmp_path):
    out = _bench("bench_average.py", "--arch", "resnet10_cifar_nano", "--n", "2", "--repeat", "1", "--dir",
                 str(tmp_path))
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["N"])
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["2"])
    # side by side in one run: read (the goal's baseline), bytes, the bare-soup floor, the average; the ratio
    assert header[:10] == ["N", "read", "s", "bytes", "s", "floor", "s", "average", "s", "avg/read"]
    read_s, bytes_s, floor_s, average_s, ratio = map(float, row[1:6])
    assert min(read_s, bytes_s, floor_s, average_s) > 0 and row[6] in ("ok", "MISS")
    assert ratio == pytest.approx(average_s / read_s, rel=0.5)  # a median of ratios, not the ratio of medians


def test_bench_eval_runs_every_variant(tmp_path):
    # the CPU's variants (on CUDA, the default there, the bench compares fp32, bf16 and auto instead)
    out = _bench("bench_eval.py", "--arch", "resnet10_cifar_nano", "--images", "16", "--batch-size", "8",
                 "--repeat", "1", "--no-compile", "--device", "cpu")
    for needle in ("eager fp32", "bf16 autocast", "channels-last", "GFLOP/s", "peak", "flags"):
        assert needle in out, needle


def test_a_command_checks_auto_once_not_per_evaluation(monkeypatch, cifar_parquet):
    """Greedy and RADIN evaluate many candidates through the ambient precision: one check per command."""
    import hfsoup.eval.metrics as metrics

    data = hfsoup.load_image_data(str(cifar_parquet), "test", limit=8, progress=False)
    checks = []
    monkeypatch.setattr(metrics, "choose_eval_precision",
                        lambda *a, **k: checks.append(a[0]) or P.PrecisionChoice("auto", "fp32", "stub"))
    model = make_model(0)
    with P.use_precision("auto"):
        for _ in range(3):
            metrics.predict_logits(model, data, device="cpu", progress=False)
    assert checks == ["auto"]
    metrics.predict_logits(model, data, device="cpu", progress=False)  # outside a command: per call
    assert checks == ["auto", "auto"]
