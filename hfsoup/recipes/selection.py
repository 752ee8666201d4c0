"""What the held-out recipes (greedy, RADIN, learned, ensemble) share: the held-out split rule, the ingredients'
cached held-out logits and scores (checked once for NaN/Inf), one real evaluation of averaged weights, and the
``results[split]`` entry built from figures already measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from hfsoup.core.ingredients import Ingredient, as_ingredients
from hfsoup.core.models import build_model
from hfsoup.core.results import EvalResult, SplitResult
from hfsoup.data.images import ImageData
from hfsoup.errors import DatasetError, NonFiniteError
from hfsoup.eval.logit_cache import CacheStats, all_logits
from hfsoup.eval.metrics import metrics_from_logits, predict_logits

#: Splits a selection may use (``val``: the held-out 5 % of train). Never ``test``.
HELDOUT_SPLITS = ("val", "train", "train-main")


def check_heldout(data: ImageData) -> ImageData:
    """``data`` if it is not the test split, else :class:`~hfsoup.errors.DatasetError`: selection never looks at
    the test split."""
    if data.split == "test":
        raise DatasetError("selection recipes only use held-out data, never the test split: pass the held-out "
                           "split (val) or a separate held-out dataset", split=data.split)
    return data


def evaluate_state_dict(config: dict, state_dict: dict[str, torch.Tensor], data: ImageData, *,
                        batch_size: int = 500, device=None, progress: bool = False,
                        desc: str = "eval candidate") -> EvalResult:
    """One real evaluation (full forward pass over ``data``) of averaged weights. Recipes count these calls."""
    model = build_model(config, state_dict)
    logits = predict_logits(model, data, batch_size=batch_size, device=device, progress=progress, desc=desc)
    return metrics_from_logits(logits, data.labels)


def ingredient_heldout_results(ingredients: Sequence[Ingredient], data: ImageData, *, cache: bool = True,
                               stats: CacheStats | None = None,
                               **eval_kwargs) -> tuple[torch.Tensor, list[EvalResult]]:
    """Cached held-out logits (N x S x K) of every ingredient and their :class:`EvalResult` s."""
    logits = all_logits(ingredients, data, cache=cache, stats=stats, **eval_kwargs)
    return logits, [metrics_from_logits(l, data.labels) for l in logits]


def check_finite_logits(ingredients: Sequence[Ingredient], logits: torch.Tensor, data: ImageData) -> None:
    """Raise one :class:`~hfsoup.errors.NonFiniteError` naming every ingredient whose logits on ``data`` hold
    NaN/Inf (``logits``: N x S x K). Checked once, up front: a broken model would otherwise be rejected silently
    (greedy), abort a search that has valid candidates (RADIN) or make an ensemble's loss NaN."""
    bad_rows = (~torch.isfinite(logits)).flatten(2).any(dim=2)  # N x S: images with a non-finite logit
    counts = bad_rows.sum(dim=1).tolist()
    bad = [(ing.reference, int(c)) for ing, c in zip(ingredients, counts) if c]
    if not bad:
        return
    names = ", ".join(f"'{ref}' ({c} of {len(data)} images)" for ref, c in bad)
    it = "it" if len(bad) == 1 else "them"
    raise NonFiniteError(f"the logits of {names} on {data.split} contain NaN/Inf: the weights hold NaN/Inf or the "
                         f"activations overflow; remove {it} from the models (or fix the weights) and run again",
                         references=[ref for ref, _ in bad])


@dataclass
class Selection:
    """The common start of a held-out recipe: checked ingredients, their held-out logits (N x S x K, finite) and
    scores, the logit-cache counts and the evaluation options (``batch_size``, ``device``, ``progress``)."""

    ingredients: list[Ingredient]
    logits: torch.Tensor
    results: list[EvalResult]
    stats: CacheStats
    eval_kwargs: dict = field(default_factory=dict)


def prepare_selection(models, heldout_data: ImageData, *, cache: bool, batch_size: int, device, progress: bool,
                      min_models: int = 2, **load_kwargs) -> Selection:
    """Refuse the test split, load and check the ingredients (references, paths or ingredients), get their
    (cached) held-out logits and results, and refuse non-finite logits."""
    check_heldout(heldout_data)
    ings = as_ingredients(models, min_count=min_models, **load_kwargs)
    ev = {"batch_size": batch_size, "device": device, "progress": progress}
    stats = CacheStats()
    logits, results = ingredient_heldout_results(ings, heldout_data, cache=cache, stats=stats, **ev)
    check_finite_logits(ings, logits, heldout_data)
    return Selection(ings, logits, results, stats, ev)


def uniform_weights(members: Sequence[int], n: int) -> list[float]:
    """Weights 1/k on the k ``members`` (indices), 0 elsewhere."""
    k = len(members)
    sel = set(members)
    return [1.0 / k if i in sel else 0.0 for i in range(n)]


def results_entry(data: ImageData, soup_result: EvalResult, ingredients: Sequence[Ingredient],
                  ingredient_results: Sequence[EvalResult], weights: Sequence[float]) -> SplitResult:
    """A ``Soup.results[split]`` entry built from results already known (no evaluation)."""
    used = [ing.reference for ing, w in zip(ingredients, weights) if w > 0]
    return SplitResult.build(data.describe(), soup_result,
                             {i.reference: r for i, r in zip(ingredients, ingredient_results)}, used)
