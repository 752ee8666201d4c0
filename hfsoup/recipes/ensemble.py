"""The logit-ensemble baseline: the average of the ingredients' logits (an O(N) model at inference), evaluated and
reported beside the soups, never written as a model. Its logits come from the logit cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hfsoup.core.ingredients import as_ingredients
from hfsoup.core.results import EvalResult, soup_gain
from hfsoup.data.images import ImageData
from hfsoup.errors import InvalidWeightsError
from hfsoup.eval.logit_cache import all_logits
from hfsoup.eval.metrics import metrics_from_logits
from hfsoup.recipes.selection import check_finite_logits


@dataclass
class EnsembleResult:
    """The ensemble's score on one split, every ingredient's (keyed by reference), the weights of the logits and
    the gain over the best ingredient (:func:`~hfsoup.core.results.soup_gain`)."""

    data: dict
    ensemble: EvalResult
    ingredients: dict[str, EvalResult]
    weights: list[float]
    gain: dict

    def to_dict(self) -> dict:
        return {"data": dict(self.data), "ensemble": self.ensemble.to_dict(),
                "ingredients": {k: v.to_dict() for k, v in self.ingredients.items()},
                "weights": list(self.weights), "gain": dict(self.gain)}


def ensemble_evaluate(models: Sequence, data: ImageData, *, weights: Sequence[float] | None = None,
                      cache: bool = True, batch_size: int = 500, device=None, progress: bool = False,
                      integer_policy: str | None = None, **load_kwargs) -> EnsembleResult:
    """Accuracy and loss of the (uniform or weighted) average of the ingredients' logits on ``data``.

    ``models``: references, paths or ingredients (at least two). ``weights`` (one per model, non-negative, not all
    zero) are normalised by their sum. ``integer_policy`` is accepted for the common recipe calling convention and
    unused (logits have no integer buffers). Raises :class:`~hfsoup.errors.NonFiniteError` naming the models whose
    logits hold NaN/Inf, before any score is computed.
    """
    del integer_policy
    ings = as_ingredients(models, min_count=2, **load_kwargs)
    n = len(ings)
    w = [1.0 / n] * n if weights is None else [float(x) for x in weights]
    if len(w) != n or any(not x >= 0 for x in w) or sum(w) <= 0:
        raise InvalidWeightsError(f"ensemble weights must be {n} non-negative numbers, not all zero; got {w}")
    logits = all_logits(ings, data, cache=cache, batch_size=batch_size, device=device, progress=progress)
    check_finite_logits(ings, logits, data)
    wt = torch.tensor(w, dtype=torch.float64)
    avg = (wt.view(-1, 1, 1) * logits.to(torch.float64)).sum(0) / wt.sum()
    res = metrics_from_logits(avg, data.labels)
    ing_res = {ing.reference: metrics_from_logits(l, data.labels) for ing, l in zip(ings, logits)}
    return EnsembleResult(data=data.describe(), ensemble=res, ingredients=ing_res, weights=w,
                          gain=soup_gain(res, ing_res))
