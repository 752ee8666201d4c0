"""`hfsoup eval` reports the evaluation precision it chose: in ``--json`` as ``data.precision`` (the record of
soup.json's ``results[split].data.precision``) and in the table as one line in the model card's words."""

from __future__ import annotations

import json

import pytest
import torch

from hfsoup.cli.app import main
from hfsoup.eval import precision as P


def _no_native_bf16_cpu(monkeypatch):
    # this machine's CPU (AVX2, no AMX / AVX-512 BF16), whatever CPU runs the test
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "fma", "f16c"})


def _eval(capsys, *args) -> str:
    capsys.readouterr()
    assert main(["-q", "eval", *map(str, args), "--limit", "8", "--batch-size", "8", "--device", "cpu"]) == 0
    return capsys.readouterr().out


def test_eval_json_records_fp32_requested(model_dirs, cifar_parquet, capsys):
    doc = json.loads(_eval(capsys, model_dirs[0], "--dataset", cifar_parquet, "--json", "--precision", "fp32"))
    assert doc["data"]["precision"] == {"requested": "fp32", "precision": "fp32", "reason": "requested",
                                        "check": None}
    assert doc["data"]["num_samples"] == 8 and doc["data"]["split"] == "test"


def test_eval_json_auto_on_a_cpu_without_native_bf16_is_fp32_with_the_reason(model_dirs, cifar_parquet, capsys,
                                                                              monkeypatch):
    _no_native_bf16_cpu(monkeypatch)
    doc = json.loads(_eval(capsys, model_dirs[0], model_dirs[1], "--dataset", cifar_parquet, "--json",
                           "--precision", "auto"))
    assert doc["data"]["precision"] == {"requested": "auto", "precision": "fp32",
                                        "reason": "no native bf16 on this cpu", "check": None}


def test_eval_json_has_the_same_precision_record_as_soup_json(model_dirs, cifar_parquet, tmp_path, capsys,
                                                              monkeypatch):
    _no_native_bf16_cpu(monkeypatch)
    out = tmp_path / "soup-ab"
    assert main(["-q", "mix", str(model_dirs[0]), str(model_dirs[1]), "--alpha", "0.5", "--out", str(out),
                 "--eval-split", "test", "--dataset", str(cifar_parquet), "--limit", "8", "--batch-size", "8",
                 "--device", "cpu"]) == 0
    manifest = json.loads((out / "soup.json").read_text())
    doc = json.loads(_eval(capsys, out, model_dirs[0], model_dirs[1], "--dataset", cifar_parquet, "--json"))
    assert doc["data"]["precision"] == manifest["results"]["test"]["data"]["precision"]
    assert doc["models"][0]["gain_against"] == [str(model_dirs[0]), str(model_dirs[1])]


def test_eval_checks_auto_once_per_command_on_the_soup(model_dirs, cifar_parquet, tmp_path, capsys, monkeypatch):
    """With native bf16, ``auto`` is checked once (on a listed soup, as mix/soup check it) and the check is
    reported; every model is then scored in the chosen precision."""
    import hfsoup.eval.metrics as metrics

    out = tmp_path / "soup-u"
    assert main(["-q", "soup", str(model_dirs[0]), str(model_dirs[1]), "--recipe", "uniform", "--out",
                 str(out)]) == 0
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    checked, seen, real = [], [], metrics.choose_eval_precision
    monkeypatch.setattr(metrics, "choose_eval_precision",
                        lambda requested, model, *a, **k: checked.append(model.num_classes) or real(requested, model,
                                                                                                   *a, **k))
    real_predict = metrics.predict_logits

    def spy(model, data, **kw):
        seen.append(kw.get("precision"))
        return real_predict(model, data, **kw)

    monkeypatch.setattr(metrics, "predict_logits", spy)
    doc = json.loads(_eval(capsys, model_dirs[0], out, model_dirs[1], "--dataset", cifar_parquet, "--json"))
    p = doc["data"]["precision"]
    assert len(checked) == 1 and p["requested"] == "auto" and p["check"]["num_samples"] == 8
    assert p["precision"] in ("fp32", "bf16") and p["precision"] == ("bf16" if p["check"]["passed"] else "fp32")
    # the check's two passes (fp32, bf16), then the three models, each in the one choice
    assert seen[:2] == ["fp32", "bf16"] and len(seen) == 5
    assert all(isinstance(c, P.PrecisionChoice) and c.to_dict() == p for c in seen[2:])


def test_eval_table_prints_the_precision_line(model_dirs, cifar_parquet, capsys, monkeypatch):
    _no_native_bf16_cpu(monkeypatch)
    text = _eval(capsys, model_dirs[0], "--dataset", cifar_parquet, "--precision", "auto")
    assert "precision: fp32 (auto: no native bf16 on this cpu)" in text.splitlines()
    text = _eval(capsys, model_dirs[0], "--dataset", cifar_parquet, "--precision", "fp32")
    assert "precision: fp32 (fp32: requested)" in text.splitlines()


def test_precision_line_reports_the_check():
    from hfsoup.cli.eval import precision_line

    check = P.PrecisionCheck("bf16", 1000, 0.9995, 0.5, 0.5, 1.0, 1.001, True)
    choice = P.PrecisionChoice("auto", "bf16", "native bf16 on this cuda; results hold", check)
    assert precision_line(choice.to_dict()) == ("precision: bf16 (auto: native bf16 on this cuda; results hold; "
                                                "bf16 vs fp32 on 1000 images: 99.95 % same top-1)")


@pytest.mark.parametrize("requested", ["fp32", "auto"])
def test_eval_precision_requested_is_the_option(model_dirs, cifar_parquet, capsys, requested):
    doc = json.loads(_eval(capsys, model_dirs[0], "--dataset", cifar_parquet, "--json", "--precision", requested))
    assert doc["data"]["precision"]["requested"] == requested
    assert doc["data"]["precision"]["precision"] == "fp32" or P.native_bf16("cpu")
