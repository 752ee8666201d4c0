"""Learned soup: softmax weights, a planted bad ingredient, exact global-mode state dict, per-layer weights,
determinism, the weight-decay default, held-out isolation, CLI and option errors. Tiny models and data: every test
runs in seconds on CPU."""

from __future__ import annotations

import json

import pytest
import torch

import hfsoup
from hfsoup.core.averaging import average
from hfsoup.data.images import ImageData
from conftest import make_model

FAST = {"epochs": 3, "train_batch_size": 16, "device": "cpu"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "hfsoup-cache"))


@pytest.fixture(scope="module")
def good_bad(tmp_path_factory):
    """Two ingredients sharing a backbone: 'good' labels the held-out data itself (100 % held-out accuracy),
    'bad' is the same model with a random head. Returns ([bad_dir, good_dir], held-out data)."""
    from hfsoup.eval.metrics import norm_stats
    from hfsoup.hub.format import save_model

    root = tmp_path_factory.mktemp("learned")
    good = make_model(0, num_classes=10, bn_steps=1)
    bad = make_model(0, num_classes=10, bn_steps=1)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        bad.fc.weight.copy_(torch.randn(bad.fc.weight.shape, generator=g))
        bad.fc.bias.zero_()
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ImageData(images, torch.zeros(32, dtype=torch.long), None, "synthetic", "val")
    with torch.no_grad():
        labels = good(data.normalized(*norm_stats(good))).argmax(1)
    data = ImageData(images, labels, None, "synthetic", "val")
    return [save_model(bad, root / "bad"), save_model(good, root / "good")], data


def test_global_weights_planted_bad_and_exact_average(good_bad):
    dirs, data = good_bad
    soup = hfsoup.learned_soup(dirs, data, **FAST)
    w = soup.weights
    assert soup.recipe == "learned" and len(w) == 2
    assert sum(w) == pytest.approx(1.0, abs=1e-12)
    assert w[1] > 0.75 > w[0]  # the good ingredient dominates
    # the written state dict is exactly average(ingredients, learned weights)
    ref = average(soup.ingredients, w)
    assert soup.state_dict.keys() == ref.keys()
    assert all(torch.equal(soup.state_dict[k], ref[k]) for k in ref)
    log = soup.log
    assert log["mode"] == "global" and log["weights"] == w
    assert [p["epoch"] for p in log["curve"]] == [0, 1, 2, 3]
    assert log["curve"][0]["weights"] == pytest.approx([0.5, 0.5]) and log["curve"][0]["train_loss"] is None
    assert log["curve"][-1]["heldout_loss_scaled"] < log["curve"][0]["heldout_loss_scaled"]
    assert log["temperature"] == log["curve"][-1]["temperature"] != 1.0  # learned, starting at T = 1
    assert log["options"]["epochs"] == 3 and log["options"]["lr"] == 0.1 and log["options"]["seed"] == 0
    assert log["options"]["weight_decay"] == 0.0  # the reference code's default
    assert soup.parameters == {"epochs": 3, "lr": 0.1, "train_batch_size": 16, "weight_decay": 0.0,
                               "init": "uniform", "per_layer": False, "seed": 0, "integer_policy": "mean",
                               "heldout": data.describe()}
    assert log["cost"]["optimizer_steps"] == 6  # 3 epochs x ceil(32 / 16)
    # the recorded held-out figure is the real one of the written weights
    res = soup.results["val"].soup
    real = hfsoup.evaluate_model(soup.create_model(), data, progress=False, device="cpu")
    assert real.accuracy == res.accuracy and real.loss == pytest.approx(res.loss)
    json.dumps(log)  # JSON-serialisable


def test_weight_decay_defaults_to_zero_and_is_applied(good_bad, monkeypatch):
    """The reference code (mlfoundations/model-soups) uses no weight decay: the default is 0.0, and a given value
    reaches AdamW."""
    import inspect

    import hfsoup.recipes.learned as learned_mod

    assert inspect.signature(hfsoup.learned_soup).parameters["weight_decay"].default == 0.0
    assert hfsoup.get_recipe("learned").param("weight_decay").default == 0.0
    seen = []
    real = torch.optim.AdamW

    def spy(params, **kw):
        seen.append(kw["weight_decay"])
        return real(params, **kw)

    monkeypatch.setattr(learned_mod.torch.optim, "AdamW", spy)
    dirs, data = good_bad
    data = data.subset(8)
    hfsoup.learned_soup(dirs, data, **dict(FAST, epochs=1))
    hfsoup.learned_soup(dirs, data, weight_decay=0.05, **dict(FAST, epochs=1))
    assert seen == [0.0, 0.05]


def test_deterministic_under_seed(good_bad):
    dirs, data = good_bad
    kw = dict(FAST, epochs=1, train_batch_size=4)
    data = data.subset(12)
    a = hfsoup.learned_soup(dirs, data, seed=3, **kw)
    b = hfsoup.learned_soup(dirs, data, seed=3, **kw)
    c = hfsoup.learned_soup(dirs, data, seed=4, **kw)
    assert a.weights == b.weights and a.log["temperature"] == b.log["temperature"]
    assert a.weights != c.weights  # another minibatch order


def test_per_layer_weights(good_bad):
    dirs, data = good_bad
    soup = hfsoup.learned_soup(dirs, data, per_layer=True, **FAST)
    log = soup.log
    per = log["per_tensor_weights"]
    model_params = [k for k, _ in soup.create_model().named_parameters()]
    assert list(per) == model_params  # one row per parameter tensor
    for row in per.values():
        assert len(row) == 2 and sum(row) == pytest.approx(1.0, abs=1e-12)
    assert per["fc.weight"][1] > 0.75  # the head of the good ingredient wins
    # Soup.weights: the mean per-tensor weight of each ingredient
    mean = [sum(r[i] for r in per.values()) / len(per) for i in range(2)]
    assert soup.weights == pytest.approx(mean, abs=1e-12) and sum(soup.weights) == pytest.approx(1.0)
    # each tensor is the float64 weighted sum with its own weights
    ings = [i.state_dict() for i in soup.ingredients]
    for k in ("fc.weight", "fc.bias", "conv1.weight"):
        expect = sum(w * s[k].double() for w, s in zip(per[k], ings)).float()
        assert torch.equal(soup.state_dict[k], expect)
    # a BatchNorm buffer follows its layer's weight row
    k = "bn1.running_mean"
    expect = sum(w * s[k].double() for w, s in zip(per["bn1.weight"], ings)).float()
    assert torch.equal(soup.state_dict[k], expect)
    assert soup.state_dict["bn1.num_batches_tracked"].dtype == torch.int64
    assert log["mode"] == "per_layer" and soup.parameters["per_layer"] is True


def test_refuses_test_split_and_bad_parameters(good_bad):
    dirs, data = good_bad
    test = ImageData(data.images, data.labels, None, "synthetic", "test")
    with pytest.raises(hfsoup.HfSoupError, match="never the test split"):
        hfsoup.learned_soup(dirs, test, **FAST)
    for bad, message in [({"epochs": 0}, "--learned-epochs must be >= 1, got 0"),
                         ({"lr": 0.0}, "--learned-lr must be > 0, got 0.0"),
                         ({"lr": float("nan")}, "--learned-lr takes a finite number, got nan"),
                         ({"train_batch_size": 0}, "--learned-batch-size must be >= 1, got 0"),
                         ({"weight_decay": -1.0}, "--learned-weight-decay must be >= 0, got -1.0"),
                         ({"init": "nope"}, "--learned-init must be one of uniform, best, got 'nope'"),
                         ({"init": [1.0]}, "init weights must be 2 positive finite numbers, got [1.0]")]:
        with pytest.raises(hfsoup.HfSoupError) as e:
            hfsoup.learned_soup(dirs, data, **dict(FAST, **bad))
        assert str(e.value) == message


def test_cli_learned_json_heldout_only(model_dirs, cifar_parquet, tmp_path, capsys, loaded_splits):
    from hfsoup.cli import main

    used = loaded_splits
    out = tmp_path / "learned"
    code = main(["-q", "soup", *map(str, model_dirs), "--recipe", "learned", "--dataset", str(cifar_parquet),
                 "--out", str(out), "--json", "--learned-epochs", "2", "--learned-batch-size", "2", "--seed", "1",
                 "--device", "cpu"])
    assert code == 0
    assert used == ["val"]  # the only data read
    doc = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "soup.json").read_text())
    assert manifest["recipe"] == "learned"
    log = manifest["decision_log"]
    assert log["heldout"]["split"] == "val" and len(log["curve"]) == 3
    assert log["options"]["seed"] == 1 and log["options"]["epochs"] == 2 and log["options"]["train_batch_size"] == 2
    weights = [i["weight"] for i in manifest["ingredients"]]
    assert weights == log["weights"] and sum(weights) == pytest.approx(1.0)
    assert "val" in manifest["results"]
    assert doc["soups"][0]["decision_log"]["weights"] == log["weights"]


@pytest.mark.parametrize("opts, message", [
    (["--learned-epochs", "0"], "--learned-epochs"),
    (["--learned-lr", "-1"], "--learned-lr"),
    (["--learned-batch-size", "0"], "--learned-batch-size"),
])
def test_cli_bad_options_one_line(model_dirs, cifar_parquet, capsys, opts, message):
    from hfsoup.cli import main

    code = main(["-q", "soup", *map(str, model_dirs), "--recipe", "learned", "--dataset", str(cifar_parquet),
                 "--no-save", *opts])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hfsoup: error:") and message in err and len(err.splitlines()) == 1
