"""Robustness to corruptions: accuracy and loss of models and soups on CIFAR-100-C per corruption and severity,
the mean over the selected corruptions (the paper's headline is the mean at severity 3), the soup gain on
corrupted data beside the clean gain, and the robustness gap (corrupted loss − clean loss).

Each (corruption, severity) cell is decoded once and every model is evaluated on it in large batches before the
next cell is loaded, so memory holds one cell at a time.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from hfsoup.data.cifar100c import DEFAULT_CORRUPTED_DATASET, iter_corrupted, parse_corruptions, parse_severities
from hfsoup.core.results import SplitResult
from hfsoup.errors import HfSoupError
from hfsoup.eval.metrics import EvalResult, choose_eval_precision, evaluate_model, soup_gain
from hfsoup.eval.precision import PrecisionChoice

PREFIX = "cifar100-c"


def result_key(corruption_set: str, severity: int) -> str:
    """Key of a corrupted result in ``Soup.results`` / reports: ``cifar100-c/<set>/s<severity>``."""
    return f"{PREFIX}/{corruption_set}/s{severity}"


class CorruptedResults:
    """Per model, per (corruption, severity): an :class:`EvalResult`; means over corruptions per severity."""

    def __init__(self, source: str, revision: str | None, corruption_set: str, corruptions: list[str],
                 severities: list[int]):
        self.source, self.revision = source, revision
        self.corruption_set, self.corruptions, self.severities = corruption_set, corruptions, severities
        self.cells: dict[str, dict[tuple[str, int], EvalResult]] = {}
        #: per model, the evaluation precision (resolved once, on the model's first cell)
        self.precision: dict[str, PrecisionChoice] = {}
        self.fingerprints: dict[tuple[str, int], str] = {}

    @property
    def models(self) -> list[str]:
        return list(self.cells)

    def mean(self, model: str, severity: int) -> EvalResult:
        """Mean accuracy and mean loss over the selected corruptions at ``severity``."""
        rs = [self.cells[model][(c, severity)] for c in self.corruptions]
        return EvalResult(accuracy=sum(r.accuracy for r in rs) / len(rs), loss=sum(r.loss for r in rs) / len(rs),
                          num_samples=sum(r.num_samples for r in rs))

    def describe(self, severity: int | None = None) -> dict:
        d = {"dataset": self.source, "revision": self.revision, "split": "test", "config": self.corruption_set,
             "corruptions": self.corruptions}
        if severity is None:
            d["severities"] = self.severities
        else:
            # model-index entries are told apart by dataset config: one per corruption set *and* severity
            d.update(config=f"{self.corruption_set}-s{severity}", corruption_set=self.corruption_set,
                     severity=severity)
            d["num_samples"] = sum(self.cells[self.models[0]][(c, severity)].num_samples
                                   for c in self.corruptions) if self.cells else 0
        return d

    def per_corruption(self, model: str) -> dict:
        return {c: {f"s{s}": self.cells[model][(c, s)].to_dict() for s in self.severities} for c in self.corruptions}

    def gains(self, soup: str, parents: Sequence[str], clean: Mapping[str, EvalResult] | None = None) -> dict:
        """Per severity: soup gain on the corrupted mean and, with ``clean`` results, the robustness gap.

        Robustness gap = corrupted loss − clean loss; ``robustness_gap_gain`` = min over parents of their gap −
        the soup's gap (positive: souping narrowed the gap; the paper's Figure A15 finds no systematic change).
        """
        out = {}
        for s in self.severities:
            g = soup_gain(self.mean(soup, s), [self.mean(p, s) for p in parents])
            if clean and soup in clean and all(p in clean for p in parents):
                gaps = {m: self.mean(m, s).loss - clean[m].loss for m in [soup, *parents]}
                parent_gap = min(gaps[p] for p in parents)
                g.update(robustness_gap=gaps[soup], parents_min_robustness_gap=parent_gap,
                         robustness_gap_gain=parent_gap - gaps[soup],
                         clean_accuracy_gain=soup_gain(clean[soup], [clean[p] for p in parents])["accuracy_gain"])
            out[f"s{s}"] = g
        return out

    def to_dict(self) -> dict:
        return {"data": self.describe(),
                "models": {m: {"mean": {f"s{s}": self.mean(m, s).to_dict() for s in self.severities},
                               "per_corruption": self.per_corruption(m)} for m in self.models}}


def evaluate_corrupted(models, corrupted_source: str = DEFAULT_CORRUPTED_DATASET, corruptions="all", severities=3,
                       *, revision: str | None = None, limit: int | None = None, batch_size: int = 1000,
                       device=None, progress: bool = True, results: CorruptedResults | None = None,
                       precision: str | None = None) -> CorruptedResults:
    """Evaluate models on CIFAR-100-C.

    Args:
        models: ``{name: model}`` or a list; a model is a ``torch.nn.Module``, an
            :class:`~hfsoup.core.ingredients.Ingredient` or a :class:`~hfsoup.core.soup.Soup` (anything with
            ``create_model()``). Lists are named by ``reference`` (or ``model0``, ``model1``…; a Soup is ``soup``).
        corrupted_source: a Hub dataset id or local folder converted by ``hfsoup data cifar100c``.
        corruptions: ``all`` (19), ``common`` (15), ``extra`` (4), names, or a comma list.
        severities: a level (3), a range (``"1-5"``) or a list.
        results: add to an existing :class:`CorruptedResults` of the same selection (models already in it are
            not evaluated again).
        precision: ``fp32``, ``bf16`` or ``auto`` (see :func:`~hfsoup.eval.precision.choose_precision`; ``None``:
            the ambient one), resolved once per model on its first cell and kept in ``results.precision``.
    Returns a :class:`CorruptedResults` (``.mean(name, severity)``, ``.cells``, ``.gains(...)``, ``.to_dict()``).
    """
    from tqdm.auto import tqdm

    set_name, names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    if not isinstance(models, Mapping):
        models = {_default_name(m, i): m for i, m in enumerate(models)}
    if results is None:
        results = CorruptedResults(corrupted_source, revision, set_name, names, levels)
    elif (results.corruptions, results.severities) != (names, levels):
        raise HfSoupError("cannot add to corrupted results of another corruption/severity selection")
    todo = {k: v for k, v in models.items() if k not in results.cells}
    if not todo:
        return results
    built = {k: (v if isinstance(v, torch.nn.Module) else v.create_model()) for k, v in todo.items()}
    for k in built:
        results.cells[k] = {}
    bar = tqdm(total=len(names) * len(levels), desc="CIFAR-100-C", unit="cell", disable=not progress)
    for c, s, data in iter_corrupted(corrupted_source, names, levels, revision=revision, limit=limit,
                                     progress=False):
        bar.set_description(f"CIFAR-100-C {c} s{s}")
        results.fingerprints[(c, s)] = data.fingerprint if len(data) <= 20_000 else ""
        for k, module in built.items():
            if k not in results.precision:
                results.precision[k] = _choose(precision, module, data, device, batch_size)
            results.cells[k][(c, s)] = evaluate_model(module, data, batch_size=batch_size, device=device,
                                                      progress=False, precision=results.precision[k])
        data._normalized.clear()
        del data
        bar.update(1)
    bar.close()
    return results


def _choose(precision, module, data, device, batch_size) -> PrecisionChoice:
    from hfsoup.eval.precision import ambient_precision

    return choose_eval_precision(precision or ambient_precision(), module, data, device=device,
                                 batch_size=batch_size)


def _default_name(m, i: int) -> str:
    if getattr(m, "reference", None):
        return m.reference
    if type(m).__name__ == "Soup":
        return "soup"
    return f"model{i}"


def record_in_soup(soup, corrupted: CorruptedResults, soup_name: str = "soup",
                   clean: Mapping[str, EvalResult] | None = None) -> dict:
    """Store the corrupted results of ``soup`` and its ingredients in ``soup.results`` (one entry per corruption
    set and severity, keyed :func:`result_key`, shaped like clean entries: data, models, gain)."""
    refs = [i.reference for i in soup.ingredients]
    used = [i.reference for i, w in zip(soup.ingredients, soup.weights) if w > 0]
    gains = corrupted.gains(soup_name, used, clean)
    entries = {}
    for s in corrupted.severities:
        data = corrupted.describe(s)
        data["per_corruption"] = {c: {m: corrupted.cells[m][(c, s)].to_dict() for m in [soup_name, *refs]}
                                  for c in corrupted.corruptions}
        if soup_name in corrupted.precision:
            data["precision"] = corrupted.precision[soup_name].to_dict()
        entry = SplitResult(data=data, models={"soup": corrupted.mean(soup_name, s),
                                               **{r: corrupted.mean(r, s) for r in refs}}, gain=gains[f"s{s}"])
        soup.results[result_key(corrupted.corruption_set, s)] = entry
        entries[result_key(corrupted.corruption_set, s)] = entry
    return entries
