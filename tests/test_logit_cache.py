"""Logit cache: location, hit on rerun (no forward pass), invalidation on new weights or new split, --no-cache,
atomic writes, non-finite logits (cached, refused by the recipes with one message naming the model)."""

from __future__ import annotations

import pytest
import torch

import hfsoup
from hfsoup.eval import logit_cache
from hfsoup.core.ingredients import load_ingredients
from test_greedy import tiny_data
from conftest import make_model


@pytest.fixture(autouse=True)
def _fp32_by_default():
    """The cache's keys and hits with fp32 entries: the precision is pinned (``auto``, the default, picks bf16 on a
    device with native bf16 — a GPU, an AMX CPU — and its entries carry ``-bf16``). A test may set another."""
    from hfsoup.eval.precision import use_precision

    with use_precision("fp32"):
        yield


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = logit_cache.predict_logits

    def spy(model, data, **kw):
        calls.append(data.fingerprint)
        return real(model, data, **kw)

    monkeypatch.setattr(logit_cache, "predict_logits", spy)
    return calls


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "c"))
    assert logit_cache.logits_dir() == tmp_path / "c" / "logits"
    monkeypatch.delenv("HFSOUP_CACHE")
    from huggingface_hub import constants

    assert logit_cache.logits_dir() == __import__("pathlib").Path(constants.HF_HOME) / "hfsoup" / "logits"


def test_cache_hit_and_invalidation(tmp_path, monkeypatch, counted):
    from hfsoup.hub.format import save_model

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    dirs = [str(save_model(make_model(i, num_classes=10), tmp_path / f"m{i}")) for i in range(3)]
    data = tiny_data(n=16)
    first = hfsoup.greedy_soup(dirs, data)
    assert len(counted) == 3 and first.log["cost"]["ingredient_passes"] == 3
    ings = load_ingredients(dirs)
    path = logit_cache.cache_path(ings[0], data)
    assert path.is_file() and path.parent.name == ings[0].sha256 and path.name.startswith(data.fingerprint)
    assert not list(path.parent.glob(".*tmp*"))  # atomic writes leave no temporary file

    counted.clear()
    again = hfsoup.greedy_soup(dirs, data)  # rerun: every ingredient from the cache
    assert counted == [] and again.log["cost"]["cache_hits"] == 3
    assert again.log["order"] == first.log["order"]
    hfsoup.radin_soup(dirs, data, budget=1, candidates=5)  # the other recipe reuses them too
    hfsoup.ensemble_evaluate(dirs, data)
    assert counted == []

    other = tiny_data(n=16, seed=9)  # a different split: recomputed
    hfsoup.ensemble_evaluate(dirs, other)
    assert counted == [other.fingerprint] * 3

    counted.clear()  # new weights in the same folder: new content hash, recomputed
    save_model(make_model(99, num_classes=10), tmp_path / "m0", force=True)
    hfsoup.ensemble_evaluate(dirs, data)
    assert len(counted) == 1

    counted.clear()  # --no-cache: always recomputed, nothing written
    n_files = len(list((tmp_path / "cache").rglob("*.safetensors")))
    hfsoup.ensemble_evaluate(dirs, data, cache=False)
    assert len(counted) == 3 and len(list((tmp_path / "cache").rglob("*.safetensors"))) == n_files


def test_corrupt_entry_is_recomputed(tmp_path, monkeypatch, counted):
    from hfsoup.hub.format import save_model

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    d = str(save_model(make_model(0, num_classes=10), tmp_path / "m"))
    (ing,) = load_ingredients([d], min_count=1)
    data = tiny_data(n=8)
    a = logit_cache.ingredient_logits(ing, data, progress=False)
    logit_cache.cache_path(ing, data).write_bytes(b"garbage")
    b = logit_cache.ingredient_logits(ing, data, progress=False)
    assert len(counted) == 2 and torch.equal(a, b)


def test_write_is_atomic_and_a_read_only_cache_only_costs_recomputation(tmp_path, monkeypatch, counted):
    from hfsoup.core import files
    from hfsoup.hub.format import save_model

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    d = str(save_model(make_model(0, num_classes=10), tmp_path / "m"))
    (ing,) = load_ingredients([d], min_count=1)
    data = tiny_data(n=8)
    written = []
    real = files.atomic_save

    def spy(path, writer):
        written.append(path)
        return real(path, writer)

    monkeypatch.setattr(logit_cache, "atomic_save", spy)
    a = logit_cache.ingredient_logits(ing, data, progress=False)
    assert written == [logit_cache.cache_path(ing, data)]

    def failing(path, writer):
        raise OSError("read-only file system")

    monkeypatch.setattr(logit_cache, "atomic_save", failing)
    other = tiny_data(n=8, seed=4)
    b = logit_cache.ingredient_logits(ing, other, progress=False)  # no error: computed, not cached
    assert b.shape == a.shape and not logit_cache.cache_path(ing, other).exists()


def test_non_finite_logits_are_cached_and_refused_by_the_ensemble(tmp_path, monkeypatch, counted):
    """A NaN model used to give the ensemble a NaN loss without a word; now one error names it. Its logits are
    cached as they are, so a rerun fails from the cache without a forward pass."""
    from hfsoup.hub.format import save_model

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    dirs = []
    for i in range(3):
        m = make_model(40 + i, num_classes=10)
        if i == 1:
            with torch.no_grad():
                m.fc.bias[3] = float("inf")
        dirs.append(str(save_model(m, tmp_path / f"e{i}")))
    data = tiny_data(n=16)
    with pytest.raises(hfsoup.NonFiniteError) as e:
        hfsoup.ensemble_evaluate(dirs, data)
    msg = str(e.value)
    assert f"'{dirs[1]}' (16 of 16 images)" in msg and "remove it from the models" in msg
    assert dirs[0] not in msg and dirs[2] not in msg and e.value.references == [dirs[1]]
    assert len(counted) == 3
    counted.clear()
    with pytest.raises(hfsoup.NonFiniteError):
        hfsoup.ensemble_evaluate(dirs, data)
    assert counted == []
    # without the broken model the ensemble is scored, from the cache
    good = hfsoup.ensemble_evaluate([dirs[0], dirs[2]], data)
    assert counted == [] and good.weights == [0.5, 0.5]
    expected = hfsoup.metrics_from_logits(
        (logit_cache.all_logits(load_ingredients([dirs[0], dirs[2]]), data).double().mean(0)), data.labels)
    assert good.ensemble == expected and good.to_dict()["ensemble"] == expected.to_dict()


def test_bf16_logits_have_their_own_cache_entry(tmp_path, monkeypatch, counted):
    """fp32 and bf16 logits are never mixed: --precision bf16 after an fp32 run recomputes, under its own key."""
    from hfsoup.eval.precision import use_precision
    from hfsoup.hub.format import save_model

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    d = str(save_model(make_model(0, num_classes=10), tmp_path / "m0"))
    ing = load_ingredients([d])[0]
    data = tiny_data(n=16)
    fp32 = logit_cache.ingredient_logits(ing, data, progress=False)
    with use_precision("bf16"):
        bf16 = logit_cache.ingredient_logits(ing, data, progress=False)
        again = logit_cache.ingredient_logits(ing, data, progress=False)
    assert len(counted) == 2  # fp32 once, bf16 once, then a hit
    assert logit_cache.cache_path(ing, data, "bf16").is_file() and logit_cache.cache_path(ing, data).is_file()
    assert logit_cache.cache_path(ing, data, "bf16") != logit_cache.cache_path(ing, data)
    assert not torch.equal(fp32, bf16) and torch.equal(bf16, again)
    # auto without native bf16 is fp32: the fp32 entry is reused
    monkeypatch.setattr(logit_cache, "native_bf16", lambda device: False)
    assert torch.equal(logit_cache.ingredient_logits(ing, data, progress=False, precision="auto"), fp32)
    assert len(counted) == 2
