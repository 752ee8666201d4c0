"""The ``hfsoup`` CLI as a user runs it: outputs, JSON documents, exit codes and one-line errors.

Commands run in-process (``main([...])``); a subprocess only where the process state matters: the HF variables
read at import, and the commands that must not import torch (checked in ``sys.modules``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

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
    assert soup["weights"] == [0.5, 0.5] and soup["parameters"]["alpha"] == 0.5
    assert doc["data"]["split"] == "test" and r["num_samples"] == doc["data"]["num_samples"]
    best = max(i["results"]["test"]["accuracy"] for i in doc["ingredients"])
    best_loss = min(i["results"]["test"]["loss"] for i in doc["ingredients"])
    assert r["gain"]["accuracy_gain"] == r["accuracy"] - best and r["gain"]["loss_gain"] == best_loss - r["loss"]
    manifest = json.loads((out / "soup.json").read_text())
    assert soup["sha256"] == manifest["sha256"]
    assert manifest["results"]["test"]["models"]["soup"]["accuracy"] == r["accuracy"]
    assert "model-index" in (out / "README.md").read_text()
    # the figures are those of `hfsoup eval` of the written soup and of its ingredients
    assert main(["-q", "eval", str(out), str(model_dirs[0]), str(model_dirs[1]), "--dataset", str(cifar_parquet),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert rows[0]["accuracy"] == r["accuracy"] and rows[0]["loss"] == pytest.approx(r["loss"], rel=1e-6)
    assert [row["accuracy"] for row in rows[1:]] == [i["results"]["test"]["accuracy"] for i in doc["ingredients"]]
    assert rows[0]["gain"]["accuracy_gain"] == r["gain"]["accuracy_gain"]


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
    steps = json.loads((tmp_path / "g" / "soup.json").read_text())["decision_log"]["steps"]
    kept = sum(st["accepted"] for st in steps)
    assert kept >= 1  # the first candidate is always kept
    assert (greedy.stdout.count("kept"), greedy.stdout.count("dropped")) == (kept, len(steps) - kept)
    assert "m0" in greedy.stdout and "greedy: written to" in greedy.stdout
    radin = cli("soup", *model_dirs, "--recipe", "radin", "--budget", "2", "--dataset", cifar_parquet,
                "--out", tmp_path / "r")
    assert radin.returncode == 0, radin.stderr
    assert "2 evaluated on val" in " ".join(radin.stdout.split()) and radin.stdout.count("winner") == 1


# -- one line per failure -------------------------------------------------------------------------------------
def run_main(argv, capsys) -> _Proc:
    """``main(argv)`` in-process; a usage error (``SystemExit``) counts as its exit code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return _Proc(code, captured.out, captured.err)


@pytest.mark.parametrize("alphas", ["0.5,0.5", "0.25,0.2501"])
def test_duplicate_alpha_refused_before_anything_is_written(alphas, model_dirs, tmp_path, cli):
    out = tmp_path / "curve"
    proc = cli("mix", model_dirs[0], model_dirs[1], "--alpha", alphas, "--out", out)
    assert_one_line_error(proc, "alpha-0.500" if alphas == "0.5,0.5" else "alpha-0.250", "distinct")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0", "m1", "m2"]  # nothing written, not even OUT


@pytest.mark.parametrize("case", ["usage", "unknown-recipe", "other-recipe-flag", "shared-flag", "bn-report-only",
                                  "mix-recipe-alpha", "mix-recipe-count", "push-folder", "eval-missing",
                                  "zoo-build-config", "data-source"])
def test_every_failing_command_prints_one_line(case, tmp_path, capsys):
    # The models do not exist: options are validated before any model is looked at (else "does not exist").
    model_dirs = [tmp_path / f"m{i}" for i in range(3)]
    a, b = model_dirs[0], model_dirs[1]
    out = tmp_path / "out"
    argv, fragments = {
        "usage": (["mix", a, b, "--no-such-flag"], ["unrecognized arguments: --no-such-flag", "--help`)"]),
        "unknown-recipe": (["soup", a, b, "--recipe", "bogus"], ["invalid choice: 'bogus'", "greedy"]),
        "other-recipe-flag": (["soup", a, b, "--budget", "3", "--out", out],
                              ["--budget is an option of recipe radin", "'uniform'"]),
        "shared-flag": (["soup", a, b, "--recipe", "greedy", "--seed", "1", "--out", out],
                        ["--seed is an option of recipes radin, learned"]),
        "bn-report-only": (["soup", a, b, "--recipe", "ensemble", "--recalibrate-bn", "2"],
                           ["'ensemble' writes no model", "--recalibrate-bn"]),
        "mix-recipe-alpha": (["soup", a, b, "--recipe", "mix", "--alpha", "1.5", "--out", out], ["--alpha", "<= 1"]),
        "mix-recipe-count": (["soup", *model_dirs, "--recipe", "mix", "--out", out], ["exactly 2"]),
        "push-folder": (["push", tmp_path / "nope", "org/x"], ["not a model folder"]),
        "eval-missing": (["eval", tmp_path / "nope", "--dataset", tmp_path], ["does not exist"]),
        "zoo-build-config": (["zoo", "build", "--config", tmp_path / "missing.yaml", "--out", out],
                             ["missing.yaml"]),
        "data-source": (["data", "cifar100c", "--from", tmp_path / "nope", "--out", out], ["nope"]),
    }[case]
    proc = run_main(["-q", *argv], capsys)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()


def test_soup_options_and_choices_come_from_the_recipe_declarations(capsys):
    from hfsoup.recipes.registry import get_recipe, list_recipes, recipe_params

    with pytest.raises(SystemExit):
        main(["soup", "--help"])
    help_text = capsys.readouterr().out
    for flag, (param, users) in recipe_params().items():
        assert help_text.count(f"  {flag} ") + help_text.count(f"  {flag}\n") == 1, flag  # one option per flag
        assert f"recipe {users[0]}:" in help_text
    proc = run_main(["soup", "m1", "m2", "--recipe", "bogus"], capsys)
    assert proc.returncode == 2
    for name in list_recipes():
        assert f"'{name}'" in proc.stderr or f" {name}," in proc.stderr or f" {name})" in proc.stderr, name
    assert get_recipe("ensemble").writes_model is False


def test_soup_recipe_parameters_are_validated_and_recorded(model_dirs, tmp_path, capsys):
    # `--recipe mix` goes through the registry: its declared --alpha, validated, recorded in soup.json
    out = tmp_path / "mix"
    proc = run_main(["-q", "soup", model_dirs[0], model_dirs[1], "--recipe", "mix", "--alpha", "0.25",
                     "--out", out, "--json"], capsys)
    assert proc.returncode == 0, proc.stderr
    (soup,) = json.loads(proc.stdout)["soups"]
    assert soup["weights"] == [0.75, 0.25] and soup["parameters"]["alpha"] == 0.25
    assert json.loads((out / "soup.json").read_text())["parameters"]["alpha"] == 0.25
    a, b, s = (load_file(str(p / "model.safetensors")) for p in (model_dirs[0], model_dirs[1], out))
    assert torch.allclose(s["fc.weight"], 0.75 * a["fc.weight"] + 0.25 * b["fc.weight"], atol=1e-7)


def test_recalibrate_bn_once_after_a_selection_recipe(model_dirs, cifar_parquet, tmp_path, capsys):
    out = tmp_path / "g"
    proc = run_main(["-q", "soup", *model_dirs, "--recipe", "greedy", "--dataset", cifar_parquet, "--out", out,
                     "--recalibrate-bn", "2", "--bn-batch-size", "4", "--json"], capsys)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "soup.json").read_text())
    bn = manifest["parameters"]["recalibrate_bn"]
    assert (bn["num_batches"], bn["batch_size"], bn["num_images"], bn["data"]["split"]) == (2, 4, 8, "train-main")
    # the held-out result is the recalibrated soup's; the one before is kept
    val = manifest["results"]["val"]
    assert set(bn["before"]) == {"val"} and val["models"]["soup"] != bn["before"]["val"]
    best = max(r["accuracy"] for k, r in val["models"].items() if k != "soup"
               and manifest["ingredients"][[i["reference"] for i in manifest["ingredients"]].index(k)]["weight"] > 0)
    assert val["gain"]["accuracy_gain"] == val["models"]["soup"]["accuracy"] - best


def test_ensemble_on_the_heldout_split_reuses_results_for_the_same_eval_split(model_dirs, cifar_parquet, capsys,
                                                                             loaded_splits):
    proc = run_main(["-q", "soup", *model_dirs, "--recipe", "ensemble", "--dataset", cifar_parquet,
                     "--eval-split", "val", "--json"], capsys)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["soups"] == [] and set(doc["ensemble"]) == {"val"}
    e = doc["ensemble"]["val"]
    assert e["gain"]["accuracy_gain"] == e["ensemble"]["accuracy"] - max(
        r["accuracy"] for r in e["ingredients"].values())
    assert [i["results"]["val"] for i in doc["ingredients"]] == [e["ingredients"][i["reference"]]
                                                                for i in doc["ingredients"]]
    assert sorted(loaded_splits) == ["val", "val"]  # the eval split and the held-out split, one pass of each


# -- the app: exit codes, progress, loggers -------------------------------------------------------------------
@dataclass
class _Boom:
    exc: BaseException

    def __call__(self, args):
        raise self.exc


@pytest.mark.parametrize("exc, code, start", [(KeyboardInterrupt(), 130, "hfsoup: interrupted"),
                                              (RuntimeError("boom\nsecond line"), 1,
                                               "hfsoup: internal error: RuntimeError: boom")])
def test_interrupt_and_internal_error_are_one_line(exc, code, start, monkeypatch, capsys):
    import hfsoup.cli.push as push_cli

    monkeypatch.delenv("HFSOUP_DEBUG", raising=False)
    monkeypatch.setattr(push_cli, "cmd_push", _Boom(exc))
    proc = run_main(["push", "folder", "org/x"], capsys)
    lines = proc.stderr.splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith(start), proc.stderr
    if code == 1:  # with HFSOUP_DEBUG the traceback is not swallowed
        monkeypatch.setenv("HFSOUP_DEBUG", "1")
        with pytest.raises(RuntimeError, match="boom"):
            main(["push", "folder", "org/x"])


@pytest.mark.parametrize("argv, env, progress", [([], {}, True), (["-q"], {}, False),
                                                 ([], {"HFSOUP_NO_PROGRESS": "1"}, False)])
def test_quiet_and_client_loggers(argv, env, progress, monkeypatch, capsys):
    import hfsoup.cli.push as push_cli
    from hfsoup.cli.options import progress_enabled

    seen = []
    monkeypatch.delenv("HFSOUP_NO_PROGRESS", raising=False)
    monkeypatch.delenv("HFSOUP_DEBUG", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(push_cli, "cmd_push", lambda args: seen.append(progress_enabled(args)))
    hf = logging.getLogger("huggingface_hub")
    monkeypatch.setattr(hf, "level", logging.WARNING)
    assert main([*argv, "push", "folder", "org/x"]) == 0
    assert seen == [progress] and hf.level == logging.ERROR
    monkeypatch.setenv("HFSOUP_DEBUG", "1")
    hf.setLevel(logging.WARNING)
    assert main([*argv, "push", "folder", "org/x"]) == 0
    assert hf.level == logging.WARNING  # HFSOUP_DEBUG: the clients' retries and warnings are shown


def test_print_json_writes_null_for_nan_and_inf(capsys, tmp_path):
    from hfsoup.cli.output import print_json, short_name, pct
    from hfsoup.core.results import EvalResult

    print_json({"b": float("nan"), "a": [1.5, float("inf"), tmp_path], "r": EvalResult(float("-inf"), 0.25, 3),
                "t": torch.tensor([0.5, float("nan")])})
    text = capsys.readouterr().out
    assert json.loads(text) == {"a": [1.5, None, str(tmp_path)], "b": None,
                                "r": {"accuracy": None, "loss": 0.25, "num_samples": 3}, "t": [0.5, None],
                                # what each null was (issue 11: say why a value is null)
                                "non_finite": {"a[1]": "inf", "b": "nan", "r.accuracy": "-inf", "t[1]": "nan"}}
    assert text.index('"a"') < text.index('"b"') < text.index('"r"')  # sorted keys
    assert "NaN" not in text and "Infinity" not in text
    assert (short_name("org/name@v1"), short_name("hf-hub:org/x"), short_name(tmp_path / "m0")) == ("name", "x", "m0")
    assert (pct(0.73125), pct(float("nan")), pct(None)) == ("73.12%", "", "")


# -- commands that need no torch ------------------------------------------------------------------------------
TORCH_PROBE = """
import json, sys
from hfsoup.cli import main
code = main(sys.argv[1:])
print("PROBE " + json.dumps({"code": code, "loaded": sorted(m for m in ("torch", "timm", "torchvision", "datasets")
                                                           if m in sys.modules)}))
"""


def run_probe(args, env=None) -> tuple[dict, subprocess.CompletedProcess]:
    e = {**os.environ, **(env or {}), "HFSOUP_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-c", TORCH_PROBE, *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=120)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    assert line, proc.stderr
    return json.loads(line[-1][len("PROBE "):]), proc


def test_push_imports_no_torch(tmp_path, hub):
    probe, proc = run_probe(["push", tmp_path / "nope", "org/x"], hub.env)
    assert probe == {"code": 2, "loaded": []}
    assert proc.stderr.startswith("hfsoup: error:") and len(proc.stderr.splitlines()) == 1
    folder = save_model_dir(tmp_path / "m", seed=3)
    probe, proc = run_probe(["push", folder, "org/torchless", "--json"], hub.env)
    assert probe == {"code": 0, "loaded": []}, proc.stderr
    doc = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    assert doc["commit"] == hub.head("org/torchless").sha and doc["repo_id"] == "org/torchless"


def test_zoo_list_imports_no_torch():
    from hfsoup.study.demo import asset_dir

    if not (asset_dir() / "branches").is_dir():
        pytest.skip("mini-zoo assets not built")
    probe, proc = run_probe(["zoo", "list", asset_dir(), "--json"])
    assert probe == {"code": 0, "loaded": []}, proc.stderr
    doc = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    kinds = [(m["kind"], m["epoch"], m["variant"]) for m in doc["models"]]
    epochs = (4, 8, 16, 24, 32, 40)  # the mini-zoo's branch epochs (hfsoup/assets/mini_zoo/zoo.yaml)
    assert sorted(kinds, key=str) == sorted([("trunk", e, None) for e in epochs]
                                            + [("branch", e, v) for e in epochs for v in (1, 2, 3, 4)], key=str)


def test_heldout_split_choices_are_the_librarys():
    from hfsoup.cli.soup import HELDOUT_SPLITS
    from hfsoup.recipes.selection import HELDOUT_SPLITS as LIBRARY

    assert tuple(HELDOUT_SPLITS) == tuple(LIBRARY) and "test" not in HELDOUT_SPLITS
