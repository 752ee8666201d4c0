"""Greedy soup: order, accept/reject decisions (strict vs ties), planted bad ingredient, final weights and tensors,
non-finite ingredients, held-out isolation, CLI and BN recalibration."""

from __future__ import annotations

import json

import pytest
import torch

import hfsoup
from hfsoup.core.averaging import average
from hfsoup.core.ingredients import load_ingredients
from hfsoup.data.images import ImageData
from hfsoup.eval.metrics import EvalResult
from hfsoup.recipes import greedy as greedy_mod
from hfsoup.recipes import selection as selection_mod
from conftest import make_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "hfsoup-cache"))


def tiny_data(n=12, num_classes=10, seed=0, split="val") -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return ImageData(images, labels, None, "synthetic", split)


def coded_models(tmp_path, n, num_classes=10):
    """Models whose fc.bias is the one-hot code of their index: an average's fc.bias reveals its subset."""
    from hfsoup.hub.format import save_model

    dirs = []
    for i in range(n):
        m = make_model(i, num_classes=num_classes)
        with torch.no_grad():
            m.fc.bias.zero_()
            m.fc.bias[i] = 1.0
        dirs.append(save_model(m, tmp_path / f"c{i}"))
    return dirs


def decode(state) -> frozenset:
    return frozenset(int(j) for j in torch.nonzero(state["fc.bias"] > 1e-6).flatten())


def patch_singles(monkeypatch, singles, num_classes=10):
    """Held-out results of single ingredients come from a table (finite dummy logits: the up-front check passes)."""

    def fake_ing(ings, data, **kw):
        res = [EvalResult(*singles[next(iter(decode(ing.state_dict())))], len(data)) for ing in ings]
        return torch.zeros(len(ings), len(data), num_classes), res

    monkeypatch.setattr(selection_mod, "ingredient_heldout_results", fake_ing)


def patch_table(monkeypatch, singles, soups):
    """Held-out results of single ingredients and of soups come from tables (the greedy logic stays real)."""
    calls = []
    patch_singles(monkeypatch, singles)

    def fake_eval(config, state, data, **kw):
        subset = decode(state)
        calls.append(subset)
        return EvalResult(soups.get(subset, 0.0), 1.0, len(data))

    monkeypatch.setattr(greedy_mod, "evaluate_state_dict", fake_eval)
    return calls


SINGLES = {0: (0.5, 1.0), 1: (0.6, 1.0), 2: (0.6, 0.9), 3: (0.2, 3.0)}  # 1 and 2 tie on accuracy; 3 is bad
SOUPS = {frozenset({1, 2}): 0.65, frozenset({0, 1, 2}): 0.65, frozenset({1, 2, 3}): 0.3,
         frozenset({0, 1, 2, 3}): 0.4}


def test_greedy_strict_order_and_decisions(tmp_path, monkeypatch):
    dirs = coded_models(tmp_path, 4)
    calls = patch_table(monkeypatch, SINGLES, SOUPS)
    soup = hfsoup.greedy_soup(dirs, tiny_data())
    log = soup.log
    # accuracy desc, then loss asc (2 before 1), then input order
    assert [e["index"] for e in log["order"]] == [2, 1, 0, 3]
    steps = log["steps"]
    assert [s["candidate"] for s in steps] == [2, 1, 0, 3]
    assert [s["accepted"] for s in steps] == [True, True, False, False]  # tie 0.65 rejected under strict rule
    assert steps[2]["accuracy"] == 0.65 and steps[2]["best_before"] == 0.65
    assert log["selected"] == [1, 2]
    assert soup.weights == [0.0, 0.5, 0.5, 0.0]
    assert len(calls) == 3  # one evaluation per step, the final soup equals the last accepted candidate
    assert calls == [frozenset({1, 2}), frozenset({0, 1, 2}), frozenset({1, 2, 3})]
    assert soup.results["val"].soup.accuracy == 0.65  # the last accepted candidate's evaluation, reused
    assert soup.log["final"]["note"].startswith("identical to the last accepted candidate")
    assert soup.results["val"].gain["accuracy_gain"] == pytest.approx(0.05)


def test_greedy_tie_order_is_loss_then_input_order(tmp_path, monkeypatch):
    """Equal held-out accuracy: lower loss first; equal loss too: input order (the reference puts tied models in
    reverse input order; hfsoup documents its own)."""
    dirs = coded_models(tmp_path, 4)
    patch_table(monkeypatch, {0: (0.5, 1.0), 1: (0.5, 0.8), 2: (0.5, 1.0), 3: (0.5, 1.0)}, {})
    soup = hfsoup.greedy_soup(dirs, tiny_data())
    assert [e["index"] for e in soup.log["order"]] == [1, 0, 2, 3]
    assert soup.log["tie_order"] == "held-out accuracy desc, then held-out loss asc, then input order"


def test_greedy_accept_ties(tmp_path, monkeypatch):
    dirs = coded_models(tmp_path, 4)
    patch_table(monkeypatch, SINGLES, SOUPS)
    soup = hfsoup.greedy_soup(dirs, tiny_data(), accept_ties=True)
    assert [s["accepted"] for s in soup.log["steps"]] == [True, True, True, False]
    assert soup.log["steps"][3]["soup"] == [0, 1, 2, 3]  # planted bad ingredient tried on the 3-soup, rejected
    assert soup.log["selected"] == [0, 1, 2]
    assert soup.weights == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])


def test_greedy_nothing_helps_returns_best_ingredient(tmp_path, monkeypatch):
    dirs = coded_models(tmp_path, 3)
    patch_table(monkeypatch, {0: (0.3, 1.0), 1: (0.5, 1.0), 2: (0.4, 1.0)}, {})
    soup = hfsoup.greedy_soup(dirs, tiny_data())
    assert soup.weights == [0.0, 1.0, 0.0]
    ings = load_ingredients([str(d) for d in dirs])
    ref = ings[1].state_dict()
    assert all(torch.equal(soup.state_dict[k], ref[k]) for k in ref)
    assert soup.results["val"].soup.accuracy == 0.5


def test_greedy_real_models_invariants(tmp_path):
    """No patching: the final soup is the exact uniform average of the selected, never worse than the best
    ingredient on held-out, and the decision log is consistent."""
    from hfsoup.hub.format import save_model

    data = tiny_data(n=40, num_classes=10, seed=3)
    dirs = []
    for i in range(4):
        m = make_model(10 + i, num_classes=10, bn_steps=1)
        if i == 3:  # planted bad ingredient: huge random head
            with torch.no_grad():
                m.fc.weight.mul_(1e3)
        dirs.append(save_model(m, tmp_path / f"r{i}"))
    soup = hfsoup.greedy_soup(dirs, data)
    ings = soup.ingredients
    sel = soup.log["selected"]
    assert soup.weights == pytest.approx([1 / len(sel) if i in sel else 0.0 for i in range(4)])
    ref = average([ings[i] for i in sel])
    assert all(torch.equal(soup.state_dict[k], ref[k]) for k in ref)
    best_single = max(e["accuracy"] for e in soup.log["order"])
    res = soup.results["val"].soup
    assert res.accuracy >= best_single
    # the recorded held-out figure is the real one of the final weights
    real = hfsoup.evaluate_model(soup.create_model(), data, progress=False)
    assert real.accuracy == res.accuracy and real.loss == pytest.approx(res.loss)
    # one evaluation per step (3), plus the final soup unless it equals the last accepted candidate bit for bit
    reused = soup.log["final"]["note"].startswith(("identical", "single"))
    assert soup.log["cost"]["soup_passes"] == 3 + (not reused)
    assert [s["accepted"] for s in soup.log["steps"][1:]] == [
        s["accuracy"] > s["best_before"] for s in soup.log["steps"][1:]]  # the strict rule, step by step


def test_greedy_refuses_test_split(model_dirs):
    with pytest.raises(hfsoup.HfSoupError, match="never the test split"):
        hfsoup.greedy_soup(model_dirs, tiny_data(split="test"))


def nan_model_dirs(tmp_path, n=3):
    """``n`` tiny models; the last one has a NaN weight in its head (its logits are NaN for every image)."""
    from hfsoup.hub.format import save_model

    dirs = []
    for i in range(n):
        m = make_model(30 + i, num_classes=10)
        if i == n - 1:
            with torch.no_grad():
                m.fc.weight[0, 0] = float("nan")
        dirs.append(save_model(m, tmp_path / f"n{i}"))
    return dirs


def test_greedy_refuses_a_non_finite_ingredient_up_front(tmp_path, monkeypatch):
    """A NaN ingredient used to be silently rejected; now one error names it before any soup is evaluated."""
    dirs = nan_model_dirs(tmp_path)
    calls = []
    monkeypatch.setattr(greedy_mod, "evaluate_state_dict", lambda *a, **k: calls.append(1))
    with pytest.raises(hfsoup.NonFiniteError) as e:
        hfsoup.greedy_soup(dirs, tiny_data())
    msg = str(e.value)
    assert f"'{dirs[2]}' (12 of 12 images)" in msg and "remove it from the models" in msg
    assert str(dirs[0]) not in msg and e.value.references == [str(dirs[2])]
    assert calls == []


def test_greedy_parameters_are_the_validated_ones(tmp_path, monkeypatch):
    dirs = coded_models(tmp_path, 3)
    patch_table(monkeypatch, {0: (0.3, 1.0), 1: (0.5, 1.0), 2: (0.4, 1.0)}, {})
    data = tiny_data()
    soup = hfsoup.greedy_soup(dirs, data, accept_ties=1, integer_policy="max")
    assert soup.parameters == {"accept_ties": True, "integer_policy": "max", "heldout": data.describe()}
    with pytest.raises(hfsoup.HfSoupError, match="unknown integer policy 'nope'"):
        hfsoup.greedy_soup(dirs, data, integer_policy="nope")


def test_cli_greedy_json_and_heldout_isolation(model_dirs, cifar_parquet, tmp_path, capsys, loaded_splits):
    from hfsoup.cli import main

    used = loaded_splits
    out = tmp_path / "greedy"
    code = main(["-q", "soup", *map(str, model_dirs), "--recipe", "greedy", "--dataset", str(cifar_parquet),
                 "--out", str(out), "--json"])
    assert code == 0
    assert used == ["val"]  # the only data read for decisions
    doc = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "soup.json").read_text())
    assert manifest["recipe"] == "greedy"
    log = manifest["decision_log"]
    assert log["heldout"]["split"] == "val" and len(log["order"]) == 3 and len(log["steps"]) == 3
    assert "val" in manifest["results"]
    assert doc["soups"][0]["decision_log"]["selected"] == log["selected"]

    used.clear()
    code = main(["-q", "soup", *map(str, model_dirs), "--recipe", "greedy", "--accept-ties", "--dataset",
                 str(cifar_parquet), "--eval-split", "test", "--no-save", "--json"])
    assert code == 0
    assert sorted(used) == ["test", "val"]
    doc = json.loads(capsys.readouterr().out)
    s = doc["soups"][0]
    assert set(s["results"]) == {"val", "test"}
    assert s["decision_log"]["heldout"]["split"] == "val" and s["decision_log"]["accept_ties"] is True


def test_cli_heldout_split_test_rejected(model_dirs, cifar_parquet, capsys):
    from hfsoup.cli import main

    with pytest.raises(SystemExit):  # not even a choice
        main(["-q", "soup", *map(str, model_dirs), "--recipe", "greedy", "--heldout-split", "test",
              "--dataset", str(cifar_parquet), "--no-save"])


def test_cli_uniform_recalibrate_bn(model_dirs, cifar_parquet, tmp_path, capsys):
    from safetensors.torch import load_file

    from hfsoup.cli import main

    out0, out1 = tmp_path / "u0", tmp_path / "u1"
    assert main(["-q", "soup", *map(str, model_dirs), "--out", str(out0)]) == 0
    assert main(["-q", "soup", *map(str, model_dirs), "--out", str(out1), "--recalibrate-bn", "2",
                 "--bn-batch-size", "8", "--dataset", str(cifar_parquet)]) == 0
    a, b = load_file(str(out0 / "model.safetensors")), load_file(str(out1 / "model.safetensors"))
    assert torch.equal(a["conv1.weight"], b["conv1.weight"])
    assert not torch.equal(a["bn1.running_mean"], b["bn1.running_mean"])
    params = json.loads((out1 / "soup.json").read_text())["parameters"]["recalibrate_bn"]
    assert params["num_batches"] == 2 and params["batch_size"] == 8 and params["data"]["split"] == "train-main"


def test_recalibrate_bn_after_a_recipe_rescores_the_heldout_entry(model_dirs):
    """BN recalibration is one step applied after any recipe: statistics recomputed, weights untouched, the
    held-out entry re-scored with the figures before kept in the parameters."""
    from hfsoup.recipes.bn import check_bn_options, recalibrate_bn

    val = tiny_data(n=16, num_classes=100, seed=1)
    train = tiny_data(n=32, num_classes=100, seed=2, split="train-main")
    soup = hfsoup.greedy_soup(model_dirs, val, accept_ties=True, device="cpu")
    before_state = {k: v.clone() for k, v in soup.state_dict.items()}
    before = soup.results["val"].soup
    out = recalibrate_bn(soup, train, 2, batch_size=8, seed=0, device="cpu", heldout=val, eval_batch_size=4)
    assert out is soup
    assert torch.equal(soup.state_dict["conv1.weight"], before_state["conv1.weight"])
    assert not torch.equal(soup.state_dict["bn1.running_mean"], before_state["bn1.running_mean"])
    record = soup.parameters["recalibrate_bn"]
    assert record["num_batches"] == 2 and record["num_images"] == 16 and record["data"]["split"] == "train-main"
    assert record["before"] == {"val": before.to_dict()}
    real = hfsoup.evaluate_model(soup.create_model(), val, progress=False, device="cpu")
    assert soup.results["val"].soup == real
    assert soup.results["val"].gain["accuracy_gain"] == real.accuracy - soup.results["val"].gain[
        "best_ingredient_accuracy"]
    check_bn_options(0, 0)  # off: the batch size does not matter
    for n, bs, message in [(-1, 8, "--recalibrate-bn takes a number of batches >= 1 (0 = off), got -1"),
                           (2, 0, "--bn-batch-size must be a positive number of images, got 0")]:
        with pytest.raises(hfsoup.HfSoupError) as e:
            check_bn_options(n, bs)
        assert str(e.value) == message
