"""``hfsoup study report``: the pair study's tables turned into the paper's findings, side by side with the paper's.

:func:`write_report` reads a study folder written by ``hfsoup study run`` (``pairs.parquet``, and when present
``models.parquet`` and ``study.json``), runs every analysis of :mod:`hfsoup.study.analysis`, draws the figures of
:mod:`hfsoup.study.figures` and writes, atomically, one folder::

    OUT/report.md       every analysis: how to read it, its figure, its numbers, the paper's figure beside them
    OUT/report.html     the same, self-contained (figures embedded as data URIs, no network reference at all)
    OUT/figures/*.png   and *.svg
    OUT/summary.json    every number the report prints (sorted keys, no timestamps: the same table, the same file)

Nothing is re-evaluated: the report reads the tables only, so it runs in seconds without torch.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hfsoup.core.files import atomic_folder, atomic_write_text, check_output, dumps_json
from hfsoup.errors import HfSoupError
from hfsoup.study.analysis import PAPER, Correlation, PairTable, Proportion, StudyAnalysis, analyse, jsonable
from hfsoup.study.table import MODELS_FILE, PAIRS_FILE, STUDY_FILE

__all__ = ["REPORT_FILES", "StudyTables", "ReportResult", "load_study", "headline", "render_markdown",
           "render_html", "write_report"]

REPORT_FILES = ("report.md", "report.html", "summary.json")
SUMMARY_VERSION = 1


# --------------------------------------------------------------------------------------------------------- input
@dataclass
class StudyTables:
    """The tables of a study folder: the pairs (all rows), the models (may be empty) and the run's parameters."""

    pairs: PairTable
    models: list[dict] = field(default_factory=list)
    study: dict = field(default_factory=dict)


def load_study(study_dir: str | Path) -> StudyTables:
    """Read ``pairs.parquet`` (required), ``models.parquet`` and ``study.json`` (optional) of a study folder."""
    import pyarrow.parquet as pq

    study_dir = Path(study_dir)
    pairs = study_dir / PAIRS_FILE
    if not pairs.is_file():
        hint = (" (it has shards: run `hfsoup study run` again to merge them)"
                if (study_dir / "shards").is_dir() else "")
        raise HfSoupError(f"no pairs.parquet in '{study_dir}'{hint}: run `hfsoup study run MODELS --out "
                          f"{study_dir}` first, or pass the folder of a finished study", path=study_dir)
    try:
        table = PairTable.from_columns(pq.read_table(pairs).to_pydict())
        models_path = study_dir / MODELS_FILE
        models = pq.read_table(models_path).to_pylist() if models_path.is_file() else []
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise HfSoupError(f"cannot read the study tables in '{study_dir}': {str(e).splitlines()[0]}",
                          path=study_dir) from e
    study: dict = {}
    if (study_dir / STUDY_FILE).is_file():
        try:
            study = json.loads((study_dir / STUDY_FILE).read_text(encoding="utf-8"))
        except ValueError as e:
            raise HfSoupError(f"'{study_dir / STUDY_FILE}' is not valid JSON: {e}", path=study_dir) from e
    return StudyTables(table, models, study if isinstance(study, dict) else {})


# ------------------------------------------------------------------------------------------------- formatting
def _fmt(x: Any, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def _pct(p: Proportion | None, counts: bool = True) -> str:
    """'27.5 % [22.6–33.1] (76/276)'"""
    if p is None or p.n == 0:
        return "n/a"
    lo, hi = p.interval
    text = f"{p.p * 100:.1f} % [{lo * 100:.1f}–{hi * 100:.1f}]"
    return f"{text} ({p.k}/{p.n})" if counts else text


def _corr(c: Correlation | None) -> str:
    if c is None:
        return "n/a"
    if c.rho is None:
        return f"n/a ({c.skipped})" if c.skipped else "n/a"
    return f"{c.rho:+.2f} (n = {c.n})"


def _paper(key: str, spec: str = "+.2f") -> str:
    return format(PAPER[key]["value"], spec)


def _ci(lo: Any, hi: Any, spec: str = ".3f") -> str:
    return f"[{_fmt(lo, spec)}, {_fmt(hi, spec)}]" if lo is not None and hi is not None else ""


# ------------------------------------------------------------------------------------------------------- headline
def headline(a: StudyAnalysis) -> list[dict]:
    """The headline findings, ours beside the paper's: ``finding``, ``ours`` (text), ``value`` (the number or
    None), ``paper`` (text). The report's first table, the summary's ``headline`` and the demo's printout."""
    rows: list[dict] = []

    def add(finding: str, value: Any, ours: str, paper: str) -> None:
        rows.append({"finding": finding, "value": value, "ours": ours, "paper": paper})

    g = a.gain
    pos = g.acc.positive if g.acc is not None and g.skipped is None else None
    add("soups with a positive accuracy gain", pos.p if pos else None, _pct(pos), "14 %")
    if g.collapse is not None:
        add("collapsed soups", g.collapse.p, _pct(g.collapse), "—")
    s = a.shared_epochs
    if s.skipped is None and s.last_bin_positive is not None:
        add(f"P(gain > 0) in the last shared-epoch bin ({s.bins[-1].label})", s.last_bin_positive.p,
            _pct(s.last_bin_positive), "≈ 80 % past 260 shared epochs")
    kl = next((m for m in a.similarity.metrics if m.name == "kl" and m.skipped is None), None)
    if kl is not None:
        add("Spearman ρ(KL, gain), all soups", kl.rho_all.rho, _corr(kl.rho_all), _paper("kl_rho_all"))
        add("Spearman ρ(KL, gain), positive soups", kl.rho_positive.rho, _corr(kl.rho_positive),
            _paper("kl_rho_positive"))
        add("Spearman ρ(shared epochs, KL)", kl.rho_shared_epochs.rho, _corr(kl.rho_shared_epochs),
            _paper("shared_epochs_kl_rho"))
    sim = a.similarity
    best = next((m for m in sim.metrics if m.name == sim.best_metric), None)
    if best is not None and best.auroc is not None:
        base = sim.baseline
        base_text = (f"; shared epochs alone {_fmt(base.auc, '.3f')}" if base is not None and base.auc is not None
                     else "")
        add(f"best predictor of a positive soup: {best.name} (AUROC)", best.auroc.auc,
            f"{_fmt(best.auroc.auc, '.3f')} {_ci(best.auroc.lo, best.auroc.hi)}{base_text}", "not in the paper")
    t = a.transitivity
    if t.skipped is None:
        add("transitivity: Spearman ρ(gain(B,C), min(gain(A,B), gain(A,C)))", t.rho_min.rho, _corr(t.rho_min),
            _paper("transitivity_rho_min"))
        add("transitivity: the same with the mean", t.rho_mean.rho, _corr(t.rho_mean),
            _paper("transitivity_rho_mean"))
        if t.failure is not None:
            add("transitivity failure: P(B,C not positive | A positive with both)", t.failure.p, _pct(t.failure),
                "5.5–11.9 % by bin (Table 4)")
    r = a.robustness
    if r.skipped is None:
        add("Spearman ρ(clean gain, corrupted gain), all soups", r.rho_all.rho, _corr(r.rho_all),
            _paper("corrupted_rho_all"))
        add("Pearson r(clean gain, corrupted gain), positive soups", r.r_positive.rho, _corr(r.r_positive),
            _paper("corrupted_r_positive"))
    e = a.ensemble
    if e.skipped is None and e.soup_better is not None:
        add("soup better than the logit ensemble of its pair", e.soup_better.p, _pct(e.soup_better),
            "not in the paper")
    return rows


# ---------------------------------------------------------------------------------------------------- document
class _Doc:
    """A report as a list of blocks, rendered to Markdown and to HTML by the same code path."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(headers), [[str(c) for c in r] for r in rows]))

    def fig(self, name: str, caption: str) -> None:
        self.blocks.append(("fig", name, caption))

    def skipped(self, reason: str) -> None:
        self.blocks.append(("p", f"**Not enough data for this analysis:** {reason}."))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: _Doc, figures: dict[str, str]) -> str:
    """Markdown of the document; ``figures`` maps a figure name to its relative path (figures/NAME.png)."""
    out: list[str] = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "fig" and block[1] in figures:
            out.append(f"![{block[2]}]({figures[block[1]]})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-style: italic; font-size: .9em; color: #555; }
"""


def _inline(text: str) -> str:
    """HTML of one line of report text: escaped, with `code` and **bold**; '://' is broken so that no text from
    the study (a dataset URL, an error message) becomes a network reference in the page."""
    text = html.escape(text, quote=False).replace("://", ":&#47;&#47;")
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def render_html(doc: _Doc, images: dict[str, bytes], title: str) -> str:
    """A self-contained HTML page of the document: inline CSS, PNG figures as base64 data URIs, nothing fetched."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "fig" and block[1] in images:
            data = base64.b64encode(images[block[1]]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(block[2])}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ sections
def _section_overview(doc: _Doc, a: StudyAnalysis, tables: StudyTables, study_dir: Path) -> None:
    o = a.overview
    doc.h(1, "Pair study report")
    doc.p(f"Study folder: `{study_dir.name}`. {o.n_soups} midpoint soups (α = 0.5) of {o.n_models} models from "
          f"{o.n_rows} table rows ({o.n_ok} ok, {o.n_failed} failed); α values run: "
          f"{', '.join(f'{x:g}' for x in o.alphas) or 'none'}.")
    test_data = _test_data_text(tables.study)
    if test_data:
        doc.p(test_data)
    if o.ingredient_acc:
        acc = o.ingredient_acc
        doc.p(f"Ingredient test accuracy: {_fmt(acc['min'] * 100, '.1f')} % to {_fmt(acc['max'] * 100, '.1f')} % "
              f"(median {_fmt(acc['median'] * 100, '.1f')} %). A soup can only show a gain where the better "
              f"ingredient leaves headroom below 100 %.")
    if tables.study:
        doc.p("Run parameters (`study.json`):")
        doc.table(["parameter", "value"], _study_rows(tables.study))
    if o.errors:
        doc.p(f"{o.n_failed} rows failed and are left out of every analysis; most frequent errors:")
        doc.table(["error", "rows"], [(e["error"], e["count"]) for e in o.errors])
    doc.p("Numbers in this report are this study's; the paper's (ResNet-50 on CIFAR-100, 104 models, 5,356 soups) "
          "are shown beside them and always labelled **paper**. Accuracy gains are in percentage points (pts), loss "
          "gains in nats. A soup is *positive* when its gain is > 0 (a tie is not). Intervals are 95 %: Wilson "
          "score intervals for proportions, percentile bootstrap for AUROCs.")
    doc.h(2, "Headline: this study and the paper")
    doc.table(["finding", "this study", "paper"], [(r["finding"], r["ours"], r["paper"]) for r in headline(a)])


def _test_data_text(study: dict) -> str | None:
    """The test data of the study (``study.json`` settings): the split's size, how many images were evaluated,
    and what one image is worth in accuracy points, on them and on the whole split. None when not recorded."""
    settings = study.get("settings") if isinstance(study, dict) else None
    if not isinstance(settings, dict):
        return None
    n, total = settings.get("num_samples"), settings.get("split_size")
    if not isinstance(n, int) or n <= 0:
        return None
    text = f"Test data: `{settings.get('dataset')}`, {settings.get('split') or 'test'} split"
    if isinstance(total, int) and total > n:
        text += (f" of {total:,} images, the first {n:,} evaluated (`--limit {settings.get('limit') or n}`): one "
                 f"image is {100 / n:.2f} accuracy points here ({100 / total:.2f} on the whole split).")
    elif isinstance(total, int) and total == n:
        text += f" of {n:,} images, all evaluated: one image is {100 / n:.2f} accuracy points."
    else:
        text += f", {n:,} images evaluated: one image is {100 / n:.2f} accuracy points."
    return text + " A gain of one or two images is within the noise of one test set."


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _study_parameters(study: dict) -> dict:
    """study.json without its per-model list (models.parquet has it; the report prints the count only)."""
    return {k: v for k, v in study.items() if k != "models"}


def _study_rows(study: dict) -> list[tuple[str, str]]:
    """study.json as (parameter, value) rows: nested settings one level deep, the model list as its length."""
    rows = []
    for key, value in sorted(study.items()):
        if key == "models" and isinstance(value, list):
            rows.append(("models", f"{len(value)} (listed in models.parquet)"))
        elif isinstance(value, dict):
            rows += [(f"{key}.{k}", _short(v)) for k, v in sorted(value.items())]
        else:
            rows.append((key, _short(value)))
    return rows


def _section_gain(doc: _Doc, a: StudyAnalysis) -> None:
    g = a.gain
    doc.h(2, "1. Soup gain (paper Fig. 1)")
    doc.p("**What it is.** The accuracy gain of a soup is its test accuracy minus that of its *better* ingredient "
          "(paper §1); the loss gain is the better ingredient's loss minus the soup's loss (\"Too Salty\"). "
          "**How to read it.** The curve is the empirical CDF: its height at x is the fraction of soups with gain "
          "≤ x. The height at x = 0 is the fraction that does *not* beat its better ingredient; a long flat run at "
          "very negative gains is collapse (the soup is near chance).")
    if g.skipped:
        doc.skipped(g.skipped)
        return
    doc.fig("gain_cdf", "Empirical CDF of the accuracy gain (left) and loss gain (right) over all midpoint soups.")
    rows = []
    for label, stats, unit in (("accuracy gain", g.acc, "pts"), ("loss gain", g.loss, "nats")):
        if stats is None or stats.skipped:
            continue
        q = stats.quantiles
        rows.append((label, stats.n, _pct(stats.positive), f"{stats.fraction_zero * 100:.1f} %",
                     f"{_fmt(stats.mean, '+.3f')} {unit}",
                     f"{_fmt(q['q05'], '+.2f')} / {_fmt(q['q50'], '+.2f')} / {_fmt(q['q95'], '+.2f')} {unit}",
                     f"{_fmt(stats.min, '+.2f')} … {_fmt(stats.max, '+.2f')}"))
    doc.table(["gain", "soups", "positive", "exactly 0", "mean", "5 % / median / 95 %", "range"], rows)
    if g.acc is not None:
        doc.table(["k (pts)", "P(accuracy gain > k)"], [(f"{e['k']:+g}", _pct(e["p"])) for e in g.acc.greater_than])
    if g.collapse is not None:
        doc.p(f"Collapsed soups (the study's `collapsed` flag): {_pct(g.collapse)}.")
    doc.p("**Paper:** 14 % of soups positive; 40 % lose more than 60 points (collapse); only 15 % between −70 and "
          "−20 points.")


def _section_shared(doc: _Doc, a: StudyAnalysis) -> None:
    s = a.shared_epochs
    doc.h(2, "2. Shared epochs (paper Fig. 2, A3–A5)")
    doc.p("**What it is.** The shared epochs of a pair are the smaller of the two branch epochs: the training the two "
          "models have in common before branching. **How to read it.** Each point is the fraction of the soups in "
          "that shared-epoch bin whose gain exceeds k, with its 95 % Wilson interval (wide intervals = few soups "
          "in the bin); one curve per k. The quantile figure shows the whole distribution per bin; the mean of the "
          "positive soups shows whether gains shrink once the models become too similar.")
    if s.skipped:
        doc.skipped(s.skipped)
        return
    doc.fig("gain_vs_shared_epochs", "P(gain > k) vs shared epochs, accuracy (left) and loss (right), 95 % Wilson "
                                     "intervals.")
    doc.fig("gain_quantiles_vs_shared_epochs", "Quantiles, mean and mean positive gain vs shared epochs.")
    doc.fig("collapse_vs_shared_epochs", "P(collapse) and P(positive) vs shared epochs.")
    ks = s.acc.greater_than if s.acc is not None else []
    headers = ["shared epochs", "soups"] + [f"P(acc gain > {e['k']:+g})" for e in ks] + ["median gain (pts)",
                                                                                          "mean positive gain"]
    if s.collapse is not None:
        headers.append("P(collapse)")
    rows = []
    for i, b in enumerate(s.bins):
        row = [b.label, s.n_by_bin[i]] + [_pct(e["by_bin"][i], counts=False) for e in ks]
        row += [_fmt(s.acc.quantiles["q50"][i], "+.2f"), _fmt(s.acc.mean_positive[i], "+.2f")]
        if s.collapse is not None:
            row.append(_pct(s.collapse[i], counts=False))
        rows.append(row)
    doc.table(headers, rows)
    doc.p(f"Spearman ρ(shared epochs, accuracy gain) = {_corr(s.rho_acc)}; with the loss gain {_corr(s.rho_loss)}.")
    doc.p("**Paper:** P(gain > 0) rises with shared epochs to about 80 % past 260 shared epochs, where almost no soup "
          "loses more than 5 points; peak gains (> 0.5 points) need a middle ground; collapse never occurs past 250 "
          "shared epochs.")


def _section_similarity(doc: _Doc, a: StudyAnalysis) -> None:
    s = a.similarity
    doc.h(2, "3. Similarity predicts soupability (paper Fig. 3, 4, A6–A10; AUROC beyond the paper)")
    doc.p("**What it is.** Each similarity metric of the pair (weights: L2, cosine; outputs on the test set: "
          "symmetric KL, logit MSE, CKA of logits and features, top-1 disagreement) against the soup gain. **How to "
          "read it.** For a distance (L2, KL, MSE, disagreement) a negative Spearman ρ, for a similarity (cosine, "
          "CKA) a positive one, means: more similar pairs soup better. Over positive soups only, the paper finds "
          "the opposite sign: among soups that work, more diverse pairs gain more.")
    doc.p("**Which pairs should I soup?** The AUROC is the probability that a random positive soup's pair is "
          "ranked as more similar than a random non-positive one (0.5 = chance, 1 = perfect). The orientation is "
          "fixed in advance (more similar = predicted positive; the `score` column says how), so an AUROC below "
          "0.5 means the metric ranks the wrong way. The baseline knows only the shared epochs (more = predicted "
          "positive); Δ is the metric's AUROC minus the baseline's on the same soups, with a paired bootstrap "
          "interval: an interval above 0 means the metric ranks better than the branch epochs alone.")
    if s.skipped:
        doc.skipped(s.skipped)
        return
    doc.fig("similarity_vs_gain", "Each metric vs accuracy gain, all soups (green: positive).")
    doc.fig("similarity_vs_gain_positive", "Each metric vs accuracy gain, positive soups only.")
    doc.fig("shared_epochs_vs_similarity", "Each metric vs shared epochs (mean ± sd per bin).")
    doc.fig("auroc", "AUROC for predicting a positive soup, 95 % bootstrap intervals; dashed: shared-epochs "
                     "baseline; dotted: chance.")
    rows = []
    for m in s.metrics:
        if m.skipped:
            rows.append((m.name, m.label, "—", "—", "—", "—", "—", m.skipped))
            continue
        au, d = m.auroc, m.auroc_vs_baseline
        au_text = (f"{_fmt(au.auc, '.3f')} {_ci(au.lo, au.hi)}" if au.skipped is None else f"n/a ({au.skipped})")
        d_text = (f"{_fmt(d.diff, '+.3f')} {_ci(d.lo, d.hi, '+.3f')}" if d is not None and d.skipped is None
                  else f"n/a ({d.skipped})" if d is not None else "n/a")
        rows.append((m.name, m.label, _corr(m.rho_all), _corr(m.rho_positive), _corr(m.rho_shared_epochs),
                     au.score if au is not None else "", au_text, d_text))
    doc.table(["metric", "what", "ρ with gain (all)", "ρ with gain (positive)", "ρ with shared epochs", "score",
               "AUROC [95 %]", "Δ AUROC vs shared epochs [95 %]"], rows)
    b = s.baseline
    if b is not None:
        doc.p(f"Baseline (shared epochs only): AUROC {_fmt(b.auc, '.3f')} {_ci(b.lo, b.hi)}"
              + (f" ({b.skipped})" if b.skipped else "") + f"; {s.n_positive} positive of {s.n} soups; "
              f"{b.n_boot} bootstrap resamples.")
    doc.p(f"**Paper:** KL vs gain ρ = {_paper('kl_rho_all')} over all soups, {_paper('kl_rho_positive')} over "
          f"positive soups; shared epochs vs KL ρ = {_paper('shared_epochs_kl_rho')}; all metrics perform similarly. "
          "The paper reports no AUROC.")


def _section_transitivity(doc: _Doc, a: StudyAnalysis) -> None:
    t = a.transitivity
    doc.h(2, "4. Transitivity (paper Fig. 5, A11, Tables 4–5)")
    doc.p("**What it is.** A hub triple (A; B, C) is a model A and a pair {B, C} of two other models, all three "
          "soups known; each unordered triple counts once per choice of A. **How to read it.** If souping were "
          "transitive (positive soups sharing one low-loss basin), B and C would soup when A soups with both: the "
          "bar at 2 would be near 100 % and the bars at 0 and 1 low. The scatter shows gain(B,C) against the "
          "weaker (min) and the average (mean) of A's two soups. p_fail is the fraction of triples with A "
          "positive with both B and C whose (B, C) soup is not positive, by the triple's shared epochs (the "
          "smallest branch epoch of the three) and by |epoch_B − epoch_C|.")
    if t.skipped:
        doc.skipped(t.skipped)
        return
    doc.fig("transitivity", "P(B,C positive) vs the number of positive soups with A; gain(B,C) vs the min and the "
                            "mean of gain(A,B), gain(A,C).")
    doc.fig("transitivity_failure", "Transitivity failure p_fail by shared epochs and by |B − C|, 95 % Wilson "
                                    "intervals.")
    doc.table(["positive soups of A with B, C", "triples", "P(B,C positive)"],
              [(k, p.n, _pct(p, counts=False)) for k, p in enumerate(t.by_k)])
    doc.p(f"{t.n_triples} hub triples over {t.n_models} models. Spearman ρ(gain(B,C), min) = {_corr(t.rho_min)} "
          f"(paper {_paper('transitivity_rho_min')}); with the mean {_corr(t.rho_mean)} "
          f"(paper {_paper('transitivity_rho_mean')}). Overall p_fail: {_pct(t.failure)}.")
    for title, rows, ref in (("shared epochs (ABC)", t.failure_by_shared_epochs, PAPER["table4"]),
                             ("|B − C| (epochs)", t.failure_by_epoch_diff, PAPER["table5"])):
        if rows:
            doc.table([title, "n", "p_fail [95 %]"], [(r["bin"].label, r["p_fail"].n, _pct(r["p_fail"], False))
                                                       for r in rows])
        doc.p(f"**Paper, {ref['where']}:** " + "; ".join(f"{r['bin']}: n = {r['n']}, p_fail = {r['p_fail']:.3f}"
                                                         for r in ref["rows"]) + ".")


def _section_landscape(doc: _Doc, a: StudyAnalysis) -> None:
    m = a.landscape
    doc.h(2, "5. The landscape (paper Fig. 6, A.6)")
    doc.p("**What it is.** A 2-D metric multidimensional scaling (scikit-learn MDS, precomputed dissimilarities, "
          "4 seeded starts) of the models with the paper's distance d = −sign(g) − 0.1·g, g the pair's accuracy "
          "gain in points: −1 − 0.1·g for a positive soup (the larger the gain, the closer), 1 + 0.1·|g| for a "
          "negative one, 0 for a gain of exactly 0; 0 on the diagonal. A pair without a result (a failed soup) gets "
          "the largest known distance. **How to read it.** Points are models coloured by branch epoch, green edges "
          "positive soups (thicker = larger gain). Models that soup well together sit close; a single cluster with "
          "most edges supports one shared basin. The axes have no units; rotation and reflection are arbitrary. "
          "Distances of positive soups are negative, which no embedding can reproduce, so MDS pulls such pairs as "
          "close as it can and the stress cannot reach 0.")
    if m.skipped:
        doc.skipped(m.skipped)
        return
    doc.fig("landscape", "MDS embedding with the soup-gain distance; edges: positive soups.")
    doc.table(["models", "positive soups (edges)", "components of the positive-soup graph", "largest component",
               "models without a positive soup", "imputed pairs", "Kruskal stress-1", "raw stress (sklearn)"],
              [(len(m.models), m.n_positive_edges, m.n_components, m.largest_component, m.n_isolated, m.n_imputed,
                _fmt(m.stress_1, ".3f"), _fmt(m.stress, ".4g"))])
    doc.p("**Paper:** the most successful soups form the edges of a single connected component, with one dense "
          "cluster of models branched late in training.")


def _section_robustness(doc: _Doc, a: StudyAnalysis) -> None:
    r = a.robustness
    doc.h(2, "6. Robustness to corruption (paper Fig. A12–A14)")
    doc.p("**What it is.** The soup gain on corrupted test data (mean over the corruptions at one severity) against "
          "the clean gain of the same soup. **How to read it.** Points on the diagonal gain as much under "
          "corruption as on clean data; a high Spearman ρ over all soups mostly says that collapse on clean data "
          "is collapse on corrupted data too; the positive soups show whether the size of a real gain carries "
          "over. The right panel compares P(positive) clean and corrupted by shared epochs.")
    if r.skipped:
        doc.skipped(r.skipped)
        return
    doc.fig("robustness", "Corrupted vs clean accuracy gain (all soups, positive soups) and P(positive) vs shared "
                          "epochs.")
    doc.table(["soups", "severity", "ρ all (Spearman)", "ρ positive (Spearman)", "r positive (Pearson)",
               "ρ loss gain (Spearman)", "positive clean", "positive corrupted"],
              [(r.n, _fmt(r.severity, "g"), _corr(r.rho_all), _corr(r.rho_positive), _corr(r.r_positive),
                _corr(r.rho_loss), _pct(r.positive_clean), _pct(r.positive_corrupted))])
    doc.p(f"**Paper (CIFAR-100-C, severity 3):** Spearman {_paper('corrupted_rho_all')} over all soups; 0.61 over "
          "positive soups (Pearson in the text, Spearman in Fig. A14's caption); P(positive) rises with shared "
          "epochs for both, always lower on corrupted data.")


def _section_interpolation(doc: _Doc, a: StudyAnalysis) -> None:
    it = a.interpolation
    doc.h(2, "7. Interpolation (paper Fig. A16)")
    doc.p("**What it is.** Test accuracy and loss of (1 − α)·A + α·B along α for the pairs the study ran with "
          "several α (A, B in name order; α = 0 and 1 are the ingredients). **How to read it.** A dip in the "
          "middle is a loss barrier; a bump above both ends is a positive soup. The paper uses the midpoint as the "
          "pair's summary: `sign agrees` counts pairs whose midpoint gain and best gain over the α grid are both "
          "positive or both not, `minimum at α = 0.5` pairs whose lowest interior accuracy is at the midpoint.")
    if it.skipped:
        doc.skipped(it.skipped)
        return
    doc.fig("interpolation", "Accuracy (solid) and loss (dashed) along α for up to 16 pairs spread over the "
                             "ranking by midpoint gain.")
    doc.p(f"{it.n_pairs} pairs with several α. Midpoint and best-α gain agree in sign: {_pct(it.sign_agrees)}; "
          f"lowest interior accuracy at α = 0.5: {_pct(it.min_at_midpoint)}.")
    rows = [(p["model_a"], p["model_b"], ", ".join(f"{x:g}" for x in p["alphas"]), _fmt(p["gain_mid_pp"], "+.2f"),
             _fmt(p["best_alpha"], "g"), _fmt(p["best_gain_pp"], "+.2f")) for p in it.pairs[:40]]
    doc.table(["A", "B", "α", "midpoint gain (pts)", "best α", "best gain (pts)"], rows)
    if it.n_pairs > 40:
        doc.p(f"(first 40 of {it.n_pairs} pairs; all are in summary.json)")
    doc.p("**Paper:** the midpoint is an accurate indicator of collapse, and indicative but less accurate for the "
          "size of a positive gain.")


def _section_ensemble(doc: _Doc, a: StudyAnalysis) -> None:
    e = a.ensemble
    doc.h(2, "8. Soup vs ensemble")
    doc.p("**What it is.** The midpoint soup (one model, one forward pass) against the logit ensemble of the same "
          "two models (two forward passes). **How to read it.** Points above the diagonal are pairs where souping "
          "beats ensembling; the histogram is soup − ensemble accuracy. Ensembles rarely collapse, so the gap is "
          "what a user gives up by souping an unsuitable pair.")
    if e.skipped:
        doc.skipped(e.skipped)
        return
    doc.fig("soup_vs_ensemble", "Soup gain vs ensemble gain over the better ingredient; soup − ensemble accuracy.")
    d, dp = e.soup_minus_ensemble_pp, e.positive_soups.get("soup_minus_ensemble_pp", {})
    doc.table(["soups", "soup − ensemble, mean / median (pts)", "soup better", "soup at least as good",
               "ensemble beats its better ingredient", "mean ensemble gain (pts)",
               "positive soups: soup − ensemble, mean (pts)", "positive soups: soup better"],
              [(e.n, f"{_fmt(d.get('mean'), '+.2f')} / {_fmt(d.get('median'), '+.2f')}", _pct(e.soup_better),
                _pct(e.soup_at_least_as_good), _pct(e.ensemble_positive), _fmt(e.ensemble_gain_mean_pp, "+.2f"),
                _fmt(dp.get("mean"), "+.2f"), _pct(e.positive_soups.get("soup_better")))])
    doc.p("**Paper:** not studied (the paper compares soups with SWA instead).")


_LIMITS = [
    "**Causes.** Every number here is a correlation over one zoo. Similarity and shared epochs are correlated with "
    "each other; none of the analyses shows that making two models more similar would make their soup better.",
    "**Independent evidence.** The soups share models (each model is in n − 1 soups; the triples overlap), but the "
    "Wilson and bootstrap intervals and the p-values treat soups as independent: they are too narrow.",
    "**Test-set noise.** Each gain is measured once on one test set: one image is 100 / N points, and gains "
    "of that size are within noise. No analysis repeats training seeds.",
    "**Prediction on new zoos.** The AUROCs are measured on the same soups that define the positives; how well "
    "a metric ranks the pairs of another zoo (another architecture, dataset or trunk) is not shown.",
    "**Other soups.** Pairwise soups at α = 0.5 (and the α grid where it was run) only: nothing here is about "
    "greedy or uniform soups of many models, learned α, or other souping methods.",
    "**The paper's scale.** The paper's figures are for ResNet-50 on CIFAR-100 with 104 models; a different zoo "
    "(e.g. the demo's mini-zoo on digits) can be compared in direction, not in magnitude.",
    "**The landscape.** A 2-D picture of a non-metric distance (negative for positive soups) is a distortion; its "
    "clusters are suggestive only (see the stress).",
]


def _section_limits(doc: _Doc, tables: StudyTables) -> None:
    doc.h(2, "What none of these analyses shows")
    items = list(_LIMITS)
    settings = tables.study.get("settings")
    n = settings.get("num_samples") if isinstance(settings, dict) else None
    if isinstance(n, int) and n > 0:
        items[2] += f" Here N = {n}: one image is {100 / n:.2f} points."
    doc.ul(items)


def _build(a: StudyAnalysis, tables: StudyTables, study_dir: Path) -> _Doc:
    doc = _Doc()
    _section_overview(doc, a, tables, study_dir)
    for section in (_section_gain, _section_shared, _section_similarity, _section_transitivity, _section_landscape,
                    _section_robustness, _section_interpolation, _section_ensemble):
        section(doc, a)
    _section_limits(doc, tables)
    return doc


# ------------------------------------------------------------------------------------------------------- output
@dataclass
class ReportResult:
    """What :func:`write_report` wrote: the folder, its files, and the summary (the content of summary.json)."""

    out: Path
    report_md: Path
    report_html: Path
    summary_json: Path
    figures: dict[str, list[Path]]
    summary: dict
    skipped: dict[str, str]

    @property
    def headline(self) -> list[dict]:
        return self.summary.get("headline", [])

    def to_dict(self) -> dict:
        return {"out": str(self.out), "report_md": str(self.report_md), "report_html": str(self.report_html),
                "summary_json": str(self.summary_json),
                "figures": {k: [str(p) for p in v] for k, v in sorted(self.figures.items())},
                "skipped": dict(self.skipped), "headline": self.headline}


def _summary(a: StudyAnalysis, tables: StudyTables, figures: dict[str, list[Path]], *, seed: int,
             n_boot: int) -> dict:
    analyses = {name: section for name, section in a.sections()}
    return jsonable({
        "summary_version": SUMMARY_VERSION,
        "study": _study_parameters(tables.study),
        "parameters": {"seed": seed, "n_boot": n_boot},
        "headline": [{k: r[k] for k in ("finding", "value", "ours", "paper")} for r in headline(a)],
        "analyses": analyses,
        "skipped": a.skipped,
        "figures": {name: sorted(f"figures/{p.name}" for p in files) for name, files in sorted(figures.items())},
        "paper": a.paper,
    })


def write_report(study_dir: str | Path, out: str | Path | None = None, *, force: bool = False, seed: int = 0,
                 n_boot: int = 1000, svg: bool = True) -> ReportResult:
    """Analyse a study folder and write its report (see the module docstring) to ``out``
    (default ``STUDY_DIR/report``).

    Args:
        study_dir: folder of ``hfsoup study run`` with ``pairs.parquet`` (``models.parquet``, ``study.json``
            optional).
        out: report folder; it must not exist unless ``force`` (then it is replaced atomically, only once the new
            report is complete).
        seed: seed of the bootstrap resamples and of the MDS starts (the same table and seed give the same report).
        n_boot: bootstrap resamples for the AUROC intervals.
        svg: also write ``figures/*.svg``.

    Raises:
        OutputExistsError: ``out`` exists and ``force`` is not set (checked before any work).
        HfSoupError: the study folder has no readable ``pairs.parquet``.
    """
    from hfsoup.study.figures import write_figures

    study_dir = Path(study_dir)
    out = Path(out) if out is not None else study_dir / "report"
    check_output(out, force)
    tables = load_study(study_dir)
    analysis = analyse(tables.pairs, seed=seed, n_boot=n_boot)
    with atomic_folder(out, force=force) as tmp:
        drawn = write_figures(analysis, tmp / "figures", svg=svg)
        pngs = {name: next(p for p in files if p.suffix == ".png") for name, files in drawn.items()}
        doc = _build(analysis, tables, study_dir)
        atomic_write_text(tmp / "report.md", render_markdown(doc, {k: f"figures/{p.name}" for k, p in pngs.items()}))
        atomic_write_text(tmp / "report.html", render_html(doc, {k: p.read_bytes() for k, p in pngs.items()},
                                                           title=f"Pair study report: {study_dir.name}"))
        summary = _summary(analysis, tables, drawn, seed=seed, n_boot=n_boot)
        atomic_write_text(tmp / "summary.json", dumps_json(summary))
    figures = {name: [out / "figures" / p.name for p in files] for name, files in drawn.items()}
    return ReportResult(out=out, report_md=out / "report.md", report_html=out / "report.html",
                        summary_json=out / "summary.json", figures=figures, summary=summary,
                        skipped=analysis.skipped)
