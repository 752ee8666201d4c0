"""The recipes without selection: ``mix`` (two models, α), ``uniform`` (equal weights) and ``weighted`` (explicit
weights). Planning is separate from execution: :func:`parse_alphas` and :func:`~hfsoup.core.ingredients.as_ingredients`
check everything before :func:`~hfsoup.core.averaging.average` touches weights."""

from __future__ import annotations

import math
from typing import Sequence

from hfsoup.core.averaging import average, check_weights
from hfsoup.core.ingredients import as_ingredients
from hfsoup.core.soup import Soup
from hfsoup.errors import InvalidWeightsError
from hfsoup.recipes.registry import get_recipe


def parse_alphas(text: str | float | Sequence[float]) -> list[float]:
    """Parse ``"0.5"`` or ``"0,0.25,0.5"`` and check every α is a finite number in [0, 1]."""
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, str):
        try:
            values = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise InvalidWeightsError(f"--alpha takes numbers in [0, 1] separated by commas, got '{text}'") from None
    else:
        values = [float(v) for v in text]
    if not values:
        raise InvalidWeightsError("no alpha given: pass e.g. --alpha 0.5 or --alpha 0,0.25,0.5,0.75,1")
    bad = [v for v in values if not math.isfinite(v) or v < 0 or v > 1]
    if bad:
        raise InvalidWeightsError(f"alpha must be in [0, 1] (the weight of the second model), got {bad[0]:g}")
    return values


def alpha_folder_name(alpha: float) -> str:
    """Folder of one point of an interpolation curve: ``alpha-0.250``."""
    return f"alpha-{alpha:.3f}"


def check_alpha_folders(alphas: Sequence[float]) -> list[str]:
    """The output sub-folder of each α; two α that round to the same folder are refused before anything is
    written (they would overwrite each other)."""
    names = [alpha_folder_name(a) for a in alphas]
    seen: dict[str, float] = {}
    for a, name in zip(alphas, names):
        if name in seen:
            raise InvalidWeightsError(f"alpha {a:g} and {seen[name]:g} both write {name}: give distinct values "
                                      f"(3 decimals)")
        seen[name] = a
    return names


def mix(model_a, model_b, alpha: float = 0.5, *, integer_policy: str = "mean", progress: bool = False,
        **load_kwargs) -> Soup:
    """θ = (1 − α)·θ_A + α·θ_B. ``α`` is the weight of the *second* model: α = 0 gives A, α = 1 gives B exactly.

    ``model_a``/``model_b`` are references (Hub ids, ``id@rev``, folders, :class:`pathlib.Path`) or
    :class:`~hfsoup.core.ingredients.Ingredient` s.
    """
    (alpha,) = parse_alphas(alpha)
    ings = as_ingredients([model_a, model_b], min_count=2, **load_kwargs)
    weights = [1.0 - alpha, alpha]
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup("mix", ings, weights, state, parameters={"alpha": alpha, "integer_policy": integer_policy})


def mix_models(models: Sequence, alpha: float = 0.5, *, integer_policy: str = "mean", progress: bool = False,
               **load_kwargs) -> Soup:
    """The ``mix`` recipe (registry calling convention): :func:`mix` of a list of exactly two models."""
    recipe = get_recipe("mix")
    models = list(models)
    recipe.check_models(len(models))
    params = recipe.validate({"alpha": alpha})
    return mix(models[0], models[1], params["alpha"], integer_policy=integer_policy, progress=progress,
               **load_kwargs)


def uniform_soup(models: Sequence, *, integer_policy: str = "mean", progress: bool = False,
                 **load_kwargs) -> Soup:
    """Equal weights over all ingredients: the exact mean of their tensors."""
    ings = as_ingredients(models, min_count=2, **load_kwargs)
    n = len(ings)
    weights = [1.0 / n] * n
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup("uniform", ings, weights, state, parameters={"integer_policy": integer_policy})


def weighted_soup(models: Sequence, weights: Sequence[float], *, normalize: bool = False,
                  integer_policy: str = "mean", recipe: str = "weighted", progress: bool = False,
                  **load_kwargs) -> Soup:
    """Any explicit weighting (must sum to one unless ``normalize``)."""
    ings = as_ingredients(models, min_count=2, **load_kwargs)
    weights = check_weights(weights, len(ings), normalize=normalize)
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup(recipe, ings, weights, state, parameters={"integer_policy": integer_policy})
