"""Figures of the pair-study report: one function per analysis of :mod:`hfsoup.study.analysis`.

Figures are drawn on matplotlib ``Figure`` objects with an Agg canvas (no pyplot, no global backend switch), titled,
with labelled axes and units, in one palette (:data:`COLORS`), and saved as PNG and SVG. Importing this module
imports neither matplotlib nor torch: matplotlib is imported inside the functions.

The same analysis gives the same bytes: PNGs are written without the "Software" entry (Agg adds no timestamp), SVGs
with a fixed ``svg.hashsalt`` and no date; dense scatters are sub-sampled with a fixed seed and rasterised.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hfsoup.study.analysis import (ALPHA_MID, BASELINE, METRICS, PAPER, Bin, EnsembleAnalysis, GainDistribution,
                                   InterpolationAnalysis, LandscapeAnalysis, Proportion, RobustnessAnalysis,
                                   SharedEpochsAnalysis, SimilarityAnalysis, StudyAnalysis, TransitivityAnalysis)

__all__ = ["COLORS", "DPI", "FIGURES", "write_figures", "gain_cdf", "gain_vs_shared_epochs",
           "gain_quantiles_vs_shared_epochs", "collapse_vs_shared_epochs", "similarity_vs_gain",
           "similarity_vs_gain_positive", "shared_epochs_vs_similarity", "auroc", "transitivity",
           "transitivity_failure", "landscape", "robustness", "interpolation", "soup_vs_ensemble"]

COLORS = {
    "acc": "#1f77b4",        # accuracy gain
    "loss": "#ff7f0e",       # loss gain
    "positive": "#2ca02c",   # positive soups
    "negative": "#d62728",   # negative soups
    "neutral": "#7f7f7f",    # collapse, baselines, chance lines
    "corrupted": "#9467bd",  # CIFAR-100-C
    "ensemble": "#8c564b",   # the logit ensemble
    "paper": "#444444",      # the paper's reference figures
}
"""One palette for every figure."""

DPI = 120
MAX_POINTS = 20000
"""Scatters with more points are drawn from a seeded random subset (the statistics use every point)."""

_RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "figure.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "svg.hashsalt": "hfsoup-study-report", "svg.fonttype": "none",
    "path.simplify": True,
}


# ------------------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        yield


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.0) -> tuple[Any, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no pyplot, no global backend
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, folder: Path, name: str, svg: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    out = [png]
    # The PNG's draw ran the constrained layout; freeze its result so the SVG does not lay the figure out again.
    fig.set_layout_engine("none")
    if svg:
        path = folder / f"{name}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None})
        out.append(path)
    return out


def _subsample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _bin_x(bins: Sequence[Bin]) -> np.ndarray:
    return np.array([b.centre for b in bins], dtype=float)


def _bins_note(bins: Sequence[Bin]) -> str:
    return "shared epochs" if all(b.lo == b.hi for b in bins) else "shared epochs (bin centre)"


def _prop_arrays(props: Sequence[Proportion]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.array([x.p for x in props], dtype=float)
    lo = np.array([x.interval[0] for x in props], dtype=float)
    hi = np.array([x.interval[1] for x in props], dtype=float)
    return p, np.fmin(lo, p), np.fmax(hi, p)


def _errorbar(ax: Any, x: np.ndarray, props: Sequence[Proportion], *, color: str, label: str,
              marker: str = "o", scale: float = 100.0, offset: float = 0.0) -> None:
    p, lo, hi = _prop_arrays(props)
    ok = np.isfinite(p)
    ax.errorbar(x[ok] + offset, p[ok] * scale, yerr=[(p - lo)[ok] * scale, (hi - p)[ok] * scale], color=color,
                marker=marker, ms=4, lw=1.2, capsize=2, label=label)


def _metric(name: str) -> Any:
    return next((m for m in METRICS if m.name == name), BASELINE)


def _metric_axis_label(name: str) -> str:
    m = _metric(name)
    return f"{m.label} ({m.unit})" if m.unit else m.label


def _log_if_wide(ax: Any, values: np.ndarray) -> None:
    v = values[np.isfinite(values)]
    if v.size and v.min() > 0 and v.max() / v.min() > 100:
        ax.set_xscale("log")


def _rho_text(c: Any) -> str:
    if c is None or c.rho is None:
        return "ρ n/a (constant)" if c is not None and c.skipped and "constant" in c.skipped else "ρ n/a"
    return f"Spearman ρ = {c.rho:+.2f} (n = {c.n})"


def _empty(ax: Any, text: str, *, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    """A panel without data: the reason in its middle, and still its title and axis labels, so that a reader
    knows what would be drawn there."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=COLORS["neutral"])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


# ---------------------------------------------------------------------------------------------------- figures
def gain_cdf(r: GainDistribution, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 1: empirical CDF of the accuracy gain (points) and of the loss gain (nats)."""
    if r.skipped:
        return []
    with _style():
        fig, axes = _figure(1, 2, width=9.0, height=3.8)
        panels = [("acc", r.acc, "accuracy gain (points)", COLORS["acc"]),
                  ("loss", r.loss, "loss gain (nats)", COLORS["loss"])]
        for ax, (key, stats, xlabel, color) in zip(axes[0], panels):
            x, y = r.plot.get(key, (np.empty(0), np.empty(0)))
            if stats is None or x.size == 0:
                _empty(ax, f"no {key} gains", title=f"{'Accuracy' if key == 'acc' else 'Loss'} gain",
                       xlabel=xlabel, ylabel="soups with gain ≤ x (%)")
                continue
            ax.step(x, y * 100, where="post", color=color, lw=1.5, label=f"this study (n = {stats.n})")
            ax.axvline(0, color=COLORS["neutral"], lw=0.8, ls=":")
            pos = stats.positive
            ax.set_title(f"{'Accuracy' if key == 'acc' else 'Loss'} gain: {pos.p * 100:.1f} % of soups positive")
            if key == "acc":
                ax.plot([0], [(1 - PAPER["fraction_positive"]["value"]) * 100], marker="D", color=COLORS["paper"],
                        ls="none", label="paper: 14 % positive")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("soups with gain ≤ x (%)")
            ax.set_ylim(0, 100)
            ax.legend(loc="upper left")
        fig.suptitle("Soup gain over the better ingredient (midpoint soups)")
        return _save(fig, folder, "gain_cdf", svg)


def gain_vs_shared_epochs(r: SharedEpochsAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 2: P(gain > k) against shared epochs for several k, with 95 % Wilson intervals."""
    if r.skipped or r.acc is None:
        return []
    import matplotlib

    with _style():
        fig, axes = _figure(1, 2, width=10.0, height=4.0)
        x = _bin_x(r.bins)
        width = (x.max() - x.min()) if x.size > 1 else 1.0
        for ax, curves, unit, title in ((axes[0, 0], r.acc, "points", "accuracy gain"),
                                        (axes[0, 1], r.loss, "nats", "loss gain")):
            if curves is None:
                _empty(ax, "no loss gains", title=f"P({title} > k) vs shared epochs", xlabel=_bins_note(r.bins),
                       ylabel=f"P({title} > k) (%)")
                continue
            cmap = matplotlib.colormaps["viridis"]
            ks = curves.greater_than
            for i, entry in enumerate(ks):
                color = cmap(i / max(len(ks) - 1, 1) * 0.9)
                offset = (i - (len(ks) - 1) / 2) * width * 0.004
                _errorbar(ax, x, entry["by_bin"], color=color, label=f"k = {entry['k']:+g} {unit}", offset=offset)
            if title == "accuracy gain":
                ax.axhline(PAPER["p_positive_late"]["value"] * 100, color=COLORS["paper"], ls="--", lw=0.8,
                           label="paper: P(gain > 0) ≈ 80 % late")
            ax.set_xlabel(_bins_note(r.bins))
            ax.set_ylabel(f"P({title} > k) (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"P({title} > k) vs shared epochs")
            ax.legend(loc="best")
        fig.suptitle("Gain over the better ingredient (loss gain: its loss − the soup's), 95 % Wilson intervals")
        return _save(fig, folder, "gain_vs_shared_epochs", svg)


def gain_quantiles_vs_shared_epochs(r: SharedEpochsAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. A3–A4: quantiles (5–95 %, 25–75 %, median), mean and mean positive gain against shared epochs."""
    if r.skipped or r.acc is None:
        return []
    with _style():
        fig, axes = _figure(1, 2, width=10.0, height=4.0)
        x = _bin_x(r.bins)
        for ax, curves, ylabel, color in ((axes[0, 0], r.acc, "accuracy gain (points)", COLORS["acc"]),
                                          (axes[0, 1], r.loss, "loss gain (nats)", COLORS["loss"])):
            if curves is None:
                _empty(ax, "no loss gains", title=f"{ylabel.split(' (')[0].capitalize()} quantiles vs shared epochs",
                       xlabel=_bins_note(r.bins), ylabel=ylabel)
                continue
            q = {k: np.array([np.nan if v is None else v for v in vals], dtype=float)
                 for k, vals in curves.quantiles.items()}
            ax.fill_between(x, q["q05"], q["q95"], color=color, alpha=0.15, lw=0, label="5–95 %")
            ax.fill_between(x, q["q25"], q["q75"], color=color, alpha=0.35, lw=0, label="25–75 %")
            ax.plot(x, q["q50"], color=color, lw=1.5, marker="o", ms=3, label="median")
            mean = np.array([np.nan if v is None else v for v in curves.mean], dtype=float)
            mpos = np.array([np.nan if v is None else v for v in curves.mean_positive], dtype=float)
            ax.plot(x, mean, color=COLORS["neutral"], lw=1, ls="--", label="mean")
            ax.plot(x, mpos, color=COLORS["positive"], lw=1, ls="-.", marker=".", label="mean of positive soups")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xlabel(_bins_note(r.bins))
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel.split(' (')[0].capitalize()} quantiles vs shared epochs")
            ax.legend(loc="best")
        return _save(fig, folder, "gain_quantiles_vs_shared_epochs", svg)


def collapse_vs_shared_epochs(r: SharedEpochsAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. A5: P(collapse) and P(positive) against shared epochs, with 95 % Wilson intervals."""
    if r.skipped:
        return []
    with _style():
        fig, axes = _figure()
        ax = axes[0, 0]
        x = _bin_x(r.bins)
        _errorbar(ax, x, r.positive_by_bin, color=COLORS["positive"], label="P(accuracy gain > 0)")
        if r.collapse is not None:
            _errorbar(ax, x, r.collapse, color=COLORS["negative"], marker="s", label="P(collapse)")
        ax.set_xlabel(_bins_note(r.bins))
        ax.set_ylabel("probability (%)")
        ax.set_ylim(-2, 102)
        ax.set_title("Collapse and positive soups vs shared epochs")
        ax.legend(loc="best")
        return _save(fig, folder, "collapse_vs_shared_epochs", svg)


def _similarity_grid(r: SimilarityAnalysis, folder: Path, svg: bool, positive_only: bool) -> list[Path]:
    if r.skipped:
        return []
    shown = [m for m in r.metrics if m.skipped is None]
    if not shown or (positive_only and r.n_positive == 0):
        return []
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    g, pos = r.plot["gain"], r.plot["positive"]
    with _style():
        fig, axes = _figure(nrows, ncols, width=3.4 * ncols, height=2.9 * nrows)
        for ax in axes.flat[len(shown):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, shown):
            v = r.plot[m.name]
            keep = np.isfinite(v) & np.isfinite(g) & (pos if positive_only else True)
            idx = np.flatnonzero(keep)[_subsample(int(keep.sum()))]
            colors = np.where(pos[idx], COLORS["positive"], COLORS["negative"])
            ax.scatter(v[idx], g[idx], s=6, c=colors, alpha=0.6, lw=0, rasterized=True)
            ax.axhline(0, color="black", lw=0.6)
            _log_if_wide(ax, v[idx])
            c = m.rho_positive if positive_only else m.rho_all
            ax.set_title(f"{m.name}: {_rho_text(c)}", fontsize=9)
            ax.set_xlabel(_metric_axis_label(m.name))
            ax.set_ylabel("accuracy gain (points)")
        which = "positive soups" if positive_only else "all soups (green: positive, red: not)"
        ref = (f"paper, KL: ρ = {PAPER['kl_rho_positive']['value']:+.2f}" if positive_only
               else f"paper, KL: ρ = {PAPER['kl_rho_all']['value']:+.2f}")
        fig.suptitle(f"Similarity vs soup gain, {which} — {ref}")
        return _save(fig, folder, "similarity_vs_gain_positive" if positive_only else "similarity_vs_gain", svg)


def similarity_vs_gain(r: SimilarityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 3, A7, A9: each similarity metric against the accuracy gain, all soups, with Spearman ρ."""
    return _similarity_grid(r, folder, svg, positive_only=False)


def similarity_vs_gain_positive(r: SimilarityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 4, A8, A10: the same over the positive soups only."""
    return _similarity_grid(r, folder, svg, positive_only=True)


def shared_epochs_vs_similarity(r: SimilarityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. A6: mean ± standard deviation of each metric per shared-epoch value, with Spearman ρ."""
    if r.skipped:
        return []
    shared = r.plot["shared"]
    shown = [m for m in r.metrics if m.skipped is None]
    if not shown or not np.isfinite(shared).any() or np.unique(shared[np.isfinite(shared)]).size < 2:
        return []
    from hfsoup.study.analysis import assign_bins, make_bins

    bins = make_bins(shared, 30)
    idx = assign_bins(shared, bins)
    x = _bin_x(bins)
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    with _style():
        fig, axes = _figure(nrows, ncols, width=3.4 * ncols, height=2.8 * nrows)
        for ax in axes.flat[len(shown):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, shown):
            v = r.plot[m.name]
            groups = [v[(idx == i) & np.isfinite(v)] for i in range(len(bins))]
            mean = np.array([g.mean() if g.size else np.nan for g in groups])
            std = np.array([g.std() if g.size else np.nan for g in groups])
            ax.plot(x, mean, color=COLORS["acc"], marker="o", ms=3, lw=1.2)
            ax.fill_between(x, mean - std, mean + std, color=COLORS["acc"], alpha=0.2, lw=0)
            ax.set_title(f"{m.name}: {_rho_text(m.rho_shared_epochs)}", fontsize=9)
            ax.set_xlabel(_bins_note(bins))
            ax.set_ylabel(_metric_axis_label(m.name))
        fig.suptitle(f"Similarity vs shared epochs (mean ± sd) — paper, KL: "
                     f"ρ = {PAPER['shared_epochs_kl_rho']['value']:+.2f}")
        return _save(fig, folder, "shared_epochs_vs_similarity", svg)


def auroc(r: SimilarityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Beyond the paper: AUROC of each metric for predicting a positive soup, with its 95 % bootstrap interval,
    against the shared-epochs baseline and chance."""
    if r.skipped:
        return []
    rows = [(m.name, m.auroc) for m in r.metrics if m.auroc is not None and m.auroc.auc is not None
            and m.auroc.skipped is None]
    if r.baseline is not None and r.baseline.auc is not None and r.baseline.skipped is None:
        rows.append(("shared epochs (baseline)", r.baseline))
    if not rows:
        return []
    with _style():
        fig, axes = _figure(width=7.0, height=0.4 * len(rows) + 1.6)
        ax = axes[0, 0]
        y = np.arange(len(rows))[::-1]
        for yi, (name, a) in zip(y, rows):
            base = name.startswith("shared epochs")
            color = COLORS["neutral"] if base else COLORS["acc"]
            lo = a.lo if a.lo is not None else a.auc
            hi = a.hi if a.hi is not None else a.auc
            ax.errorbar([a.auc], [yi], xerr=[[a.auc - lo], [hi - a.auc]], color=color, marker="o", capsize=3)
            ax.text(hi + 0.01, yi, f"{a.auc:.3f}", va="center", fontsize=8)
        if r.baseline is not None and r.baseline.auc is not None:
            ax.axvline(r.baseline.auc, color=COLORS["neutral"], ls="--", lw=0.8)
        ax.axvline(0.5, color="black", ls=":", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{name} (score {a.score})" if not name.startswith("shared") else name
                            for name, a in rows])
        ax.set_xlim(min(0.45, min((a.lo or a.auc) for _, a in rows) - 0.02), 1.06)
        ax.set_xlabel("AUROC for 'the soup is positive' (0.5 = chance, 1 = perfect ranking)")
        ax.set_title(f"Which pairs should I soup?\n{r.n_positive} positive of {r.n} soups; 95 % bootstrap "
                     f"intervals; dashed: shared epochs only")
        return _save(fig, folder, "auroc", svg)


def transitivity(r: TransitivityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 5 and A11: P(B,C positive) against the number of positive soups with A; gain(B,C) against the
    minimum and the mean of gain(A,B) and gain(A,C)."""
    if r.skipped:
        return []
    with _style():
        fig, axes = _figure(1, 3, width=12.0, height=3.8)
        ax = axes[0, 0]
        p, lo, hi = _prop_arrays(r.by_k)
        ok = np.isfinite(p)
        ks = np.arange(3)
        ax.bar(ks[ok], p[ok] * 100, color=[COLORS["negative"], COLORS["neutral"], COLORS["positive"]][:3],
               alpha=0.8)
        ax.errorbar(ks[ok], p[ok] * 100, yerr=[(p - lo)[ok] * 100, (hi - p)[ok] * 100], color="black", ls="none",
                    capsize=3)
        for k, prop in zip(ks, r.by_k):
            ax.text(k, 2, f"n = {prop.n}", ha="center", fontsize=7)
        ax.set_xticks(ks)
        ax.set_xlabel("positive soups of A with B and C")
        ax.set_ylabel("P(B,C positive) (%)")
        ax.set_ylim(0, 105)
        ax.set_title("P(B,C positive) vs soups with A")
        x_min, x_mean, y = r.plot["min"], r.plot["mean"], r.plot["gbc"]
        idx = _subsample(y.size)
        for ax, x, c, label, ref in ((axes[0, 1], x_min, r.rho_min, "min(gain(A,B), gain(A,C))",
                                      PAPER["transitivity_rho_min"]["value"]),
                                     (axes[0, 2], x_mean, r.rho_mean, "mean(gain(A,B), gain(A,C))",
                                      PAPER["transitivity_rho_mean"]["value"])):
            ax.scatter(x[idx], y[idx], s=4, alpha=0.3, lw=0, color=COLORS["acc"], rasterized=True)
            ax.axhline(0, color="black", lw=0.6)
            ax.axvline(0, color="black", lw=0.6)
            ax.set_xlabel(f"{label} (points)")
            ax.set_ylabel("gain(B,C) (points)")
            ax.set_title(f"{_rho_text(c)}; paper {ref:+.2f}", fontsize=9)
        fig.suptitle(f"Transitivity over {r.n_triples} hub triples (A; B, C)"
                     + (f", {MAX_POINTS} shown" if y.size > MAX_POINTS else ""))
        return _save(fig, folder, "transitivity", svg)


def transitivity_failure(r: TransitivityAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Tables 4–5 as a figure: p_fail = P(B,C not positive | A positive with both) by the triple's shared
    epochs and by |epoch_B − epoch_C|, with 95 % Wilson intervals and n."""
    if r.skipped or not (r.failure_by_shared_epochs or r.failure_by_epoch_diff):
        return []
    with _style():
        fig, axes = _figure(1, 2, width=10.0, height=3.6)
        for ax, rows, xlabel in ((axes[0, 0], r.failure_by_shared_epochs, "shared epochs of the triple (ABC)"),
                                 (axes[0, 1], r.failure_by_epoch_diff, "branch-epoch difference |B − C|")):
            if not rows:
                _empty(ax, "unknown epochs", xlabel=xlabel, ylabel="p_fail (%)")
                continue
            props = [row["p_fail"] for row in rows]
            p, lo, hi = _prop_arrays(props)
            x = np.arange(len(rows))
            ax.bar(x, p * 100, color=COLORS["negative"], alpha=0.7)
            ax.errorbar(x, p * 100, yerr=[(p - lo) * 100, (hi - p) * 100], color="black", ls="none", capsize=3)
            for xi, prop in zip(x, props):
                ax.text(xi, 1, f"n={prop.n}", ha="center", fontsize=7)
            ax.set_xticks(x)
            ax.set_xticklabels([row["bin"].label for row in rows], rotation=30, ha="right")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("p_fail (%)")
            ax.set_ylim(0, 105)
        axes[0, 0].set_title("Transitivity failure vs shared epochs (paper: 5.5–11.9 %)")
        axes[0, 1].set_title("Transitivity failure vs |B − C| (paper: 8.0–12.4 %)")
        return _save(fig, folder, "transitivity_failure", svg)


def landscape(r: LandscapeAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. 6: the MDS embedding, models coloured by branch epoch, edges for positive soups."""
    if r.skipped:
        return []
    coords, edges, g = r.plot["coords"], r.plot["edges"], r.plot["gains"]
    epochs = np.asarray(r.plot["epochs"], dtype=float)
    with _style():
        fig, axes = _figure(width=6.4, height=5.2)
        ax = axes[0, 0]
        if edges:
            from matplotlib.collections import LineCollection

            gains = np.array([g[i, j] for i, j in edges])
            lw = 0.4 + 1.6 * gains / max(gains.max(), 1e-9)
            ax.add_collection(LineCollection([coords[[i, j]] for i, j in edges], colors=COLORS["positive"],
                                             linewidths=lw, alpha=0.5, zorder=1))
        if np.isfinite(epochs).any():
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=np.where(np.isfinite(epochs), epochs, np.nan),
                            cmap="viridis", s=28, edgecolors="black", linewidths=0.4, zorder=2)
            fig.colorbar(sc, ax=ax, label="branch epoch")
        else:
            ax.scatter(coords[:, 0], coords[:, 1], color=COLORS["acc"], s=28, edgecolors="black", linewidths=0.4,
                       zorder=2)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("MDS dimension 1 (soup-gain distance)")
        ax.set_ylabel("MDS dimension 2")
        stress = f"Kruskal stress-1 = {r.stress_1:.2f}" if r.stress_1 is not None else ""
        ax.set_title(f"{len(r.models)} models, {r.n_positive_edges} positive soups (edges); {stress}")
        return _save(fig, folder, "landscape", svg)


def robustness(r: RobustnessAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Paper Fig. A12–A14: corrupted gain against clean gain (all soups, positive soups) and P(positive) against
    shared epochs, clean and corrupted."""
    if r.skipped:
        return []
    clean, corr, pos = r.plot["clean"], r.plot["corrupted"], r.plot["positive"]
    with _style():
        fig, axes = _figure(1, 3, width=12.0, height=3.8)
        for ax, mask, c, title in ((axes[0, 0], np.isfinite(clean), r.rho_all, "all soups"),
                                   (axes[0, 1], pos, r.r_positive, "positive soups (clean)")):
            idx = np.flatnonzero(mask & np.isfinite(corr))
            idx = idx[_subsample(idx.size)]
            ax.scatter(clean[idx], corr[idx], s=6, alpha=0.5, lw=0, color=COLORS["corrupted"], rasterized=True)
            if idx.size:
                lim = [min(clean[idx].min(), corr[idx].min()), max(clean[idx].max(), corr[idx].max())]
                ax.plot(lim, lim, color=COLORS["neutral"], ls=":", lw=0.8, label="y = x")
                ax.legend(loc="upper left")
            stat = "n/a" if c is None or c.rho is None else f"{c.method} {c.rho:+.2f}"
            ax.set_title(f"{title}: {stat}", fontsize=9)
            ax.set_xlabel("clean accuracy gain (points)")
            ax.set_ylabel("corrupted accuracy gain (points)")
        ax = axes[0, 2]
        if len(r.bins) >= 2:
            x = _bin_x(r.bins)
            _errorbar(ax, x, r.positive_clean_by_bin, color=COLORS["acc"], label="clean")
            _errorbar(ax, x, r.positive_corrupted_by_bin, color=COLORS["corrupted"], marker="s", label="corrupted")
            ax.set_xlabel(_bins_note(r.bins))
            ax.set_ylabel("P(gain > 0) (%)")
            ax.set_ylim(-2, 102)
            ax.legend(loc="best")
        else:
            _empty(ax, "shared epochs unknown", xlabel="shared epochs", ylabel="P(gain > 0) (%)")
        ax.set_title("P(positive) vs shared epochs", fontsize=9)
        sev = f" (severity {r.severity:g})" if r.severity is not None else ""
        fig.suptitle(f"Robustness: corrupted vs clean soup gain{sev} — paper: ρ 0.99 all, 0.61 positive")
        return _save(fig, folder, "robustness", svg)


def interpolation(r: InterpolationAnalysis, folder: Path, svg: bool = True, max_pairs: int = 16) -> list[Path]:
    """Paper Fig. A16: test accuracy and loss of (1 − α)·A + α·B against α for up to ``max_pairs`` pairs spread
    evenly over the ranking by midpoint gain."""
    if r.skipped or not r.pairs:
        return []
    pairs = sorted(r.pairs, key=lambda p: (-np.nan_to_num(p["gain_mid_pp"], nan=-np.inf), p["model_a"],
                                           p["model_b"]))
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
    ncols = min(4, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    with _style():
        fig, axes = _figure(nrows, ncols, width=3.1 * ncols, height=2.5 * nrows)
        for ax in axes.flat[len(pairs):]:
            ax.set_visible(False)
        for ax, p in zip(axes.flat, pairs):
            a = np.asarray(p["alphas"], dtype=float)
            ax.plot(a, np.asarray(p["acc"]) * 100, color=COLORS["acc"], marker="o", ms=3, lw=1.2)
            ax.axvline(ALPHA_MID, color=COLORS["neutral"], ls=":", lw=0.6)
            ax.set_ylabel("accuracy (%)", color=COLORS["acc"])
            ax.set_xlabel("α (weight of B)")
            twin = ax.twinx()
            twin.plot(a, p["loss"], color=COLORS["loss"], marker="s", ms=2.5, lw=1, ls="--")
            twin.set_ylabel("loss (nats)", color=COLORS["loss"])
            twin.grid(False)
            gain = p["gain_mid_pp"]
            ax.set_title(f"{p['model_a']} / {p['model_b']}" + (f"\nmidpoint gain {gain:+.2f} pts"
                                                                if gain is not None and math.isfinite(gain) else ""),
                         fontsize=8)
        fig.suptitle("Interpolation (1 − α)·A + α·B: accuracy (solid) and loss (dashed)")
        return _save(fig, folder, "interpolation", svg)


def soup_vs_ensemble(r: EnsembleAnalysis, folder: Path, svg: bool = True) -> list[Path]:
    """Soup vs logit ensemble: the two gains over the better ingredient per pair, and soup − ensemble."""
    if r.skipped:
        return []
    sg, eg, diff = r.plot["soup_gain"], r.plot["ensemble_gain"], r.plot["diff"]
    with _style():
        fig, axes = _figure(1, 2, width=10.0, height=3.8)
        ax = axes[0, 0]
        idx = _subsample(sg.size)
        ax.scatter(eg[idx], sg[idx], s=6, alpha=0.5, lw=0, color=COLORS["ensemble"], rasterized=True)
        finite = np.isfinite(sg) & np.isfinite(eg)
        if finite.any():
            lim = [min(sg[finite].min(), eg[finite].min()), max(sg[finite].max(), eg[finite].max())]
            ax.plot(lim, lim, color=COLORS["neutral"], ls=":", lw=0.8, label="soup = ensemble")
            ax.legend(loc="upper left")
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("ensemble gain over the better ingredient (points)")
        ax.set_ylabel("soup gain (points)")
        ax.set_title(f"Soup vs ensemble ({r.n} pairs)")
        ax = axes[0, 1]
        d = diff[np.isfinite(diff)]
        ax.hist(d, bins=min(50, max(5, int(np.sqrt(d.size)))), color=COLORS["ensemble"], alpha=0.8)
        ax.axvline(0, color="black", lw=0.8)
        better = r.soup_better.p * 100 if r.soup_better is not None else float("nan")
        ax.set_title(f"soup − ensemble: soup better in {better:.1f} % of pairs")
        ax.set_xlabel("soup accuracy − ensemble accuracy (points)")
        ax.set_ylabel("pairs")
        return _save(fig, folder, "soup_vs_ensemble", svg)


FIGURES: dict[str, tuple[str, Callable[..., list[Path]]]] = {
    "gain_cdf": ("gain", gain_cdf),
    "gain_vs_shared_epochs": ("shared_epochs", gain_vs_shared_epochs),
    "gain_quantiles_vs_shared_epochs": ("shared_epochs", gain_quantiles_vs_shared_epochs),
    "collapse_vs_shared_epochs": ("shared_epochs", collapse_vs_shared_epochs),
    "similarity_vs_gain": ("similarity", similarity_vs_gain),
    "similarity_vs_gain_positive": ("similarity", similarity_vs_gain_positive),
    "shared_epochs_vs_similarity": ("similarity", shared_epochs_vs_similarity),
    "auroc": ("similarity", auroc),
    "transitivity": ("transitivity", transitivity),
    "transitivity_failure": ("transitivity", transitivity_failure),
    "landscape": ("landscape", landscape),
    "robustness": ("robustness", robustness),
    "interpolation": ("interpolation", interpolation),
    "soup_vs_ensemble": ("ensemble", soup_vs_ensemble),
}
"""Figure name → (the :class:`StudyAnalysis` section it draws, its function)."""


def write_figures(analysis: StudyAnalysis, folder: str | Path, *, svg: bool = True) -> dict[str, list[Path]]:
    """Draw every figure the analysis supports into ``folder`` (``NAME.png`` and ``NAME.svg``); returns figure name
    → files written (figures of skipped analyses are absent)."""
    folder = Path(folder)
    out = {}
    for name, (section, draw) in FIGURES.items():
        files = draw(getattr(analysis, section), folder, svg)
        if files:
            out[name] = files
    return out
