"""The analyses of the pair study (paper "When is model souping tasty?", §2 and appendix A.3–A.6; SPEC §5).

Every analysis reads the study table (``pairs.parquet`` of ``hfsoup study run``, as a :class:`PairTable`) and
returns a typed result whose ``to_dict()`` holds every number the report prints. Nothing here evaluates a model:
numpy, scipy and scikit-learn only (no torch, no plotting), so the analyses are fast and testable on hand-made
tables.

Conventions, shared by all analyses:

* only ``status == "ok"`` rows are analysed; the soup analyses use the midpoint soups (α = 0.5), one per unordered
  pair (a pair recorded twice, e.g. as (a, b) and (b, a), counts once: the first by ``row_id``);
* accuracy gains are reported in percentage points (``_pp``: the table's fractions × 100), loss gains in nats;
* a soup is *positive* when its gain is > 0; a gain of exactly 0 (the soup ties its better ingredient, common on
  small test sets) is not positive;
* proportions come with 95 % Wilson score intervals; AUROCs with seeded percentile-bootstrap intervals;
* an analysis without enough data (no triples, no positive soups, no corrupted columns, fewer than two
  shared-epoch bins, a constant column) returns a result whose ``skipped`` says why, instead of raising.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "ALPHA_MID", "ACC_THRESHOLDS_PP", "LOSS_THRESHOLDS", "QUANTILES", "METRICS", "BASELINE", "PAPER", "Metric",
    "PairTable", "Proportion", "Correlation", "AurocResult", "AurocDifference", "Bin",
    "wilson_interval", "proportion", "spearman", "pearson", "ecdf", "make_bins", "assign_bins", "auroc",
    "bootstrap_auroc", "gain_matrix", "gain_distance", "distance_matrix", "hub_triples", "jsonable",
    "midpoint_soups", "Overview", "GainDistribution", "GainStats", "SharedEpochsAnalysis", "EpochCurves",
    "SimilarityAnalysis", "MetricResult", "TransitivityAnalysis", "LandscapeAnalysis", "RobustnessAnalysis",
    "InterpolationAnalysis", "EnsembleAnalysis", "StudyAnalysis",
    "overview", "gain_distribution", "shared_epochs_analysis", "similarity_analysis", "transitivity_analysis",
    "landscape_analysis", "robustness_analysis", "interpolation_analysis", "ensemble_analysis", "analyse",
]

ALPHA_MID = 0.5
"""The α of the midpoint soup, the paper's summary of a pair."""

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Quantile levels of the gain reported per shared-epoch bin (paper Fig. A3)."""

ACC_THRESHOLDS_PP = (-5.0, -1.0, 0.0, 0.5)
"""The k of P(accuracy gain > k) in points (paper Fig. 2: "almost no soups drop accuracy by more than 5 %", "peak
gains (> 0.5 %)")."""

LOSS_THRESHOLDS = (-0.5, -0.1, 0.0, 0.05)
"""The k of P(loss gain > k) in nats (paper Fig. A3, loss-based gain of "Too Salty")."""

Z95 = 1.959963984540054
_TOL = 1e-9  # in points or nats: a gain within rounding of 0 (a tie computed two ways) is not positive


@dataclass(frozen=True)
class Metric:
    """A similarity column of the study table: ``higher_is_similar`` orients it (AUROC scores are oriented so that
    a higher score means "more likely a positive soup": similar pairs are expected to soup)."""

    name: str
    label: str
    unit: str
    higher_is_similar: bool

    @property
    def orientation(self) -> str:
        return f"higher {self.name} = more similar" if self.higher_is_similar else f"lower {self.name} = more similar"

    @property
    def score(self) -> str:
        """How the AUROC score is made from the column."""
        return self.name if self.higher_is_similar else f"-{self.name}"


METRICS = (
    Metric("l2", "L2 distance of the weights", "", False),
    Metric("cosine", "cosine similarity of the weights", "", True),
    Metric("kl", "symmetric KL of the outputs", "nats", False),
    Metric("mse", "MSE of the logits", "", False),
    Metric("cka_logits", "linear CKA of the logits", "", True),
    Metric("cka_features", "linear CKA of the features", "", True),
    Metric("disagreement", "top-1 disagreement", "fraction", False),
)
"""The similarity columns of ``pairs.parquet``, in report order."""

BASELINE = Metric("shared_epochs", "shared epochs", "epochs", True)
"""The baseline predictor of a positive soup: the shared epochs alone (more shared training, more soupable)."""

PAPER: dict[str, Any] = {
    "zoo": "ResNet-50 on CIFAR-100, 104 models (26 branch epochs x 4 variants), 5,356 midpoint soups",
    "fraction_positive": {"value": 0.14, "where": "§2.1, Fig. 1 (14.25 % in A.1)"},
    "p_positive_late": {"value": 0.80, "where": "§2.1, Fig. 2: P(gain > 0) ≈ 80 % past 260 shared epochs"},
    "collapse_late": {"value": 0.0, "where": "Fig. A5: collapse (soup < 5 % accuracy) never past 250 shared epochs"},
    "kl_rho_all": {"value": -0.86, "where": "§2.2, Fig. 3: Spearman(KL, gain), all soups"},
    "kl_rho_positive": {"value": 0.39, "where": "§2.2, Fig. 4: Spearman(KL, gain), positive soups"},
    "shared_epochs_kl_rho": {"value": -0.67, "where": "§2.2, Fig. A6: Spearman(shared epochs, KL)"},
    "transitivity_rho_min": {"value": 0.64, "where": "§2.3, Fig. A11: Spearman(gain(B,C), min(gain(A,B), gain(A,C)))"},
    "transitivity_rho_mean": {"value": 0.49, "where": "Fig. A11: the same with the mean of the two gains"},
    "table4": {"where": "Table 4: transitivity failure vs shared epochs (ABC)",
               "rows": [{"bin": "150–180", "n": 2294, "p_fail": 0.071}, {"bin": "180–200", "n": 1887, "p_fail": 0.075},
                        {"bin": "200–220", "n": 1657, "p_fail": 0.119}, {"bin": "220–240", "n": 1244, "p_fail": 0.104},
                        {"bin": "240–300", "n": 1369, "p_fail": 0.055}]},
    "table5": {"where": "Table 5: transitivity failure vs branch-epoch difference |B − C| (shared epochs 200–220)",
               "rows": [{"bin": "0–10", "n": 792, "p_fail": 0.124}, {"bin": "10–20", "n": 497, "p_fail": 0.123},
                        {"bin": "20–30", "n": 419, "p_fail": 0.124}, {"bin": "30–50", "n": 578, "p_fail": 0.080},
                        {"bin": "50–100", "n": 369, "p_fail": 0.100}]},
    "corrupted_rho_all": {"value": 0.99, "where": "§2.4, Fig. A12: Spearman(clean gain, corrupted gain), all soups"},
    "corrupted_r_positive": {"value": 0.61,
                             "where": "§2.4, Fig. A14: positive soups (Pearson in the text, Spearman in the caption)"},
}
"""The paper's reference figures, shown beside ours and labelled as the paper's (its zoo, not this one)."""


# --------------------------------------------------------------------------------------------------------- json
def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses/``to_dict`` objects expanded, numpy values as Python numbers,
    non-finite floats as None (JSON has no NaN), tuples as lists, dict keys as strings."""
    if hasattr(obj, "to_dict") and not isinstance(obj, type):
        return jsonable(obj.to_dict())
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def _num(x: Any) -> float | None:
    """A finite float or None."""
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


class _Result:
    """Base of the analysis results: ``to_dict()`` holds the summary fields (fields marked
    ``metadata={"summary": False}`` carry plot data only and stay out of ``summary.json``)."""

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.metadata.get("summary", True)}


def _plot_field() -> Any:
    return field(default_factory=dict, repr=False, compare=False, metadata={"summary": False})


# --------------------------------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95 % by default); (nan, nan) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamped so that lo ≤ p ≤ hi holds exactly despite rounding (at p = 0 or 1 the interval touches p).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with the 95 % Wilson interval [lo, hi] (all None when n = 0)."""

    k: int
    n: int

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "p": _num(self.p), "lo": _num(lo), "hi": _num(hi)}


def proportion(mask: np.ndarray, where: np.ndarray | None = None) -> Proportion:
    """Proportion of True in boolean ``mask`` over the rows selected by ``where`` (all rows by default)."""
    mask = np.asarray(mask, dtype=bool)
    if where is not None:
        mask = mask[np.asarray(where, dtype=bool)]
    return Proportion(int(mask.sum()), int(mask.size))


@dataclass(frozen=True)
class Correlation:
    """A rank (Spearman) or linear (Pearson) correlation over the n rows where both values are finite."""

    method: str
    rho: float | None
    p_value: float | None
    n: int
    skipped: str | None = None

    def to_dict(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


def _correlation(x: Any, y: Any, method: str, names: tuple[str, str]) -> Correlation:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3:
        return Correlation(method, None, None, n, f"fewer than 3 pairs with both {names[0]} and {names[1]} ({n})")
    for values, name in ((x, names[0]), (y, names[1])):
        if np.all(values == values[0]):
            return Correlation(method, None, None, n, f"{name} is constant over the {n} pairs")
    from scipy import stats

    res = stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)
    return Correlation(method, float(res[0]), float(res[1]), n)


def spearman(x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> Correlation:
    """Spearman ρ (scipy.stats.spearmanr) over the rows where both are finite; skipped below 3 rows or when either
    side is constant (ρ is undefined)."""
    return _correlation(x, y, "spearman", names)


def pearson(x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> Correlation:
    """Pearson r (scipy.stats.pearsonr), with the same rules as :func:`spearman`."""
    return _correlation(x, y, "pearson", names)


def ecdf(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: the sorted finite values x and F(x) = (i + 1) / n, the fraction of values ≤ x[i]."""
    x = np.sort(np.asarray(values, dtype=float)[np.isfinite(np.asarray(values, dtype=float))])
    return x, np.arange(1, x.size + 1) / max(x.size, 1)


def _quantiles(values: np.ndarray, levels: Sequence[float] = QUANTILES) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    return {f"q{round(q * 100):02d}": (_num(np.quantile(values, q)) if values.size else None) for q in levels}


# ------------------------------------------------------------------------------------------------------- binning
@dataclass(frozen=True)
class Bin:
    """A bin of a numeric column: values v with lo ≤ v < hi, or lo ≤ v ≤ hi for the last bin (one-value bins have
    lo == hi)."""

    label: str
    lo: float
    hi: float
    last: bool = False

    @property
    def centre(self) -> float:
        return (self.lo + self.hi) / 2

    def to_dict(self) -> dict:
        return {"label": self.label, "lo": _num(self.lo), "hi": _num(self.hi)}


def _fmt_edge(x: float) -> str:
    return f"{x:g}"


def make_bins(values: Any, max_bins: int) -> list[Bin]:
    """Bins for ``values`` (non-finite ignored): one bin per distinct value when there are at most ``max_bins``
    (the paper's shared epochs come in steps of 10), else up to ``max_bins`` equal-count bins [lo, hi) whose edges
    are quantiles of the values (ties can merge edges, so there may be fewer)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    distinct = np.unique(v)
    if distinct.size <= max_bins:
        return [Bin(_fmt_edge(x), float(x), float(x), last=i == distinct.size - 1) for i, x in enumerate(distinct)]
    edges = np.unique(np.quantile(v, np.linspace(0, 1, max_bins + 1), method="lower"))
    if edges.size < 2:
        return [Bin(_fmt_edge(edges[0]), float(edges[0]), float(edges[0]), last=True)]
    return [Bin(f"{_fmt_edge(lo)}–{_fmt_edge(hi)}", float(lo), float(hi), last=i == edges.size - 2)
            for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]


def assign_bins(values: Any, bins: Sequence[Bin]) -> np.ndarray:
    """Index of each value's bin in ``bins`` (-1 for non-finite values and values outside every bin)."""
    v = np.asarray(values, dtype=float)
    out = np.full(v.shape, -1, dtype=np.int64)
    for i, b in enumerate(bins):
        if b.lo == b.hi:
            inside = v == b.lo
        else:
            inside = (v >= b.lo) & ((v <= b.hi) if b.last else (v < b.hi))
        out[inside & (out < 0)] = i
    return out


# --------------------------------------------------------------------------------------------------------- table
class PairTable:
    """Columns of the study table as numpy arrays (object arrays, ``None`` for nulls), as read from
    ``pairs.parquet`` or built by hand (tests): ``PairTable.from_columns({"model_a": [...], ...})``.

    A missing ``status`` column means every row is ok; a missing ``alpha`` column means every row is a midpoint.
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]]):
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.n = next(iter(lengths.values()), 0)
        self.columns: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            arr = np.empty(self.n, dtype=object)
            arr[:] = list(values)
            self.columns[name] = arr

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> PairTable:
        return cls(columns)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> PairTable:
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        return cls({name: [row.get(name) for row in rows] for name in names})

    def __len__(self) -> int:
        return self.n

    def has(self, name: str) -> bool:
        """Whether the column exists and holds at least one non-null value."""
        col = self.columns.get(name)
        return col is not None and any(v is not None for v in col)

    def num(self, name: str) -> np.ndarray:
        """The column as float64, NaN for nulls, non-numbers and a missing column."""
        col = self.columns.get(name)
        if col is None:
            return np.full(self.n, np.nan)
        out = np.full(self.n, np.nan)
        for i, v in enumerate(col):
            if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
                out[i] = float(v)
        return out

    def text(self, name: str) -> np.ndarray:
        """The column as an object array of str (None for nulls and a missing column)."""
        col = self.columns.get(name)
        if col is None:
            return np.full(self.n, None, dtype=object)
        out = np.empty(self.n, dtype=object)
        out[:] = [None if v is None else str(v) for v in col]
        return out

    def take(self, index: Any) -> PairTable:
        """The rows selected by a boolean mask or an index array."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return PairTable({name: col[index].tolist() for name, col in self.columns.items()})

    def ok(self) -> PairTable:
        """The ``status == "ok"`` rows (all rows when there is no status column)."""
        if "status" not in self.columns:
            return self
        return self.take(self.text("status") == "ok")


def _is_mid(alpha: np.ndarray) -> np.ndarray:
    return np.isnan(alpha) | (np.abs(alpha - ALPHA_MID) < 1e-6)


def midpoint_soups(table: PairTable) -> PairTable:
    """The ok midpoint soups (α = 0.5; a table without α counts as all midpoints), one row per unordered pair of
    distinct models: the first by ``row_id`` when a pair was recorded twice; a model souped with itself is dropped."""
    ok = table.ok()
    mid = _is_mid(ok.num("alpha")) if "alpha" in ok.columns else np.ones(len(ok), dtype=bool)
    a, b = ok.text("model_a"), ok.text("model_b")
    order = np.argsort(ok.text("row_id").astype(str), kind="stable") if "row_id" in ok.columns else range(len(ok))
    seen: set[tuple[str, str]] = set()
    keep = []
    for i in order:
        if not mid[i] or a[i] is None or b[i] is None or a[i] == b[i]:
            continue
        key = (min(a[i], b[i]), max(a[i], b[i]))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ok.take(np.array(sorted(keep), dtype=np.int64))


def _greater(gain: np.ndarray, k: float = 0.0) -> np.ndarray:
    """gain > k beyond rounding (gain in points or nats); NaN is never greater."""
    return np.nan_to_num(np.asarray(gain, dtype=float), nan=-np.inf) > k + _TOL


def _positive(gain: np.ndarray) -> np.ndarray:
    """A positive soup: gain (points or nats) > 0; a tie is not positive."""
    return _greater(gain, 0.0)


# ------------------------------------------------------------------------------------------------------ overview
@dataclass
class Overview(_Result):
    """What the table holds: rows, failures, midpoint soups, models, α values, the ingredients' accuracies."""

    n_rows: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_soups: int = 0
    n_models: int = 0
    alphas: list[float] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    ingredient_acc: dict = field(default_factory=dict)
    has_corrupted: bool = False
    has_shared_epochs: bool = False
    skipped: str | None = None


def _model_values(mid: PairTable, column: str) -> dict[str, float]:
    """Per-model value of a per-ingredient column pair (``acc`` → ``acc_a`` / ``acc_b``), first finite one."""
    out: dict[str, float] = {}
    for side in ("a", "b"):
        names, values = mid.text(f"model_{side}"), mid.num(f"{column}_{side}")
        for name, value in zip(names, values):
            if name is not None and math.isfinite(value) and name not in out:
                out[name] = float(value)
    return out


def _models(mid: PairTable) -> list[str]:
    return sorted({m for side in ("a", "b") for m in mid.text(f"model_{side}") if m is not None})


def overview(table: PairTable, mid: PairTable | None = None) -> Overview:
    """Counts of the table: rows, ok and failed rows (with the most frequent errors), midpoint soups, models."""
    mid = midpoint_soups(table) if mid is None else mid
    status = table.text("status") if "status" in table.columns else np.full(len(table), "ok", dtype=object)
    failed = status == "failed"
    errors: dict[str, int] = {}
    for e in table.text("error")[failed]:
        key = (e or "unknown error").splitlines()[0][:200]
        errors[key] = errors.get(key, 0) + 1
    alphas = table.ok().num("alpha")
    accs = np.array(list(_model_values(mid, "acc").values()), dtype=float)
    return Overview(
        n_rows=len(table), n_ok=int((status == "ok").sum()), n_failed=int(failed.sum()), n_soups=len(mid),
        n_models=len(_models(mid)),
        alphas=sorted({round(float(a), 6) for a in alphas if math.isfinite(a)}) or ([ALPHA_MID] if len(mid) else []),
        errors=[{"error": k, "count": v} for k, v in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:5]],
        ingredient_acc=({"min": _num(accs.min()), "median": _num(np.median(accs)), "max": _num(accs.max())}
                        if accs.size else {}),
        has_corrupted=mid.has("c_acc_gain"), has_shared_epochs=mid.has("shared_epochs"),
        skipped=None if len(mid) else "no ok midpoint (α = 0.5) soups in the table")


# ---------------------------------------------------------------------------------------------- 1. soup gain
@dataclass
class GainStats(_Result):
    """Distribution of one gain (accuracy in points, or loss in nats) over the soups."""

    unit: str = ""
    n: int = 0
    positive: Proportion | None = None
    fraction_zero: float | None = None
    mean: float | None = None
    quantiles: dict = field(default_factory=dict)
    min: float | None = None
    max: float | None = None
    greater_than: list[dict] = field(default_factory=list)
    skipped: str | None = None


def _gain_stats(gain: np.ndarray, unit: str, thresholds: Sequence[float]) -> GainStats:
    g = gain[np.isfinite(gain)]
    if g.size == 0:
        return GainStats(unit=unit, skipped="no finite gains")
    return GainStats(
        unit=unit, n=int(g.size), positive=proportion(_positive(g)), fraction_zero=float(np.mean(np.abs(g) <= _TOL)),
        mean=_num(g.mean()), quantiles=_quantiles(g), min=_num(g.min()), max=_num(g.max()),
        greater_than=[{"k": k, "p": proportion(_greater(g, k))} for k in thresholds])


@dataclass
class GainDistribution(_Result):
    """Analysis 1 (paper Fig. 1): the empirical CDF of the soup gain, the fraction positive, the collapse rate."""

    n: int = 0
    acc: GainStats | None = None
    loss: GainStats | None = None
    collapse: Proportion | None = None
    skipped: str | None = None
    plot: dict = _plot_field()


def _acc_gain_pp(mid: PairTable) -> np.ndarray:
    return mid.num("acc_gain") * 100.0


def gain_distribution(mid: PairTable, *, acc_thresholds: Sequence[float] = ACC_THRESHOLDS_PP,
                      loss_thresholds: Sequence[float] = LOSS_THRESHOLDS) -> GainDistribution:
    """CDF of the accuracy gain (points) and loss gain (nats) of the midpoint soups, with the fraction positive
    (Wilson interval), quantiles, P(gain > k) and the fraction of collapsed soups (``collapsed`` column)."""
    g = _acc_gain_pp(mid)
    if not np.isfinite(g).any():
        return GainDistribution(skipped="no soups with an accuracy gain")
    lg = mid.num("loss_gain")
    collapsed = mid.num("collapsed")
    has_c = np.isfinite(collapsed)
    return GainDistribution(
        n=int(np.isfinite(g).sum()), acc=_gain_stats(g, "points", acc_thresholds),
        loss=_gain_stats(lg, "nats", loss_thresholds) if np.isfinite(lg).any() else None,
        collapse=proportion(collapsed[has_c] > 0) if has_c.any() else None,
        plot={"acc": ecdf(g), "loss": ecdf(lg)})


# --------------------------------------------------------------------------------------------- 2. shared epochs
@dataclass
class EpochCurves(_Result):
    """One gain against the shared-epoch bins: P(gain > k) per bin for each k, quantiles, mean, mean of positive."""

    unit: str = ""
    greater_than: list[dict] = field(default_factory=list)
    quantiles: dict = field(default_factory=dict)
    mean: list[float | None] = field(default_factory=list)
    mean_positive: list[float | None] = field(default_factory=list)


def _epoch_curves(gain: np.ndarray, idx: np.ndarray, nbins: int, unit: str,
                  thresholds: Sequence[float]) -> EpochCurves:
    groups = [gain[(idx == i) & np.isfinite(gain)] for i in range(nbins)]
    quant = {f"q{round(q * 100):02d}": [_num(np.quantile(g, q)) if g.size else None for g in groups]
             for q in QUANTILES}
    return EpochCurves(
        unit=unit,
        greater_than=[{"k": k, "by_bin": [proportion(_greater(g, k)) for g in groups]}
                      for k in thresholds],
        quantiles=quant, mean=[_num(g.mean()) if g.size else None for g in groups],
        mean_positive=[_num(g[_positive(g)].mean()) if _positive(g).any() else None for g in groups])


@dataclass
class SharedEpochsAnalysis(_Result):
    """Analysis 2 (paper Fig. 2, A3–A5): P(gain > k) with 95 % intervals, quantiles, mean gain and collapse rate
    against the shared epochs of the pair (the smaller branch epoch), for the accuracy and the loss gain."""

    bins: list[Bin] = field(default_factory=list)
    n_by_bin: list[int] = field(default_factory=list)
    acc: EpochCurves | None = None
    loss: EpochCurves | None = None
    collapse: list[Proportion] | None = None
    positive_by_bin: list[Proportion] = field(default_factory=list)
    last_bin_positive: Proportion | None = None
    rho_acc: Correlation | None = None
    rho_loss: Correlation | None = None
    skipped: str | None = None


def shared_epochs_analysis(mid: PairTable, *, acc_thresholds: Sequence[float] = ACC_THRESHOLDS_PP,
                           loss_thresholds: Sequence[float] = LOSS_THRESHOLDS,
                           max_bins: int = 30) -> SharedEpochsAnalysis:
    """The gains against the shared epochs, binned with :func:`make_bins` (one bin per distinct value up to
    ``max_bins``). Skipped when the shared epochs are unknown or take fewer than two values."""
    shared = mid.num("shared_epochs")
    g = _acc_gain_pp(mid)
    known = np.isfinite(shared) & np.isfinite(g)
    if not known.any():
        return SharedEpochsAnalysis(skipped="the shared epochs of the pairs are unknown (models without a branch "
                                            "epoch, e.g. not from a zoo)")
    bins = make_bins(shared[known], max_bins)
    if len(bins) < 2:
        return SharedEpochsAnalysis(bins=bins, skipped=f"every pair shares the same number of epochs "
                                                       f"({bins[0].label}): no trend to show")
    idx = np.where(known, assign_bins(shared, bins), -1)
    lg = mid.num("loss_gain")
    collapsed = mid.num("collapsed")
    pos = _positive(g)
    positive_by_bin = [proportion(pos, idx == i) for i in range(len(bins))]
    return SharedEpochsAnalysis(
        bins=bins, n_by_bin=[int((idx == i).sum()) for i in range(len(bins))],
        acc=_epoch_curves(g, idx, len(bins), "points", acc_thresholds),
        loss=(_epoch_curves(lg, idx, len(bins), "nats", loss_thresholds) if np.isfinite(lg[known]).any()
              else None),
        collapse=([proportion(collapsed > 0, (idx == i) & np.isfinite(collapsed)) for i in range(len(bins))]
                  if np.isfinite(collapsed[known]).any() else None),
        positive_by_bin=positive_by_bin, last_bin_positive=positive_by_bin[-1],
        rho_acc=spearman(shared, g, ("shared epochs", "accuracy gain")),
        rho_loss=spearman(shared, lg, ("shared epochs", "loss gain")))


# --------------------------------------------------------------------------------------------- 3. similarity
def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (sklearn.metrics.roc_auc_score); NaN when the
    labels hold one class only."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def _weighted_auc(score: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for ``labels`` under each row of ``weights`` (B, n): row b counts item i weights[b, i]
    times, so a bootstrap resample is its vector of multiplicities. Rank-sum (Mann–Whitney) form with ties counted
    one half, as roc_auc_score: sort once, then per tie group the weight of negatives below it. Items with a NaN
    score are left out; a row with a single class gives NaN."""
    keep = np.isfinite(score)
    out = np.full(weights.shape[0], np.nan)
    if not keep.any():
        return out
    order = np.argsort(score[keep], kind="stable")
    s, y, w = score[keep][order], labels[keep][order], weights[:, keep][:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    wp = w * y
    pos = np.add.reduceat(wp, starts, axis=1)
    neg = np.add.reduceat(w - wp, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n1, n0 = pos.sum(axis=1), neg.sum(axis=1)
    valid = (n1 > 0) & (n0 > 0)
    out[valid] = (pos * (below + 0.5 * neg)).sum(axis=1)[valid] / (n1 * n0)[valid]
    return out


def bootstrap_auroc(scores: Sequence[Any], labels: Any, *, n_boot: int = 1000, seed: int = 0,
                    chunk: int = 250) -> list[np.ndarray]:
    """AUROC of each score vector in ``scores`` on ``n_boot`` bootstrap resamples of the rows, the same resamples
    for every vector (differences are paired). The resamples are drawn in chunks of ``chunk`` as
    ``numpy.random.default_rng(seed).integers(0, n, size=(chunk, n))`` (row indices with replacement); within a
    resample, rows where a vector is NaN are left out of that vector's AUROC; a resample with a single class gives
    NaN."""
    labels = np.asarray(labels, dtype=bool)
    vectors = [np.asarray(s, dtype=float) for s in scores]
    n = labels.size
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in vectors]
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        flat = (np.arange(size)[:, None] * n + idx).ravel()
        weights = np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        for part, v in zip(parts, vectors):
            part.append(_weighted_auc(v, labels, weights))
        done += size
    return [np.concatenate(p) if p else np.empty(0) for p in parts]


def _percentile_ci(samples: np.ndarray) -> tuple[float | None, float | None]:
    s = samples[np.isfinite(samples)]
    if s.size < 10:
        return None, None
    return _num(np.percentile(s, 2.5)), _num(np.percentile(s, 97.5))


@dataclass(frozen=True)
class AurocResult:
    """How well a score ranks positive soups above the others: AUROC (0.5 = chance, 1 = perfect), with a 95 %
    percentile-bootstrap interval. ``score`` says how the column was oriented (``-kl``: lower KL ranks higher)."""

    score: str
    auc: float | None
    lo: float | None
    hi: float | None
    n: int
    n_positive: int
    n_boot: int
    skipped: str | None = None

    def to_dict(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class AurocDifference:
    """AUROC(metric) − AUROC(shared epochs) on the pairs where both are known, with a paired bootstrap interval."""

    diff: float | None
    lo: float | None
    hi: float | None
    n: int
    skipped: str | None = None

    def to_dict(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


def _oriented(values: np.ndarray, metric: Metric) -> np.ndarray:
    return values if metric.higher_is_similar else -values


def _auroc_point(metric: Metric, score: np.ndarray, positive: np.ndarray, boot: np.ndarray | None,
                 n_boot: int) -> AurocResult:
    """The AUROC result of one oriented score (NaN = unknown) from its bootstrap samples."""
    keep = np.isfinite(score)
    v, y = score[keep], positive[keep]
    n, k = int(v.size), int(y.sum())
    if n == 0:
        return AurocResult(metric.score, None, None, None, 0, 0, n_boot, f"no pairs with {metric.name}")
    if k == 0 or k == n:
        return AurocResult(metric.score, None, None, None, n, k, n_boot,
                           "no positive soups" if k == 0 else "every soup is positive")
    if np.all(v == v[0]):
        return AurocResult(metric.score, 0.5, None, None, n, k, n_boot, f"{metric.name} is constant")
    lo, hi = _percentile_ci(boot) if boot is not None else (None, None)
    return AurocResult(metric.score, auroc(v, y), lo, hi, n, k, n_boot)


def _auroc_difference(v: np.ndarray, s: np.ndarray, positive: np.ndarray, boot_v: np.ndarray,
                      boot_s: np.ndarray) -> AurocDifference:
    """AUROC(v) − AUROC(s) on the rows where both are finite (v, s already masked to those rows)."""
    keep = np.isfinite(v) & np.isfinite(s)
    y = positive[keep]
    n, k = int(keep.sum()), int(y.sum())
    if k == 0 or k == n:
        return AurocDifference(None, None, None, n, "needs positive and negative soups with both values")
    lo, hi = _percentile_ci(boot_v - boot_s)
    return AurocDifference(_num(auroc(v[keep], y) - auroc(s[keep], y)), lo, hi, n)


@dataclass
class MetricResult(_Result):
    """One similarity metric against the soup gain: Spearman ρ over all soups and over positive soups, with the loss
    gain and with the shared epochs; AUROC for predicting a positive soup, and its difference with the baseline."""

    name: str = ""
    label: str = ""
    orientation: str = ""
    n: int = 0
    rho_all: Correlation | None = None
    rho_positive: Correlation | None = None
    rho_loss_gain: Correlation | None = None
    rho_shared_epochs: Correlation | None = None
    auroc: AurocResult | None = None
    auroc_vs_baseline: AurocDifference | None = None
    skipped: str | None = None


@dataclass
class SimilarityAnalysis(_Result):
    """Analysis 3 (paper Fig. 3, 4, A6–A10, plus AUROC): does similarity predict soupability?"""

    n: int = 0
    n_positive: int = 0
    metrics: list[MetricResult] = field(default_factory=list)
    baseline: AurocResult | None = None
    best_metric: str | None = None
    skipped: str | None = None
    plot: dict = _plot_field()


def similarity_analysis(mid: PairTable, *, n_boot: int = 1000, seed: int = 0,
                        metrics: Sequence[Metric] = METRICS) -> SimilarityAnalysis:
    """Each similarity column against the accuracy gain (Spearman, all and positive soups), the loss gain and the
    shared epochs, and its AUROC for "the soup is positive" (oriented: similar = higher score) with a seeded
    bootstrap interval, against the baseline that knows only the shared epochs, with the paired difference. Every
    interval comes from the same :func:`bootstrap_auroc` resamples of the soups."""
    g = _acc_gain_pp(mid)
    has_gain = np.isfinite(g)
    if not has_gain.any():
        return SimilarityAnalysis(skipped="no soups with an accuracy gain")
    pos = _positive(g)
    lg, shared = mid.num("loss_gain"), np.where(has_gain, mid.num("shared_epochs"), np.nan)
    base_score = _oriented(shared, BASELINE)
    has_base = np.isfinite(shared).any()
    present = [m for m in metrics if np.isfinite(mid.num(m.name)[has_gain]).any()]
    # One bootstrap for everything: the baseline, each metric, and each (metric, baseline) pair on common rows.
    vectors = [base_score]
    for m in present:
        v = _oriented(np.where(has_gain, mid.num(m.name), np.nan), m)
        both = np.isfinite(v) & np.isfinite(base_score)
        vectors += [v, np.where(both, v, np.nan), np.where(both, base_score, np.nan)]
    rows = np.flatnonzero(has_gain)
    boots = bootstrap_auroc([v[rows] for v in vectors], pos[rows], n_boot=n_boot, seed=seed)
    baseline = _auroc_point(BASELINE, base_score, pos, boots[0], n_boot) if has_base else None
    results, plot = [], {}
    for m in metrics:
        if m not in present:
            results.append(MetricResult(name=m.name, label=m.label, orientation=m.orientation,
                                        skipped=f"no {m.name} values in the table"))
            continue
        i = 1 + 3 * present.index(m)
        values = np.where(has_gain, mid.num(m.name), np.nan)
        results.append(MetricResult(
            name=m.name, label=m.label, orientation=m.orientation, n=int(np.isfinite(values).sum()),
            rho_all=spearman(values, g, (m.name, "gain")),
            rho_positive=(spearman(values[pos], g[pos], (m.name, "gain")) if pos.any()
                          else Correlation("spearman", None, None, 0, "no positive soups")),
            rho_loss_gain=spearman(values, lg, (m.name, "loss gain")),
            rho_shared_epochs=spearman(shared, values, ("shared epochs", m.name)),
            auroc=_auroc_point(m, vectors[i], pos, boots[i], n_boot),
            auroc_vs_baseline=(_auroc_difference(vectors[i + 1], vectors[i + 2], pos, boots[i + 1], boots[i + 2])
                               if has_base else AurocDifference(None, None, None, 0, "the shared epochs are unknown"))))
        plot[m.name] = values
    scored = [r for r in results if r.auroc is not None and r.auroc.auc is not None and r.auroc.skipped is None]
    best = max(scored, key=lambda r: r.auroc.auc).name if scored else None
    plot.update(gain=g, positive=pos, shared=shared)
    return SimilarityAnalysis(n=int(has_gain.sum()), n_positive=int(pos.sum()), metrics=results, baseline=baseline,
                              best_metric=best, plot=plot)


# --------------------------------------------------------------------------------------------- 4. transitivity
def gain_matrix(mid: PairTable, column: str = "acc_gain", scale: float = 100.0,
                models: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Models (sorted names, or ``models``) and the symmetric matrix of ``column`` × ``scale`` (accuracy gain in
    points by default) over the midpoint soups; NaN for the diagonal and pairs without a finite value."""
    names = list(models) if models is not None else _models(mid)
    pos = {m: i for i, m in enumerate(names)}
    out = np.full((len(names), len(names)), np.nan)
    for a, b, v in zip(mid.text("model_a"), mid.text("model_b"), mid.num(column) * scale):
        if a in pos and b in pos and a != b and math.isfinite(v):
            out[pos[a], pos[b]] = out[pos[b], pos[a]] = v
    return names, out


def _model_epochs(mid: PairTable, names: Sequence[str]) -> np.ndarray:
    epochs = _model_values(mid, "epoch")
    return np.array([epochs.get(n, np.nan) for n in names], dtype=float)


@dataclass
class Triples:
    """Every hub triple (A; B, C): a model A and an unordered pair {B, C} of two other models whose three midpoint
    soups are all known. Arrays are aligned; ``k`` = number of positive soups among (A,B) and (A,C)."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    gab: np.ndarray
    gac: np.ndarray
    gbc: np.ndarray
    shared: np.ndarray
    epoch_diff: np.ndarray

    @property
    def k(self) -> np.ndarray:
        return _positive(self.gab).astype(int) + _positive(self.gac).astype(int)

    def __len__(self) -> int:
        return int(self.a.size)


def hub_triples(gains: np.ndarray, shared: np.ndarray | None = None, epochs: np.ndarray | None = None) -> Triples:
    """All hub triples of an n×n gain matrix (NaN = unknown). ``shared`` (n×n shared epochs) gives each triple's
    shared epochs min(S_AB, S_AC, S_BC) (= the smallest branch epoch of the three); ``epochs`` (n) gives
    |epoch_B − epoch_C|."""
    n = gains.shape[0]
    shared = np.full_like(gains, np.nan) if shared is None else shared
    epochs = np.full(n, np.nan) if epochs is None else np.asarray(epochs, dtype=float)
    parts: list[list[np.ndarray]] = [[] for _ in range(8)]
    known = np.isfinite(gains)
    for a in range(n):
        others = np.delete(np.arange(n), a)
        bi, ci = np.triu_indices(others.size, 1)
        b, c = others[bi], others[ci]
        ok = known[a, b] & known[a, c] & known[b, c]
        b, c = b[ok], c[ok]
        s = np.minimum(np.minimum(shared[a, b], shared[a, c]), shared[b, c])  # NaN if any is unknown
        for i, arr in enumerate((np.full(b.size, a), b, c, gains[a, b], gains[a, c], gains[b, c], s,
                                 np.abs(epochs[b] - epochs[c]))):
            parts[i].append(arr)
    cat = [np.concatenate(p) if p else np.empty(0) for p in parts]
    return Triples(cat[0].astype(int), cat[1].astype(int), cat[2].astype(int), *cat[3:])


@dataclass
class TransitivityAnalysis(_Result):
    """Analysis 4 (paper Fig. 5, A11, Tables 4–5): is souping transitive?

    Over hub triples (A; B, C): P(B,C positive) against k, the number of positive soups of A with B and C; Spearman of
    gain(B,C) against min(gain(A,B), gain(A,C)) and against their mean; among triples with k = 2, the failure rate
    p_fail = P(B,C not positive) by the triple's shared epochs and by |epoch_B − epoch_C|."""

    n_models: int = 0
    n_triples: int = 0
    by_k: list[Proportion] = field(default_factory=list)
    rho_min: Correlation | None = None
    rho_mean: Correlation | None = None
    n_two_positive: int = 0
    failure: Proportion | None = None
    failure_by_shared_epochs: list[dict] = field(default_factory=list)
    failure_by_epoch_diff: list[dict] = field(default_factory=list)
    skipped: str | None = None
    plot: dict = _plot_field()


def _failure_table(values: np.ndarray, failed: np.ndarray, n_bins: int) -> list[dict]:
    bins = make_bins(values, n_bins)
    idx = assign_bins(values, bins)
    return [{"bin": b, "p_fail": proportion(failed, idx == i)} for i, b in enumerate(bins)]


def transitivity_analysis(mid: PairTable, *, n_bins: int = 5) -> TransitivityAnalysis:
    """Transitivity over all hub triples of the midpoint soups (see :class:`TransitivityAnalysis`). A triple counts
    once per choice of hub A: a triple whose three soups are positive counts three times, with each model as A.
    The failure tables use at most ``n_bins`` bins (one per distinct value when there are few)."""
    names, g = gain_matrix(mid)
    _, shared = gain_matrix(mid, "shared_epochs", 1.0, names)
    if len(names) < 3:
        return TransitivityAnalysis(n_models=len(names), skipped=f"{len(names)} models: a triple needs 3")
    t = hub_triples(g, shared, _model_epochs(mid, names))
    if len(t) == 0:
        return TransitivityAnalysis(n_models=len(names), skipped="no triple of models with all three soups known")
    k = t.k
    bc_pos = _positive(t.gbc)
    two = k == 2
    failed = ~bc_pos[two]
    result = TransitivityAnalysis(
        n_models=len(names), n_triples=len(t), by_k=[proportion(bc_pos, k == i) for i in range(3)],
        rho_min=spearman(np.minimum(t.gab, t.gac), t.gbc, ("min gain with A", "gain(B,C)")),
        rho_mean=spearman((t.gab + t.gac) / 2, t.gbc, ("mean gain with A", "gain(B,C)")),
        n_two_positive=int(two.sum()), failure=proportion(failed) if two.any() else None,
        plot={"gbc": t.gbc, "min": np.minimum(t.gab, t.gac), "mean": (t.gab + t.gac) / 2})
    if two.any():
        if np.isfinite(t.shared[two]).any():
            result.failure_by_shared_epochs = _failure_table(t.shared[two], failed, n_bins)
        if np.isfinite(t.epoch_diff[two]).any():
            result.failure_by_epoch_diff = _failure_table(t.epoch_diff[two], failed, n_bins)
    return result


# ------------------------------------------------------------------------------------------------ 5. landscape
def gain_distance(g: Any) -> np.ndarray:
    """The paper's soup-gain distance d = −sign(g) − 0.1·g, g the pair's accuracy gain in points (A.6): −1 − 0.1·g
    for a positive soup (the larger the gain, the closer), 1 + 0.1·|g| for a negative one, 0 for a gain of 0."""
    g = np.asarray(g, dtype=float)
    sign = np.where(g > _TOL, 1.0, np.where(g < -_TOL, -1.0, 0.0))
    return -sign - 0.1 * g


def distance_matrix(gains: np.ndarray) -> tuple[np.ndarray, int]:
    """The MDS dissimilarity matrix of an n×n gain matrix in points (NaN = unknown): :func:`gain_distance` per pair,
    0 on the diagonal, and each unknown pair set to the largest known distance (treated as the worst soup seen:
    a pair without a result is most often one whose soup failed). Returns the matrix and the number of unknown
    (imputed) unordered pairs."""
    d = gain_distance(gains)
    n = d.shape[0]
    off = ~np.eye(n, dtype=bool)
    known = np.isfinite(d) & off
    missing = ~np.isfinite(d) & off
    fill = float(d[known].max()) if known.any() else 0.0
    d = np.where(missing, fill, d)
    np.fill_diagonal(d, 0.0)
    return d, int(missing.sum() // 2)


def _mds(d: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.manifold import MDS

    params = inspect.signature(MDS).parameters
    kwargs: dict[str, Any] = {"n_components": 2, "random_state": seed, "n_init": 4, "max_iter": 300}
    if "metric_mds" in params:  # scikit-learn ≥ 1.8: `metric` names the input, `metric_mds` the method
        kwargs.update(metric="precomputed", metric_mds=True, init="random")
    else:
        kwargs.update(dissimilarity="precomputed", metric=True)
    if "normalized_stress" in params:
        kwargs["normalized_stress"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mds = MDS(**kwargs)
        coords = mds.fit_transform(d)
    return coords, float(mds.stress_)


def _components(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not edges:
        return np.arange(n)
    rows, cols = zip(*edges)
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass
class LandscapeAnalysis(_Result):
    """Analysis 5 (paper Fig. 6, A.6): a 2-D metric MDS embedding of the models with the soup-gain distance, edges
    for positive soups; stress (scikit-learn's raw stress and Kruskal's stress-1), and the connected components of
    the positive-soup graph."""

    models: list[str] = field(default_factory=list)
    epochs: list[float | None] = field(default_factory=list)
    coordinates: list[list[float]] = field(default_factory=list)
    n_imputed: int = 0
    stress: float | None = None
    stress_1: float | None = None
    n_positive_edges: int = 0
    n_components: int = 0
    largest_component: int = 0
    n_isolated: int = 0
    seed: int = 0
    skipped: str | None = None
    plot: dict = _plot_field()


def landscape_analysis(mid: PairTable, *, seed: int = 0) -> LandscapeAnalysis:
    """MDS of :func:`distance_matrix` (scikit-learn, metric, precomputed dissimilarities, 4 seeded starts).

    The distance of a positive soup is negative (−1 − 0.1·g): an embedding cannot place points closer than 0, so
    metric MDS pulls such pairs as close as it can, harder the larger the gain. Models are coloured by branch epoch
    (``epoch_a``/``epoch_b``). Rotation and reflection of the embedding are arbitrary."""
    names, g = gain_matrix(mid)
    if len(names) < 3:
        return LandscapeAnalysis(models=names, seed=seed, skipped=f"{len(names)} models: an embedding needs 3")
    d, imputed = distance_matrix(g)
    coords, stress = _mds(d, seed)
    iu = np.triu_indices(len(names), 1)
    emb = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))[iu]
    target = d[iu]
    denom = float((target ** 2).sum())
    stress_1 = math.sqrt(float(((emb - target) ** 2).sum()) / denom) if denom > 0 else None
    positive = _positive(g)
    edges = [(int(i), int(j)) for i, j in zip(*iu) if positive[i, j]]
    comp = _components(len(names), edges)
    in_edge = np.zeros(len(names), dtype=bool)
    for i, j in edges:
        in_edge[i] = in_edge[j] = True
    sizes = np.bincount(comp[in_edge]) if in_edge.any() else np.zeros(0, dtype=int)
    epochs = _model_epochs(mid, names)
    return LandscapeAnalysis(
        models=names, epochs=[_num(e) for e in epochs], coordinates=coords.round(6).tolist(), n_imputed=imputed,
        stress=_num(stress), stress_1=_num(stress_1), n_positive_edges=len(edges),
        n_components=int((sizes > 0).sum()), largest_component=int(sizes.max()) if sizes.size else 0,
        n_isolated=int((~in_edge).sum()), seed=seed,
        plot={"coords": coords, "edges": edges, "gains": g, "epochs": epochs, "distances": d})


# ----------------------------------------------------------------------------------------------- 6. robustness
@dataclass
class RobustnessAnalysis(_Result):
    """Analysis 6 (paper Fig. A12–A14): the soup gain on corrupted data (mean over corruptions at one severity)
    against the clean gain, and P(positive) against shared epochs, clean and corrupted."""

    n: int = 0
    severity: float | None = None
    rho_all: Correlation | None = None
    rho_positive: Correlation | None = None
    r_positive: Correlation | None = None
    rho_loss: Correlation | None = None
    positive_clean: Proportion | None = None
    positive_corrupted: Proportion | None = None
    bins: list[Bin] = field(default_factory=list)
    positive_clean_by_bin: list[Proportion] = field(default_factory=list)
    positive_corrupted_by_bin: list[Proportion] = field(default_factory=list)
    skipped: str | None = None
    plot: dict = _plot_field()


def robustness_analysis(mid: PairTable, *, max_bins: int = 30) -> RobustnessAnalysis:
    """Clean vs corrupted gain (Spearman over all soups; Spearman and Pearson over the clean-positive soups), the
    same for the loss gain, and P(positive) clean and corrupted by shared epochs. Skipped without corrupted columns."""
    g, cg = _acc_gain_pp(mid), mid.num("c_acc_gain") * 100.0
    both = np.isfinite(g) & np.isfinite(cg)
    if not both.any():
        return RobustnessAnalysis(skipped="no corrupted results (c_acc_gain is empty): run the study with "
                                          "--corrupted-dataset")
    g, cg = np.where(both, g, np.nan), np.where(both, cg, np.nan)
    pos = _positive(g)
    sev = mid.num("c_severity")
    result = RobustnessAnalysis(
        n=int(both.sum()), severity=_num(np.nanmax(sev)) if np.isfinite(sev).any() else None,
        rho_all=spearman(g, cg, ("clean gain", "corrupted gain")),
        rho_positive=(spearman(g[pos], cg[pos], ("clean gain", "corrupted gain")) if pos.any()
                      else Correlation("spearman", None, None, 0, "no positive soups")),
        r_positive=(pearson(g[pos], cg[pos], ("clean gain", "corrupted gain")) if pos.any()
                    else Correlation("pearson", None, None, 0, "no positive soups")),
        rho_loss=spearman(mid.num("loss_gain"), mid.num("c_loss_gain"), ("clean loss gain", "corrupted loss gain")),
        positive_clean=proportion(pos, both), positive_corrupted=proportion(_positive(cg), both),
        plot={"clean": g, "corrupted": cg, "positive": pos})
    shared = mid.num("shared_epochs")
    known = both & np.isfinite(shared)
    bins = make_bins(shared[known], max_bins) if known.any() else []
    if len(bins) >= 2:
        idx = np.where(known, assign_bins(shared, bins), -1)
        result.bins = bins
        result.positive_clean_by_bin = [proportion(pos, idx == i) for i in range(len(bins))]
        result.positive_corrupted_by_bin = [proportion(_positive(cg), idx == i) for i in range(len(bins))]
    return result


# -------------------------------------------------------------------------------------------- 7. interpolation
@dataclass
class InterpolationAnalysis(_Result):
    """Analysis 7 (paper Fig. A16): accuracy and loss of (1 − α)·A + α·B against α, for the pairs run with several α
    (A, B in name order; α = 0 and 1 are the ingredients themselves). Per pair: the gain at the midpoint, the best
    α on the grid and its gain, and where the accuracy is lowest inside (0, 1)."""

    n_pairs: int = 0
    pairs: list[dict] = field(default_factory=list)
    sign_agrees: Proportion | None = None
    min_at_midpoint: Proportion | None = None
    skipped: str | None = None


def interpolation_analysis(table: PairTable) -> InterpolationAnalysis:
    """Curves of the pairs with at least two distinct α among their ok rows. ``sign_agrees``: pairs whose midpoint
    gain and best gain over the α grid are both positive or both not (is the midpoint a faithful summary?);
    ``min_at_midpoint``: pairs whose lowest interior accuracy is at α = 0.5 (the barrier's usual place)."""
    ok = table.ok()
    a, b, alpha = ok.text("model_a"), ok.text("model_b"), ok.num("alpha")
    cols = {c: ok.num(c) for c in ("soup_acc", "soup_loss", "acc_a", "acc_b", "loss_a", "loss_b")}
    curves: dict[tuple[str, str], dict] = {}
    for i in range(len(ok)):
        if a[i] is None or b[i] is None or a[i] == b[i] or not math.isfinite(alpha[i]):
            continue
        flip = a[i] > b[i]  # canonical order: (1 − α)·A + α·B with A < B by name
        key = (b[i], a[i]) if flip else (a[i], b[i])
        al = round(1.0 - alpha[i], 6) if flip else round(float(alpha[i]), 6)
        c = curves.setdefault(key, {"points": {}, "acc_a": math.nan, "acc_b": math.nan,
                                    "loss_a": math.nan, "loss_b": math.nan})
        c["points"].setdefault(al, (cols["soup_acc"][i], cols["soup_loss"][i]))
        first, second = ("b", "a") if flip else ("a", "b")
        for what in ("acc", "loss"):
            if math.isnan(c[f"{what}_a"]):
                c[f"{what}_a"] = cols[f"{what}_{first}"][i]
            if math.isnan(c[f"{what}_b"]):
                c[f"{what}_b"] = cols[f"{what}_{second}"][i]
    pairs = []
    for (ma, mb), c in sorted(curves.items()):
        if len(c["points"]) < 2:
            continue
        pts = dict(c["points"])
        if 0.0 not in pts and math.isfinite(c["acc_a"]):
            pts[0.0] = (c["acc_a"], c["loss_a"])
        if 1.0 not in pts and math.isfinite(c["acc_b"]):
            pts[1.0] = (c["acc_b"], c["loss_b"])
        alphas = sorted(pts)
        acc = np.array([pts[x][0] for x in alphas], dtype=float)
        loss = np.array([pts[x][1] for x in alphas], dtype=float)
        best_parent = np.nanmax([c["acc_a"], c["acc_b"]]) if np.isfinite([c["acc_a"], c["acc_b"]]).any() else np.nan
        interior = np.array([0.0 < x < 1.0 for x in alphas]) & np.isfinite(acc)
        gains = (acc - best_parent) * 100.0
        mid_gain = gains[alphas.index(ALPHA_MID)] if ALPHA_MID in alphas else math.nan
        best_i = int(np.nanargmax(np.where(interior, gains, np.nan))) if interior.any() and np.isfinite(
            gains[interior]).any() else None
        min_i = int(np.nanargmin(np.where(interior, acc, np.nan))) if interior.any() else None
        pairs.append({"model_a": ma, "model_b": mb, "alphas": alphas, "acc": acc, "loss": loss,
                      "gain_mid_pp": mid_gain, "best_alpha": alphas[best_i] if best_i is not None else None,
                      "best_gain_pp": gains[best_i] if best_i is not None else None,
                      "min_alpha": alphas[min_i] if min_i is not None else None})
    if not pairs:
        return InterpolationAnalysis(skipped="no pair was run at more than one α (rerun the study with e.g. "
                                             "--alphas 0,0.25,0.5,0.75,1 --pairs FILE)")
    with_mid = [p for p in pairs if math.isfinite(p["gain_mid_pp"]) and p["best_gain_pp"] is not None]
    agrees = np.array([(p["gain_mid_pp"] > _TOL) == (p["best_gain_pp"] > _TOL) for p in with_mid], dtype=bool)
    at_mid = np.array([p["min_alpha"] == ALPHA_MID for p in with_mid], dtype=bool)
    return InterpolationAnalysis(n_pairs=len(pairs), pairs=pairs,
                                 sign_agrees=proportion(agrees) if with_mid else None,
                                 min_at_midpoint=proportion(at_mid) if with_mid else None)


# ------------------------------------------------------------------------------------------------ 8. ensemble
@dataclass
class EnsembleAnalysis(_Result):
    """Analysis 8: the midpoint soup against the two-model logit ensemble of the same pair (``ensemble_acc``): what
    a user gives up by souping (one forward pass) instead of ensembling (two)."""

    n: int = 0
    soup_minus_ensemble_pp: dict = field(default_factory=dict)
    soup_better: Proportion | None = None
    soup_at_least_as_good: Proportion | None = None
    ensemble_positive: Proportion | None = None
    ensemble_gain_mean_pp: float | None = None
    positive_soups: dict = field(default_factory=dict)
    skipped: str | None = None
    plot: dict = _plot_field()


def ensemble_analysis(mid: PairTable) -> EnsembleAnalysis:
    """soup_acc − ensemble_acc (points) over all pairs and over the positive soups; how often the soup beats the
    ensemble; how often the ensemble beats the better ingredient (its own gain)."""
    ens, soup = mid.num("ensemble_acc"), mid.num("soup_acc")
    best = np.fmax(mid.num("acc_a"), mid.num("acc_b"))
    known = np.isfinite(ens) & np.isfinite(soup)
    if not known.any():
        return EnsembleAnalysis(skipped="no ensemble accuracies (ensemble_acc is empty)")
    diff = (soup - ens)[known] * 100.0
    ens_gain = ((ens - best) * 100.0)[known]
    soup_gain = _acc_gain_pp(mid)[known]
    pos = _positive(soup_gain)

    def stats(x: np.ndarray) -> dict:
        return ({"n": int(x.size), "mean": _num(x.mean()), "median": _num(np.median(x)), "min": _num(x.min()),
                 "max": _num(x.max())} if x.size else {"n": 0})

    return EnsembleAnalysis(
        n=int(known.sum()), soup_minus_ensemble_pp=stats(diff),
        soup_better=proportion(_greater(diff)), soup_at_least_as_good=proportion(_greater(diff, -2 * _TOL)),
        ensemble_positive=proportion(_positive(ens_gain[np.isfinite(ens_gain)])),
        ensemble_gain_mean_pp=_num(np.nanmean(ens_gain)) if np.isfinite(ens_gain).any() else None,
        positive_soups={"soup_minus_ensemble_pp": stats(diff[pos]),
                        "soup_better": proportion(_greater(diff[pos])) if pos.any() else None},
        plot={"soup_gain": soup_gain, "ensemble_gain": ens_gain, "diff": diff})


# ----------------------------------------------------------------------------------------------------- all
@dataclass
class StudyAnalysis(_Result):
    """Every analysis of a study table (see the module docstring); ``to_dict()`` is the report's ``summary.json``
    body (``paper`` holds the paper's reference figures)."""

    overview: Overview
    gain: GainDistribution
    shared_epochs: SharedEpochsAnalysis
    similarity: SimilarityAnalysis
    transitivity: TransitivityAnalysis
    landscape: LandscapeAnalysis
    robustness: RobustnessAnalysis
    interpolation: InterpolationAnalysis
    ensemble: EnsembleAnalysis
    paper: dict = field(default_factory=lambda: dict(PAPER))

    def sections(self) -> Iterable[tuple[str, Any]]:
        for f in fields(self):
            if f.name != "paper":
                yield f.name, getattr(self, f.name)

    @property
    def skipped(self) -> dict[str, str]:
        """Analysis name → why it was skipped, for the skipped ones."""
        return {name: r.skipped for name, r in self.sections() if getattr(r, "skipped", None)}


def analyse(table: PairTable, *, seed: int = 0, n_boot: int = 1000) -> StudyAnalysis:
    """Run every analysis on a study table (ok rows only)."""
    mid = midpoint_soups(table)
    return StudyAnalysis(
        overview=overview(table, mid), gain=gain_distribution(mid), shared_epochs=shared_epochs_analysis(mid),
        similarity=similarity_analysis(mid, n_boot=n_boot, seed=seed), transitivity=transitivity_analysis(mid),
        landscape=landscape_analysis(mid, seed=seed), robustness=robustness_analysis(mid),
        interpolation=interpolation_analysis(table), ensemble=ensemble_analysis(mid))
