"""The averaging engine: a weighted average of ingredients, tensor by tensor, streamed from their files.

Memory: only the result (one model) plus one tensor in flight and its float64 accumulator are held, whatever the
number of ingredients; every ingredient file is open and read key by key (plain reads, no memory maps).
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
from tqdm.auto import tqdm

from hfsoup.errors import InvalidWeightsError, NonFiniteError
from hfsoup.core.ingredients import Ingredient, check_compatible

#: How integer buffers (BatchNorm's ``num_batches_tracked``, int64) are combined. They keep their dtype.
#: ``mean``: weighted mean rounded to the nearest integer (default; alpha=0/1 reproduce A/B exactly);
#: ``max``: element-wise maximum over ingredients with non-zero weight;
#: ``first``: the value of the first ingredient with non-zero weight.
INTEGER_POLICIES = ("mean", "max", "first")
WEIGHT_TOLERANCE = 1e-6


def check_integer_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`INTEGER_POLICIES`, else :class:`InvalidWeightsError`."""
    if policy not in INTEGER_POLICIES:
        raise InvalidWeightsError(f"unknown integer policy '{policy}': choose one of {', '.join(INTEGER_POLICIES)}")
    return policy


def check_weights(weights: Sequence[float], n: int, *, normalize: bool = False) -> list[float]:
    """Validate mixing weights: ``n`` finite, non-negative numbers summing to one, returned divided by their exact
    sum (:func:`math.fsum`).

    Weights within :data:`WEIGHT_TOLERANCE` of summing to one are accepted and rescaled, so the result always sums
    to one (a model souped with itself is the model, whatever the rounding of its weights); weights that sum to
    exactly one are returned unchanged. With ``normalize=True`` positive weights that do not sum to one are
    rescaled instead of rejected.
    """
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise InvalidWeightsError(f"got {len(weights)} weights for {n} ingredients: give one weight per model")
    if any(not math.isfinite(w) for w in weights):
        raise InvalidWeightsError(f"weights must be finite numbers, got {weights}")
    if any(w < 0 for w in weights):
        raise InvalidWeightsError(f"weights must be non-negative, got {weights}")
    total = math.fsum(weights)
    if total <= 0:
        raise InvalidWeightsError("all weights are zero: at least one ingredient needs a positive weight")
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        if not normalize:
            raise InvalidWeightsError(f"weights sum to {total:g}, not 1: fix them or normalize "
                                      f"(--normalize / normalize=True) to rescale")
    # Always divide by the exact sum: x / 1.0 is x, so weights that already sum to one stay bit for bit.
    return [w / total for w in weights]


def average(ingredients: Sequence[Ingredient], weights: Sequence[float] | None = None, *,
            normalize: bool = False, integer_policy: str = "mean", accumulate_dtype: torch.dtype = torch.float64,
            check: bool = True, progress: bool = False) -> dict[str, torch.Tensor]:
    """Weighted average θ = Σ wᵢ θᵢ of the ingredients' tensors.

    Args:
        ingredients: models with identical keys, shapes and dtypes (checked unless ``check=False``).
        weights: one non-negative weight per ingredient summing to one; ``None`` means uniform.
        normalize: rescale weights that do not sum to one instead of raising :class:`InvalidWeightsError`.
        integer_policy: how integer buffers are combined, one of :data:`INTEGER_POLICIES`.
        accumulate_dtype: float64 (default) or float32; each result is cast back to its source dtype.
        progress: show a progress bar over tensors.

    Ingredients with weight zero are never read, so ``α = 0`` returns model A bit for bit.
    Raises :class:`NonFiniteError` if a floating result holds NaN or Inf.
    """
    if not ingredients:
        raise InvalidWeightsError("nothing to average: no ingredients")
    check_integer_policy(integer_policy)
    if accumulate_dtype not in (torch.float64, torch.float32):
        raise InvalidWeightsError("accumulate_dtype must be torch.float64 or torch.float32")
    n = len(ingredients)
    weights = check_weights([1.0 / n] * n if weights is None else weights, n, normalize=normalize)
    if check:
        check_compatible(ingredients)
    active = [(w, ing) for w, ing in zip(weights, ingredients) if w > 0]
    keys = list(ingredients[0].tensors)
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        readers = [(w, stack.enter_context(ing.open()), ing) for w, ing in active]
        for key in tqdm(keys, desc="averaging", unit="tensor", disable=not progress, leave=False):
            dtype = ingredients[0].tensors[key].dtype
            if dtype.is_floating_point:
                out[key] = _average_float(key, readers, dtype, accumulate_dtype)
            else:
                out[key] = _combine_integer(key, readers, dtype, integer_policy)
    return out


def _average_float(key, readers, dtype, acc_dtype) -> torch.Tensor:
    # Equal weights (uniform soups, alpha = 0.5) are summed then divided once: the result *is* the mean.
    equal = all(w == readers[0][0] for w, _, _ in readers)
    acc = None
    for w, reader, _ in readers:
        t = reader.get_tensor(key)
        scale = 1.0 if equal else w
        if acc is None:
            acc = t.to(acc_dtype, copy=True)  # a fresh accumulator: never mutate a reader's tensor
            if scale != 1.0:
                acc.mul_(scale)
        else:
            acc.add_(t, alpha=scale)  # promoted to the accumulator's dtype inside the kernel
    if equal and len(readers) > 1:
        acc.div_(len(readers))
    result = acc.to(dtype)
    if not all_finite(result):
        bad = [ing.reference for _, reader, ing in readers if not all_finite(reader.get_tensor(key))]
        if bad:
            source = f"non-finite values in {', '.join(bad)}"
        else:  # every input is finite: the sum or the cast back to a narrower dtype overflowed
            source = f"the ingredients are finite, but their weighted sum overflows {str(dtype).replace('torch.', '')}"
        raise NonFiniteError(f"averaged tensor '{key}' contains NaN/Inf ({source}): check the ingredients",
                             key=key, references=bad)
    return result


def all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` holds no NaN and no ±Inf. One min/max reduction (NaN propagates through both), no boolean
    mask and no sum, so huge finite values (float64 near its range) pass."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _combine_integer(key, readers, dtype, policy) -> torch.Tensor:
    if policy == "first":
        return readers[0][1].get_tensor(key).clone()
    result = None
    for w, reader, _ in readers:  # streamed like floats: one ingredient's tensor at a time
        t = reader.get_tensor(key)
        if policy == "max":
            result = t.clone() if result is None else torch.maximum(result, t)
        else:
            t = t.to(torch.float64) * w
            result = t if result is None else result.add_(t)
    return result if policy == "max" else result.round().to(dtype)
