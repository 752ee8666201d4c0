"""Study report: every statistic on hand-made tables with known answers, the degenerate tables, and the written
report (figures, self-contained HTML, summary.json, refusal to overwrite). No torch, no model evaluation."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from hfsoup.errors import HfSoupError, OutputExistsError
from hfsoup.study import analysis as an
from hfsoup.study.analysis import PairTable
from hfsoup.study.store import write_table

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


def soups(pairs: dict[tuple[str, str], float], **columns) -> PairTable:
    """Midpoint soups from {(a, b): accuracy gain in points}; extra columns as lists in the same order."""
    keys = list(pairs)
    cols = {"row_id": [f"r{i:04d}" for i in range(len(keys))], "status": ["ok"] * len(keys),
            "model_a": [a for a, _ in keys], "model_b": [b for _, b in keys], "alpha": [0.5] * len(keys),
            "acc_gain": [None if math.isnan(pairs[k]) else pairs[k] / 100 for k in keys]}
    cols.update({k: list(v) for k, v in columns.items()})
    return PairTable.from_columns(cols)


# ------------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_known_values():
    lo, hi = an.wilson_interval(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    lo, hi = an.wilson_interval(0, 20)  # touches 0 exactly, upper = z²/(n + z²)
    assert lo == 0.0 and hi == pytest.approx(1.959964 ** 2 / (20 + 1.959964 ** 2), abs=1e-6)
    lo, hi = an.wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(20 / (20 + 1.959964 ** 2), abs=1e-6)
    assert all(math.isnan(x) for x in an.wilson_interval(0, 0))
    p = an.Proportion(3, 4).to_dict()
    assert p["k"] == 3 and p["n"] == 4 and p["p"] == 0.75 and p["lo"] < 0.75 < p["hi"]
    assert an.Proportion(0, 0).to_dict() == {"k": 0, "n": 0, "p": None, "lo": None, "hi": None}


def test_gain_distribution_cdf_fraction_positive_and_thresholds():
    # Gains in points: two positive (1, 0.5), one tie (0), two negative, one collapsed; a NaN gain is ignored.
    t = soups({("a", "b"): 1.0, ("a", "c"): -2.0, ("a", "d"): 0.0, ("b", "c"): 0.5, ("b", "d"): -50.0,
               ("c", "d"): NAN},
              loss_gain=[0.1, -0.2, 0.0, -0.05, -3.0, None], collapsed=[False, False, False, False, True, None])
    g = an.gain_distribution(an.midpoint_soups(t))
    assert g.skipped is None and g.n == 5
    assert (g.acc.positive.k, g.acc.positive.n) == (2, 5)
    assert g.acc.positive.interval == pytest.approx(an.wilson_interval(2, 5))
    assert g.acc.fraction_zero == pytest.approx(0.2)
    assert g.acc.quantiles["q50"] == pytest.approx(0.0) and g.acc.min == -50.0 and g.acc.max == 1.0
    assert g.acc.mean == pytest.approx((1 - 2 + 0 + 0.5 - 50) / 5)
    gt = {e["k"]: (e["p"].k, e["p"].n) for e in g.acc.greater_than}
    assert gt == {-5.0: (4, 5), -1.0: (3, 5), 0.0: (2, 5), 0.5: (1, 5)}  # 0.5 is not > 0.5
    assert (g.loss.positive.k, g.loss.positive.n) == (1, 5)
    assert (g.collapse.k, g.collapse.n) == (1, 5)
    x, y = g.plot["acc"]
    assert x.tolist() == [-50.0, -2.0, 0.0, 0.5, 1.0] and y.tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_ecdf_and_bins():
    x, y = an.ecdf([3.0, 1.0, NAN, 2.0, 2.0])
    assert x.tolist() == [1.0, 2.0, 2.0, 3.0] and y.tolist() == [0.25, 0.5, 0.75, 1.0]
    bins = an.make_bins([10, 20, 20, 30, NAN], max_bins=5)  # few distinct values: one bin each
    assert [b.label for b in bins] == ["10", "20", "30"]
    assert an.assign_bins([30, 10, 25, NAN, 20], bins).tolist() == [2, 0, -1, -1, 1]
    bins = an.make_bins(np.arange(100), max_bins=4)  # many values: equal-count [lo, hi), the last closed
    assert [(b.lo, b.hi) for b in bins] == [(0, 24), (24, 49), (49, 74), (74, 99)]
    assert an.assign_bins([0, 23, 24, 99], bins).tolist() == [0, 0, 1, 3]


def test_shared_epochs_probabilities_quantiles_and_intervals():
    # Shared epochs 10 (4 soups: 1 positive), 20 (3 soups: 2 positive), 30 (2 soups: 2 positive).
    gains = [-3.0, -1.0, 0.0, 0.2, -0.5, 1.0, 2.0, 0.7, 0.4]
    shared = [10, 10, 10, 10, 20, 20, 20, 30, 30]
    pairs = {(f"m{i}", f"n{i}"): g for i, g in enumerate(gains)}
    s = an.shared_epochs_analysis(an.midpoint_soups(soups(pairs, shared_epochs=shared,
                                                          loss_gain=[g / 10 for g in gains],
                                                          collapsed=[True] + [False] * 8)))
    assert s.skipped is None and [b.label for b in s.bins] == ["10", "20", "30"] and s.n_by_bin == [4, 3, 2]
    pos = [(p.k, p.n) for p in s.positive_by_bin]
    assert pos == [(1, 4), (2, 3), (2, 2)]
    assert s.positive_by_bin[1].interval == pytest.approx(an.wilson_interval(2, 3))
    by_k = {e["k"]: [(p.k, p.n) for p in e["by_bin"]] for e in s.acc.greater_than}
    assert by_k[-1.0] == [(2, 4), (3, 3), (2, 2)] and by_k[0.5] == [(0, 4), (2, 3), (1, 2)]
    assert s.acc.quantiles["q50"] == pytest.approx([np.median(gains[:4]), 1.0, 0.55])
    assert s.acc.mean_positive == pytest.approx([0.2, 1.5, 0.55])
    assert [(p.k, p.n) for p in s.collapse] == [(1, 4), (0, 3), (0, 2)]
    assert (s.last_bin_positive.k, s.last_bin_positive.n) == (2, 2)
    assert s.rho_acc.rho == pytest.approx(stats.spearmanr(shared, gains)[0])
    assert s.loss is not None and len(s.loss.greater_than) == len(an.LOSS_THRESHOLDS)


def random_soups(n_models: int = 12, seed: int = 0) -> PairTable:
    rng = np.random.default_rng(seed)
    names = [f"m{i:02d}" for i in range(n_models)]
    epochs = {m: 10 * (1 + i // 3) for i, m in enumerate(names)}
    rows = []
    for a, b in itertools.combinations(names, 2):
        s = min(epochs[a], epochs[b])
        gain = (s - 25) / 10 + rng.normal()
        rows.append({"row_id": f"{a}{b}", "status": "ok", "model_a": a, "model_b": b, "alpha": 0.5,
                     "epoch_a": epochs[a], "epoch_b": epochs[b], "shared_epochs": s, "acc_gain": gain / 100,
                     "loss_gain": gain / 40 + rng.normal() * 0.01, "kl": np.exp(-s / 15) + rng.random() * 0.2,
                     "cka_logits": 1 - np.exp(-s / 15) + rng.random() * 0.3, "l2": float(rng.integers(0, 4))})
    return PairTable.from_rows(rows)


def test_similarity_spearman_and_auroc_match_scipy_and_sklearn():
    t = random_soups()
    r = an.similarity_analysis(an.midpoint_soups(t), n_boot=200, seed=3)
    gain = t.num("acc_gain") * 100
    pos = gain > 0
    kl, cka, l2, shared = t.num("kl"), t.num("cka_logits"), t.num("l2"), t.num("shared_epochs")
    m = {x.name: x for x in r.metrics}
    assert r.n == 66 and r.n_positive == int(pos.sum()) and 0 < r.n_positive < 66
    assert m["kl"].rho_all.rho == pytest.approx(stats.spearmanr(kl, gain)[0])
    assert m["kl"].rho_all.p_value == pytest.approx(stats.spearmanr(kl, gain)[1])
    assert m["kl"].rho_positive.rho == pytest.approx(stats.spearmanr(kl[pos], gain[pos])[0])
    assert m["kl"].rho_positive.n == int(pos.sum())
    assert m["kl"].rho_shared_epochs.rho == pytest.approx(stats.spearmanr(shared, kl)[0])
    # Orientation: lower KL / L2 = more similar = higher score; higher CKA = higher score.
    assert m["kl"].auroc.score == "-kl" and m["cka_logits"].auroc.score == "cka_logits"
    assert m["kl"].auroc.auc == pytest.approx(roc_auc_score(pos, -kl))
    assert m["cka_logits"].auroc.auc == pytest.approx(roc_auc_score(pos, cka))
    assert m["l2"].auroc.auc == pytest.approx(roc_auc_score(pos, -l2))  # heavy ties
    assert r.baseline.auc == pytest.approx(roc_auc_score(pos, shared)) and r.baseline.score == "shared_epochs"
    d = m["kl"].auroc_vs_baseline
    assert d.diff == pytest.approx(roc_auc_score(pos, -kl) - roc_auc_score(pos, shared))
    assert m["kl"].auroc.lo < m["kl"].auroc.auc < m["kl"].auroc.hi and d.lo <= d.diff <= d.hi
    # Metrics absent from the table are skipped, not failed.
    assert m["cosine"].skipped and m["cosine"].auroc is None
    assert r.best_metric in {"kl", "cka_logits", "l2"}
    # Same seed, same intervals.
    again = an.similarity_analysis(an.midpoint_soups(t), n_boot=200, seed=3)
    assert again.to_dict() == r.to_dict()


def test_bootstrap_auroc_is_sklearn_on_the_seeded_resamples():
    rng = np.random.default_rng(1)
    n = 40
    score = np.round(rng.normal(size=n), 1)  # ties
    labels = rng.random(n) < 0.4
    (boot,) = an.bootstrap_auroc([score], labels, n_boot=9, seed=5, chunk=4)
    ref_rng = np.random.default_rng(5)
    expected = []
    for size in (4, 4, 1):
        for idx in ref_rng.integers(0, n, size=(size, n)):
            y = labels[idx]
            expected.append(roc_auc_score(y, score[idx]) if 0 < y.sum() < n else np.nan)
    np.testing.assert_allclose(boot, expected, rtol=0, atol=1e-12)
    # A NaN score drops that row from the vector's AUROC only.
    with_nan = score.copy()
    with_nan[0] = np.nan
    (b2,) = an.bootstrap_auroc([with_nan], labels, n_boot=4, seed=5, chunk=4)
    idx = np.random.default_rng(5).integers(0, n, size=(4, n))[0]
    keep = idx[idx != 0]
    assert b2[0] == pytest.approx(roc_auc_score(labels[keep], score[keep]))
    assert math.isnan(an.auroc([1, 2, 3], [True, True, True]))  # one class: undefined


# ------------------------------------------------------------------------------------------------ transitivity
# Four models; gains in points. Positive soups: AB, AC, BD, CD; negative: AD, BC.
FOUR = {("A", "B"): 1.0, ("A", "C"): 2.0, ("A", "D"): -1.0, ("B", "C"): -3.0, ("B", "D"): 0.5, ("C", "D"): 1.0}
EPOCHS = {"A": 10, "B": 20, "C": 20, "D": 30}


def four_models(pairs=FOUR) -> PairTable:
    keys = list(pairs)
    return soups(pairs, epoch_a=[EPOCHS[a] for a, _ in keys], epoch_b=[EPOCHS[b] for _, b in keys],
                 shared_epochs=[min(EPOCHS[a], EPOCHS[b]) for a, b in keys])


def test_transitivity_by_hand_on_four_models():
    t = an.transitivity_analysis(four_models(), n_bins=5)
    # 4 hubs x 3 pairs = 12 hub triples. k = 2 for (A;B,C), (B;A,D), (C;A,D), (D;B,C): all four fail (BC, AD,
    # AD, BC negative). k = 1 for the other 8, whose (B, C) soups are all positive. No hub has k = 0.
    assert t.n_models == 4 and t.n_triples == 12
    assert [(p.k, p.n) for p in t.by_k] == [(0, 0), (8, 8), (0, 4)]
    assert t.n_two_positive == 4 and (t.failure.k, t.failure.n) == (4, 4)
    # Triple shared epochs = min of the three pairs' shared epochs: 10, 10, 10 and 20 (D; B, C).
    assert [(r["bin"].label, r["p_fail"].k, r["p_fail"].n) for r in t.failure_by_shared_epochs] == [
        ("10", 3, 3), ("20", 1, 1)]
    # |epoch_B - epoch_C| of the two non-hub models: 0 (B,C), 20 (A,D), 20 (A,D), 0 (B,C).
    assert [(r["bin"].label, r["p_fail"].k, r["p_fail"].n) for r in t.failure_by_epoch_diff] == [
        ("0", 2, 2), ("20", 2, 2)]
    # (gain(A,B), gain(A,C), gain(B,C)) for the 12 hub triples, listed by hand.
    triples = [(1, 2, -3), (1, -1, .5), (2, -1, 1), (1, -3, 2), (1, .5, -1), (-3, .5, 1), (2, -3, 1), (2, 1, -1),
               (-3, 1, .5), (-1, .5, 1), (-1, 1, 2), (.5, 1, -3)]
    mins = [min(a, b) for a, b, _ in triples]
    means = [(a + b) / 2 for a, b, _ in triples]
    gbc = [c for _, _, c in triples]
    assert t.rho_min.n == 12 and t.rho_min.rho == pytest.approx(stats.spearmanr(mins, gbc)[0])
    assert t.rho_mean.rho == pytest.approx(stats.spearmanr(means, gbc)[0])


def test_transitivity_matches_brute_force_on_five_models_with_a_missing_pair():
    pairs = dict(FOUR)
    pairs.update({("A", "E"): 1.0, ("B", "E"): 1.5, ("C", "E"): -0.5, ("D", "E"): 2.0})
    pairs[("B", "D")] = NAN  # unknown: every triple containing B and D is left out
    t = an.transitivity_analysis(soups(pairs))
    g = {frozenset(k): v for k, v in pairs.items() if not math.isnan(v)}
    counts = {0: [0, 0], 1: [0, 0], 2: [0, 0]}
    n = 0
    for hub in "ABCDE":
        for b, c in itertools.combinations(sorted(set("ABCDE") - {hub}), 2):
            ab, ac, bc = g.get(frozenset((hub, b))), g.get(frozenset((hub, c))), g.get(frozenset((b, c)))
            if ab is None or ac is None or bc is None:
                continue
            n += 1
            k = (ab > 0) + (ac > 0)
            counts[k][0] += bc > 0
            counts[k][1] += 1
    assert t.n_triples == n == 21  # 30 hub triples less the 9 that contain the pair (B, D)
    assert [(p.k, p.n) for p in t.by_k] == [tuple(counts[k]) for k in range(3)]
    assert t.failure_by_shared_epochs == [] and t.failure_by_epoch_diff == []  # epochs unknown


# ------------------------------------------------------------------------------------------------ landscape
def test_mds_distance_matrix_and_embedding():
    names, g = an.gain_matrix(four_models())
    assert names == ["A", "B", "C", "D"]
    d, imputed = an.distance_matrix(g)
    expected = np.array([[0.0, -1.1, -1.2, 1.1],
                         [-1.1, 0.0, 1.3, -1.05],
                         [-1.2, 1.3, 0.0, -1.1],
                         [1.1, -1.05, -1.1, 0.0]])
    np.testing.assert_allclose(d, expected, atol=1e-12)
    assert imputed == 0
    assert an.gain_distance(np.array([0.0, 10.0, -10.0])).tolist() == pytest.approx([0.0, -2.0, 2.0])
    # A missing pair takes the largest known distance (here BC's 1.3).
    missing = dict(FOUR)
    del missing[("C", "D")]
    _, g2 = an.gain_matrix(four_models(missing))
    d2, imputed2 = an.distance_matrix(g2)
    assert imputed2 == 1 and d2[2, 3] == d2[3, 2] == pytest.approx(1.3)
    lm = an.landscape_analysis(four_models(), seed=0)
    assert lm.skipped is None and np.asarray(lm.coordinates).shape == (4, 2)
    assert lm.n_positive_edges == 4 and lm.n_components == 1 and lm.largest_component == 4 and lm.n_isolated == 0
    assert lm.epochs == [10, 20, 20, 30] and lm.stress_1 is not None and lm.stress_1 > 0
    assert an.landscape_analysis(four_models(), seed=0).coordinates == lm.coordinates  # seeded


# ------------------------------------------------------------------------------------------- other analyses
def test_robustness_ensemble_and_interpolation():
    t = random_soups(12, seed=2)
    gain = t.num("acc_gain")
    rng = np.random.default_rng(0)
    corrupted = gain * 0.8 + rng.normal(size=gain.size) * 0.002
    cols = {k: v.tolist() for k, v in t.columns.items()}
    cols.update(c_acc_gain=corrupted.tolist(), c_loss_gain=(t.num("loss_gain") * 2).tolist(),
                c_severity=[3] * len(t), acc_a=[0.8] * len(t), acc_b=[0.7] * len(t),
                soup_acc=(0.8 + gain).tolist(), ensemble_acc=[0.805] * len(t))
    mid = an.midpoint_soups(PairTable.from_columns(cols))
    r = an.robustness_analysis(mid)
    pos = gain > 0
    assert r.skipped is None and r.severity == 3
    assert r.rho_all.rho == pytest.approx(stats.spearmanr(gain, corrupted)[0])
    assert r.r_positive.rho == pytest.approx(stats.pearsonr(gain[pos], corrupted[pos])[0])
    assert (r.positive_clean.k, r.positive_corrupted.k) == (int(pos.sum()), int((corrupted > 0).sum()))
    e = an.ensemble_analysis(mid)
    diff = (gain - 0.005) * 100
    assert e.n == len(t) and e.soup_better.k == int((diff > 1e-9).sum())
    assert e.soup_minus_ensemble_pp["mean"] == pytest.approx(diff.mean())
    assert (e.ensemble_positive.k, e.ensemble_gain_mean_pp) == (len(t), pytest.approx(0.5))

    # Interpolation: one pair at α = 0.25, 0.5, 0.75, one recorded as (b, a): flipped to (1 - α) on A < B.
    rows = [{"row_id": f"i{i}", "status": "ok", "model_a": a, "model_b": b, "alpha": al, "soup_acc": acc,
             "soup_loss": 1 - acc, "acc_a": acc_a, "acc_b": acc_b, "loss_a": 1 - acc_a, "loss_b": 1 - acc_b}
            for i, (a, b, al, acc, acc_a, acc_b) in enumerate([
                ("x", "y", 0.25, 0.70, 0.80, 0.60), ("x", "y", 0.5, 0.50, 0.80, 0.60),
                ("y", "x", 0.25, 0.75, 0.60, 0.80),  # = x/y at α = 0.75
                ("p", "q", 0.5, 0.9, 0.8, 0.8)])]
    it = an.interpolation_analysis(PairTable.from_rows(rows))
    assert it.n_pairs == 1
    p = it.pairs[0]
    assert (p["model_a"], p["model_b"]) == ("x", "y") and p["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert p["acc"].tolist() == [0.80, 0.70, 0.50, 0.75, 0.60]
    assert p["gain_mid_pp"] == pytest.approx(-30) and p["best_alpha"] == 0.75 and p["min_alpha"] == 0.5
    assert (it.sign_agrees.k, it.min_at_midpoint.k) == (1, 1)


def test_midpoint_soups_filters_failed_and_duplicate_rows():
    t = PairTable.from_columns({
        "row_id": ["r3", "r1", "r2", "r4", "r5"], "status": ["ok", "ok", "failed", "ok", "ok"],
        "model_a": ["b", "a", "a", "a", "c"], "model_b": ["a", "b", "c", "c", "c"],
        "alpha": [0.5, 0.5, 0.5, 0.25, 0.5], "acc_gain": [0.02, 0.01, None, 0.03, 0.0]})
    mid = an.midpoint_soups(t)
    # (a, b) twice: the first by row_id (r1) is kept; the failed row, the α = 0.25 row and the self-soup go.
    assert mid.text("row_id").tolist() == ["r1"]
    o = an.overview(t)
    assert (o.n_rows, o.n_ok, o.n_failed, o.n_soups, o.n_models) == (5, 4, 1, 1, 2)
    assert o.alphas == [0.25, 0.5] and o.errors == [{"error": "unknown error", "count": 1}]


# --------------------------------------------------------------------------------------------- degenerate
def test_degenerate_tables_skip_instead_of_failing():
    empty = an.analyse(PairTable.from_columns({}), n_boot=50)
    assert set(empty.skipped) == {"overview", "gain", "shared_epochs", "similarity", "transitivity", "landscape",
                                  "robustness", "interpolation", "ensemble"}
    json.dumps(empty.to_dict())  # still a valid summary (no NaN)

    # No positive soup, one shared-epoch value, a constant metric, no corrupted or ensemble columns.
    pairs = {(a, b): -1.0 - i for i, (a, b) in enumerate(itertools.combinations("ABCD", 2))}
    t = soups(pairs, shared_epochs=[50] * 6, kl=[0.3] * 6)
    r = an.analyse(t, n_boot=50)
    assert r.gain.acc.positive.k == 0
    assert "same number of epochs" in r.shared_epochs.skipped
    kl = next(m for m in r.similarity.metrics if m.name == "kl")
    assert "constant" in kl.rho_all.skipped and kl.rho_all.rho is None
    assert kl.rho_positive.skipped == "no positive soups" and kl.auroc.skipped == "no positive soups"
    assert r.similarity.baseline.skipped == "no positive soups" and r.similarity.best_metric is None
    assert r.transitivity.skipped is None and r.transitivity.failure is None  # triples, none with k = 2
    assert [(p.k, p.n) for p in r.transitivity.by_k] == [(0, 12), (0, 0), (0, 0)]
    assert r.landscape.n_positive_edges == 0 and r.landscape.n_isolated == 4
    assert "c_acc_gain" in r.robustness.skipped and "ensemble_acc" in r.ensemble.skipped
    assert "more than one α" in r.interpolation.skipped

    two = an.analyse(soups({("A", "B"): 1.0}), n_boot=50)
    assert "3" in two.transitivity.skipped and "3" in two.landscape.skipped
    assert two.gain.acc.positive.k == 1 and "unknown" in two.shared_epochs.skipped

    every = an.analyse(soups({(a, b): 1.0 for a, b in itertools.combinations("ABC", 2)}), n_boot=50)
    assert every.similarity.baseline is None  # shared epochs unknown
    assert every.transitivity.failure.k == 0 and every.transitivity.failure.n == 3


# ------------------------------------------------------------------------------------------------- report
def synthetic_study(folder: Path, n_epochs: int = 5, n_variants: int = 3, seed: int = 0) -> Path:
    """A study folder in the exact layout and schema of `hfsoup study run` (written with its store)."""
    rng = np.random.default_rng(seed)
    models = [{"name": f"e{10 * (i + 1):03d}-v{v}", "repo": f"org/zoo-e{10 * (i + 1)}-v{v}", "commit": "c" * 40,
               "sha": f"{i}{v}" * 8, "epoch": 10 * (i + 1), "variant": v, "kind": "branch",
               "acc": float(0.7 + rng.random() * 0.1), "loss": float(1 + rng.random()), "c_acc": 0.4, "c_loss": 2.5}
              for i in range(n_epochs) for v in range(1, n_variants + 1)]
    rows = []
    for i, (a, b) in enumerate(itertools.combinations(models, 2)):
        shared = min(a["epoch"], b["epoch"])
        alphas = [0.0, 0.25, 0.5, 0.75, 1.0] if i < 3 else [0.5]
        for alpha in alphas:
            gain = (shared - 30) / 1000 + rng.normal() * 0.01 - 0.04 * (1 - abs(2 * alpha - 1)) + 0.04 * (alpha == .5)
            best = max(a["acc"], b["acc"])
            soup_acc = min(1.0, max(0.01, best + gain))
            soup_loss = min(a["loss"], b["loss"]) - gain * 3
            c_gain = gain * 0.9 + rng.normal() * 0.002
            rows.append({
                "row_id": f"{i:05d}-{alpha}", "status": "ok", "error": None, "model_a": a["name"],
                "model_b": b["name"], "repo_a": a["repo"], "repo_b": b["repo"], "commit_a": a["commit"],
                "commit_b": b["commit"], "sha_a": a["sha"], "sha_b": b["sha"], "epoch_a": a["epoch"],
                "epoch_b": b["epoch"], "variant_a": a["variant"], "variant_b": b["variant"], "kind_a": "branch",
                "kind_b": "branch", "shared_epochs": shared, "alpha": alpha, "acc_a": a["acc"], "loss_a": a["loss"],
                "acc_b": b["acc"], "loss_b": b["loss"], "soup_acc": soup_acc, "soup_loss": soup_loss,
                "acc_gain": soup_acc - best, "loss_gain": min(a["loss"], b["loss"]) - soup_loss,
                "collapsed": soup_acc < 0.05, "l2": float(60 - shared / 2 + rng.random()),
                "cosine": float(0.9 + shared / 1000), "kl": float(np.exp(-shared / 20) + rng.random() * 0.05),
                "mse": float(2 - shared / 50 + rng.random() * 0.1), "cka_logits": float(0.8 + rng.random() * 0.1),
                "cka_features": float(0.7 + shared / 500), "disagreement": float(0.3 - shared / 500),
                "ensemble_acc": best + 0.01, "c_acc_a": 0.4, "c_loss_a": 2.5, "c_acc_b": 0.4, "c_loss_b": 2.5,
                "c_soup_acc": 0.4 + c_gain, "c_soup_loss": 2.5 - c_gain, "c_acc_gain": c_gain,
                "c_loss_gain": c_gain * 2, "c_severity": 3, "test_fingerprint": "f" * 16,
                "corrupted_fingerprint": "g" * 16, "finished_at": 1000.0 + i})
    rows.append({"row_id": "zzzzz", "status": "failed", "error": "RuntimeError: out of memory\ntraceback…",
                 "model_a": models[0]["name"], "model_b": models[-1]["name"], "alpha": 0.25})
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "pairs.parquet", rows, order_by=("row_id",))
    write_table(folder / "models.parquet", models, order_by=("name",))
    (folder / "study.json").write_text(json.dumps({
        "dataset": "https://huggingface.co/datasets/uoft-cs/cifar100", "alphas": [0, 0.25, 0.5, 0.75, 1],
        "severity": 3, "corruptions": ["gaussian_noise", "fog"], "num_classes": 100}))
    return folder


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    from hfsoup.study.report import write_report

    study = synthetic_study(tmp_path_factory.mktemp("study") / "study")
    return study, write_report(study, n_boot=200, svg=False)  # SVG: see test_figures_are_deterministic


def test_report_writes_every_figure_and_a_self_contained_html(full_report):
    from hfsoup.study.figures import FIGURES

    study, res = full_report
    assert res.out == study / "report" and res.skipped == {}
    assert sorted(p.name for p in (res.out / "figures").iterdir()) == sorted(f"{name}.png" for name in FIGURES)
    for name in FIGURES:
        assert (res.out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = res.report_html.read_text()
    assert "http://" not in page and "https://" not in page  # the dataset URL in study.json is defused
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "<script" not in page and "<link" not in page
    md = res.report_md.read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md
    assert "What none of these analyses shows" in md and "paper" in md
    for section in ("1. Soup gain", "2. Shared epochs", "3. Similarity", "4. Transitivity", "5. The landscape",
                    "6. Robustness", "7. Interpolation", "8. Soup vs ensemble"):
        assert section in md


def test_summary_json_holds_the_numbers(full_report):
    study, res = full_report
    summary = json.loads(res.summary_json.read_text())
    assert summary == res.summary
    assert summary["parameters"] == {"seed": 0, "n_boot": 200} and summary["study"]["severity"] == 3
    a = summary["analyses"]
    t = an.PairTable.from_columns(pq.read_table(study / "pairs.parquet").to_pydict())
    mid = an.midpoint_soups(t)
    gain = mid.num("acc_gain") * 100
    assert a["overview"]["n_soups"] == 105 and a["overview"]["n_failed"] == 1 and a["overview"]["n_models"] == 15
    assert a["gain"]["acc"]["positive"]["k"] == int((gain > 1e-9).sum())
    kl = next(m for m in a["similarity"]["metrics"] if m["name"] == "kl")
    assert kl["rho_all"]["rho"] == pytest.approx(stats.spearmanr(mid.num("kl"), gain)[0])
    assert kl["auroc"]["auc"] == pytest.approx(roc_auc_score(gain > 1e-9, -mid.num("kl")))
    assert a["interpolation"]["n_pairs"] == 3 and a["robustness"]["severity"] == 3
    assert a["transitivity"]["n_triples"] == 15 * 91
    assert summary["paper"]["kl_rho_all"]["value"] == -0.86
    assert {h["finding"] for h in summary["headline"]} >= {"soups with a positive accuracy gain",
                                                            "Spearman ρ(KL, gain), all soups"}
    # every number of the headline table is in the summary
    md = res.report_md.read_text()
    for h in summary["headline"]:
        assert f"| {h['finding'].replace('|', chr(92) + '|')} | {h['ours'].replace('|', chr(92) + '|')} |" in md
    assert "NaN" not in res.summary_json.read_text()


def test_report_refuses_to_overwrite_and_force_replaces(tmp_path):
    from hfsoup.study.report import write_report

    study = tmp_path / "tiny"
    study.mkdir()
    write_table(study / "pairs.parquet", [
        {"row_id": "r1", "status": "ok", "model_a": "a", "model_b": "b", "alpha": 0.5, "acc_gain": 0.01,
         "loss_gain": -0.1, "shared_epochs": 10}])
    res = write_report(study, tmp_path / "rep", n_boot=50, svg=False)
    first = res.summary_json.read_bytes()
    assert res.skipped.keys() >= {"transitivity", "landscape", "shared_epochs", "robustness"}
    md = res.report_md.read_text()
    assert md.count("**Not enough data for this analysis:**") >= 5
    assert sorted(p.name for p in (res.out / "figures").iterdir()) == ["gain_cdf.png"]  # the only one it supports
    with pytest.raises(OutputExistsError):
        write_report(study, tmp_path / "rep")
    (res.out / "stale.txt").write_text("x")
    res2 = write_report(study, tmp_path / "rep", force=True, n_boot=50, svg=False)
    assert not (res2.out / "stale.txt").exists()
    assert res2.summary_json.read_bytes() == first  # same table, same seed: same bytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(HfSoupError, match="no pairs.parquet"):
        write_report(tmp_path / "nothing", tmp_path / "rep2")


def test_figures_are_deterministic(tmp_path):
    from hfsoup.study import figures

    r = an.analyse(four_models(), n_boot=50)
    a = figures.gain_cdf(r.gain, tmp_path / "a")
    b = figures.gain_cdf(r.gain, tmp_path / "b")
    assert [p.name for p in a] == ["gain_cdf.png", "gain_cdf.svg"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert b"Software" not in a[0].read_bytes() and b"<dc:date>" not in a[1].read_bytes()


def test_modules_import_neither_torch_nor_matplotlib():
    code = ("import sys; import hfsoup.study.analysis as an, hfsoup.study.figures, hfsoup.study.report;"
            "bad = [m for m in ('torch', 'matplotlib', 'timm') if m in sys.modules]; assert not bad, bad;"
            "t = an.PairTable.from_columns({'model_a': ['a', 'a', 'b'], 'model_b': ['b', 'c', 'c'],"
            " 'acc_gain': [0.01, -0.02, 0.03], 'kl': [0.1, 0.5, 0.2], 'shared_epochs': [10, 20, 10]});"
            "an.analyse(t, n_boot=20); assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules;"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_cli_study_report_prints_the_headline_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    """The CLI wiring (figures are tested above: drawing them here again would only cost time)."""
    from hfsoup.cli import main
    from hfsoup.study import figures

    drawn = []
    monkeypatch.setattr(figures, "write_figures", lambda analysis, folder, svg=True: drawn.append(svg) or {})
    study = synthetic_study(tmp_path / "study", n_epochs=3, n_variants=3)
    assert main(["study", "report", str(study), "--n-boot", "20", "--no-svg", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((study / "report" / "summary.json").read_text())
    assert summary["headline"] == saved["headline"] and summary["headline"]
    assert drawn == [False]  # --no-svg reached the report
    assert main(["study", "report", str(study), "--n-boot", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]
    assert main(["study", "report", str(study), "--out", str(tmp_path / "r2"), "--n-boot", "0"]) == 2
    assert "--n-boot" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
