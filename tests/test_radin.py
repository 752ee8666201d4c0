"""RADIN: candidate generation, vectorised proxy scores, budget of real evaluations, winner, prior direction,
decisions on known inputs (including a soup below the best single model at B = 1), non-finite ingredients, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import hfsoup
from hfsoup.core.results import EvalResult
from hfsoup.recipes import radin as radin_mod
from hfsoup.recipes.radin import generate_candidates, membership_matrix, num_subsets, objective, proxy_scores
from test_greedy import coded_models, decode, nan_model_dirs, patch_singles, tiny_data
from conftest import make_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "hfsoup-cache"))


@pytest.fixture
def five_models(tmp_path):
    from hfsoup.hub.format import save_model

    return [str(save_model(make_model(20 + i, num_classes=10, bn_steps=1), tmp_path / f"z{i}")) for i in range(5)]


def test_candidates_monte_carlo():
    c = generate_candidates(8, 30, seed=0)
    assert len(c) == 31 and c[0] == tuple(range(8))
    assert len(set(c)) == 31  # no repeats
    assert all(2 <= len(s) <= 7 for s in c[1:])
    assert all(list(s) == sorted(s) for s in c)
    assert generate_candidates(8, 30, seed=0) == c  # reproducible
    assert generate_candidates(8, 30, seed=1) != c


def test_candidates_enumerated_for_small_n():
    assert num_subsets(4) == 10
    c = generate_candidates(4, 200, seed=0)
    assert len(c) == 11 and len(set(c)) == 11
    assert generate_candidates(2, 200) == [(0, 1)]  # only the uniform soup
    # C close to the number of subsets: Monte-Carlo still terminates with distinct subsets
    c = generate_candidates(5, num_subsets(5) - 1, seed=3)
    assert len(set(c)) == num_subsets(5)


def test_proxy_scores_match_independent_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 30, 7, generator=g)
    labels = torch.randint(0, 7, (30,), generator=g)
    cands = generate_candidates(5, 12, seed=0)
    loss, acc = proxy_scores(logits, labels, membership_matrix(cands, 5), max_elements=500)  # forces chunking
    for i, c in enumerate(cands):
        avg = logits[list(c)].double().mean(0)
        assert loss[i].item() == pytest.approx(F.cross_entropy(avg, labels).item(), rel=1e-9)
        assert acc[i].item() == pytest.approx((avg.argmax(1) == labels).double().mean().item())


def test_prior_direction():
    loss = torch.tensor([1.0, 0.5, 0.6], dtype=torch.float64)
    acc = torch.tensor([0.5, 0.7, 0.6], dtype=torch.float64)
    sizes = torch.tensor([5.0, 2.0, 3.0])
    # λ = 0: the best proxy first; λ > 0 favours larger soups; λ < 0 smaller ones (objective: lower is better)
    assert objective(loss, acc, sizes, "loss", 0.0).argmin().item() == 1
    assert objective(loss, acc, sizes, "loss", 1.0).argmin().item() == 0
    assert objective(acc, acc, sizes, "accuracy", 0.0).argmin().item() == 1
    assert objective(loss, acc, sizes, "accuracy", 1.0).argmin().item() == 0
    assert objective(loss, acc, sizes, "loss", -1.0).argmin().item() == 1


def test_radin_budget_winner_and_log(five_models, monkeypatch):
    data = tiny_data(n=40, seed=5)
    calls = []
    real = radin_mod.evaluate_state_dict

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(radin_mod, "evaluate_state_dict", counting)
    soup = hfsoup.radin_soup(five_models, data, budget=4, candidates=10, seed=0)
    log = soup.log
    assert len(calls) == 4 and log["evaluations"] == 4 and log["cost"]["soup_passes"] == 4
    assert log["num_candidates"] == 11 and log["candidates"][0]["uniform"]
    evaluated = [c for c in log["candidates"] if c.get("evaluated")]
    assert len(evaluated) == 4
    # the evaluated ones are the top 4 by objective (loss proxy, λ = 0)
    ranked = sorted(log["candidates"], key=lambda c: (c["objective"], c["id"]))
    assert [c["id"] for c in ranked[:4]] == log["evaluated"]
    assert all(c["objective"] == pytest.approx(c["proxy_loss"]) for c in log["candidates"])
    best = max(evaluated, key=lambda c: (c["accuracy"], -c["objective"]))
    assert log["winner"]["id"] == best["id"]
    members = log["winner"]["members"]
    assert soup.weights == pytest.approx([1 / len(members) if i in members else 0.0 for i in range(5)])
    ref = hfsoup.average([soup.ingredients[i] for i in members])
    assert all(torch.equal(soup.state_dict[k], ref[k]) for k in ref)
    assert soup.results["val"].soup.accuracy == best["accuracy"]
    # reproducible
    again = hfsoup.radin_soup(five_models, data, budget=4, candidates=10, seed=0)
    assert [c["members"] for c in again.log["candidates"]] == [c["members"] for c in log["candidates"]]
    assert again.log["winner"] == log["winner"]


def test_radin_large_prior_picks_uniform_at_budget_one(five_models):
    data = tiny_data(n=20, seed=6)
    soup = hfsoup.radin_soup(five_models, data, budget=1, candidates=8, prior_lambda=1.0, seed=0)
    assert soup.log["winner"]["members"] == [0, 1, 2, 3, 4]
    soup = hfsoup.radin_soup(five_models, data, budget=1, candidates=8, prior_lambda=-1.0, seed=0)
    assert len(soup.log["winner"]["members"]) == 2


def patch_radin(monkeypatch, singles, proxy_loss, real_acc):
    """Known inputs: the ingredients' held-out results, every candidate's proxy loss and its real held-out accuracy
    come from tables keyed by subset (the RADIN ranking and selection logic stays real). Returns the evaluated
    subsets, in order."""
    patch_singles(monkeypatch, singles)
    calls = []

    def fake_proxy(logits, labels, membership, **kw):
        subsets = [frozenset(int(j) for j in torch.nonzero(row).flatten()) for row in membership]
        loss = torch.tensor([proxy_loss.get(c, 2.0) for c in subsets], dtype=torch.float64)
        return loss, torch.zeros(len(subsets), dtype=torch.float64)

    def fake_eval(config, state, data, **kw):
        subset = decode(state)
        calls.append(subset)
        return EvalResult(real_acc.get(subset, 0.0), 1.0, len(data))

    monkeypatch.setattr(radin_mod, "proxy_scores", fake_proxy)
    monkeypatch.setattr(radin_mod, "evaluate_state_dict", fake_eval)
    return calls


S = frozenset
SINGLES4 = {0: (0.80, 1.0), 1: (0.60, 1.0), 2: (0.60, 1.0), 3: (0.50, 1.0)}
PROXY = {S({0, 1}): 0.5, S({1, 2}): 0.6, S({0, 1, 2}): 0.6, S({0, 1, 2, 3}): 0.9}
REAL = {S({0, 1}): 0.70, S({1, 2}): 0.82, S({0, 1, 2}): 0.82, S({0, 1, 2, 3}): 0.75}


def test_radin_decisions_on_known_inputs(tmp_path, monkeypatch):
    """4 models, all 10 subsets enumerated plus the uniform soup. λ = 0: the top 3 by proxy loss are evaluated
    (the tie at 0.6 goes to the earlier candidate, (1, 2)), and the best real accuracy wins; its tie with (0, 1, 2)
    goes to the better objective."""
    dirs = coded_models(tmp_path, 4)
    calls = patch_radin(monkeypatch, SINGLES4, PROXY, REAL)
    soup = hfsoup.radin_soup(dirs, tiny_data(), budget=3)
    log = soup.log
    assert log["enumerated"] and log["num_candidates"] == 11
    assert calls == [S({0, 1}), S({1, 2}), S({0, 1, 2})]
    assert [log["candidates"][i]["members"] for i in log["evaluated"]] == [[0, 1], [1, 2], [0, 1, 2]]
    assert log["winner"]["members"] == [1, 2] and log["winner"]["accuracy"] == 0.82 and log["winner"]["rank"] == 2
    assert soup.weights == [0.0, 0.5, 0.5, 0.0]
    assert torch.equal(soup.state_dict["fc.bias"][:4], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    assert soup.results["val"].soup.accuracy == 0.82
    # the prior λ = 1 (loss − λ·k) puts the uniform soup of all 4 first: at B = 1 it is the only one evaluated
    calls.clear()
    soup = hfsoup.radin_soup(dirs, tiny_data(), budget=1, prior_lambda=1.0)
    assert calls == [S({0, 1, 2, 3})] and soup.log["winner"]["members"] == [0, 1, 2, 3]


def test_radin_budget_one_can_return_a_soup_below_the_best_single_model(tmp_path, monkeypatch):
    """Documented behaviour: RADIN never compares its winner with the single models. At B = 1 the top proxy
    candidate, (0, 1), is worse on held-out (0.70) than model 0 alone (0.80), and it is what RADIN returns."""
    dirs = coded_models(tmp_path, 4)
    calls = patch_radin(monkeypatch, SINGLES4, PROXY, REAL)
    soup = hfsoup.radin_soup(dirs, tiny_data(), budget=1)
    assert calls == [S({0, 1})] and soup.log["winner"]["members"] == [0, 1]
    gain = soup.results["val"].gain
    assert gain["best_ingredient_accuracy"] == 0.80 and gain["accuracy_gain"] == pytest.approx(-0.10)


def test_radin_refuses_a_non_finite_ingredient_up_front(tmp_path, monkeypatch):
    """A NaN ingredient used to abort RADIN mid-search (while averaging a candidate) although valid candidates
    exist; now one error names it before any candidate is averaged."""
    dirs = nan_model_dirs(tmp_path)
    calls = []
    monkeypatch.setattr(radin_mod, "average", lambda *a, **k: calls.append(1))
    with pytest.raises(hfsoup.NonFiniteError, match="logits of .* contain NaN/Inf.*remove it") as e:
        hfsoup.radin_soup(dirs, tiny_data(), budget=2)
    assert e.value.references == [str(dirs[2])] and calls == []


def test_radin_parameters_are_validated_and_recorded(tmp_path, monkeypatch):
    dirs = coded_models(tmp_path, 4)
    patch_radin(monkeypatch, SINGLES4, PROXY, REAL)
    data = tiny_data()
    soup = hfsoup.radin_soup(dirs, data, budget="2", candidates=5, prior_lambda=0, proxy="loss", seed=3)
    assert soup.parameters == {"budget": 2, "candidates": 5, "prior_lambda": 0.0, "proxy": "loss", "seed": 3,
                               "integer_policy": "mean", "heldout": data.describe()}
    for bad, message in [({"budget": 0}, "--budget must be >= 1, got 0"),
                         ({"candidates": -1}, "--candidates must be >= 0, got -1"),
                         ({"proxy": "mse"}, "--proxy must be one of loss, accuracy, got 'mse'"),
                         ({"prior_lambda": float("inf")}, "--prior-lambda takes a finite number, got inf")]:
        with pytest.raises(hfsoup.HfSoupError) as e:
            hfsoup.radin_soup(dirs, data, **bad)
        assert str(e.value) == message


@pytest.mark.parametrize("args, fragment", [(["--budget", "0"], "--budget"),
                                            (["--candidates", "-3"], "--candidates")])
def test_cli_radin_bad_options_one_line(model_dirs, cifar_parquet, capsys, args, fragment):
    from hfsoup.cli import main

    code = main(["-q", "soup", *map(str, model_dirs), "--recipe", "radin", "--dataset", str(cifar_parquet),
                 "--no-save", *args])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("hfsoup: error:") and fragment in err[0]


def test_cli_radin_and_ensemble(model_dirs, cifar_parquet, tmp_path, capsys):
    from hfsoup.cli import main

    out = tmp_path / "radin"
    assert main(["-q", "soup", *map(str, model_dirs), "--recipe", "radin", "--budget", "2", "--candidates", "200",
                 "--prior-lambda", "1", "--seed", "0", "--dataset", str(cifar_parquet), "--out", str(out),
                 "--json"]) == 0
    capsys.readouterr()
    log = json.loads((out / "soup.json").read_text())["decision_log"]
    assert log["enumerated"] and log["num_candidates"] == 4 and log["evaluations"] == 2
    # λ = 1 puts the uniform soup of all 3 first (loss − 3 beats loss − 2 for any proxy loss gap below 1)
    assert log["prior_lambda"] == 1.0 and log["evaluated"][0] == 0
    # ensemble: no --out needed, report only
    assert main(["-q", "soup", *map(str, model_dirs), "--recipe", "ensemble", "--dataset", str(cifar_parquet),
                 "--eval-split", "test", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["soups"] == [] and set(doc["ensemble"]) == {"val", "test"}
    test = hfsoup.load_image_data(str(cifar_parquet), "test")
    expected = hfsoup.ensemble_evaluate(model_dirs, test)
    assert doc["ensemble"]["test"]["ensemble"] == expected.ensemble.to_dict()
    assert all(i["results"]["test"]["accuracy"] == expected.ingredients[str(d)].accuracy
               for i, d in zip(doc["ingredients"], model_dirs))
