"""Soups: the result of a recipe (averaged weights + provenance + decision log + scores), the ``mix`` and
``uniform`` recipes, evaluation against the ingredients, and writing in the Hub format.

Planning is separate from execution: :func:`plan_alphas` and :func:`hfsoup.ingredients.load_ingredients` check
everything (references, compatibility, α range, outputs) before :func:`hfsoup.averaging.average` touches weights.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .averaging import average, check_weights
from .data import ImageData
from .errors import HfSoupError, InvalidWeightsError
from .evaluation import EvalResult, evaluate_model, soup_gain
from .hub_format import (decode_metadata, eval_results_for_card, render_card, write_model_folder)
from .ingredients import Ingredient, build_model, load_ingredients


@dataclass
class Soup:
    """Averaged weights with everything needed to reproduce and judge them.

    Attributes:
        recipe: ``mix``, ``uniform``, ``greedy``, ``radin``…
        ingredients: the ingredients considered (weight 0 for those a selection recipe dropped).
        weights: one weight per ingredient, summing to one.
        state_dict: the averaged tensors.
        parameters: the recipe's parameters (α, integer policy, seeds, budgets…).
        log: the recipe's decision log (greedy steps, RADIN candidates…), JSON-serialisable.
        results: per split, the scores of the soup and its ingredients and the soup gain.
    """

    recipe: str
    ingredients: list[Ingredient]
    weights: list[float]
    state_dict: dict[str, torch.Tensor]
    parameters: dict = field(default_factory=dict)
    log: object = None
    results: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.ingredients[0].architecture

    @property
    def config(self) -> dict:
        """timm ``config.json`` of the soup: the ingredients' (they share the architecture)."""
        return dict(self.ingredients[0].config)

    def create_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The soup as a timm model in eval mode."""
        return build_model(self.config, self.state_dict, device=device)

    # -- provenance -----------------------------------------------------------------------------------------
    def describe_ingredients(self) -> list[dict]:
        return [dict(ing.describe(), weight=w) for ing, w in zip(self.ingredients, self.weights)]

    def manifest(self) -> dict:
        """The content of ``soup.json`` (its ``sha256`` is added when the weights are written)."""
        from . import __version__

        return {
            "hfsoup_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": self.describe_ingredients(),
            "decision_log": self.log,
            "results": _results_to_json(self.results),
        }

    def metadata(self) -> dict:
        """Safetensors ``__metadata__`` of the soup (values JSON-encoded where not strings)."""
        from . import __version__

        return {
            "hfsoup_version": __version__,
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": [i.repo_id and (i.repo_id + (f"@{i.commit}" if i.commit else "")) or i.reference
                            for i in self.ingredients],
            "weights": self.weights,
        }

    def model_card(self, repo_id: str | None = None, sha256: str | None = None) -> str:
        base_models = []
        for ing in self.ingredients:
            hub_id = ing.repo_id or decode_metadata(ing.metadata).get("repo_id")
            if isinstance(hub_id, str) and hub_id not in base_models:
                base_models.append(hub_id)
        datasets_ = sorted({r["data"]["dataset"] for r in self.results.values()
                            if "/" in r["data"]["dataset"] and not Path(r["data"]["dataset"]).exists()})
        card_results = {
            split: dict(r["models"]["soup"].to_dict(), dataset=r["data"]["dataset"], split=r["data"]["split"],
                        revision=r["data"].get("revision"), config=r["data"].get("config"))
            for split, r in self.results.items()}
        card_data = {
            "library_name": "timm",
            "license": "apache-2.0",
            "tags": ["image-classification", "timm", "merge", "model-soup", "hfsoup"],
            "pipeline_tag": "image-classification",
        }
        if base_models:
            card_data.update(base_model=base_models, base_model_relation="merge")
        if datasets_:
            card_data["datasets"] = datasets_
        if card_results:
            card_data.update(model_name=repo_id.split("/")[-1] if repo_id else "hfsoup-soup",
                             eval_results=eval_results_for_card(card_results, dataset_name="dataset"))
        return render_card(
            "soup", card_data, title=(repo_id.split("/")[-1] if repo_id else f"{self.recipe} soup"),
            recipe=self.recipe, parameters=self.parameters, architecture=self.architecture,
            num_classes=self.ingredients[0].num_classes, sha256=sha256 or "see soup.json", repo_id=repo_id,
            ingredients=self.describe_ingredients(),
            results={s: {"models": {k: v.to_dict() for k, v in r["models"].items()}, "gain": r.get("gain")}
                     for s, r in self.results.items()})

    def save(self, out: str | Path, *, force: bool = False, repo_id: str | None = None) -> Path:
        """Write the soup in the Hub format (weights, config, card, ``soup.json``) atomically."""
        return write_model_folder(out, self.state_dict, self.config, metadata=self.metadata(),
                                  card=lambda digest: self.model_card(repo_id, sha256=digest),
                                  manifest=self.manifest(), force=force)

    # -- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self, data: ImageData, *, ingredient_results: dict[str, EvalResult] | None = None,
                 key: str | None = None, **kwargs) -> dict:
        """Evaluate the soup and its ingredients (those not in ``ingredient_results``) on ``data``.

        Results are stored under ``self.results[key or data.split]`` and returned: ``models`` maps ``soup`` and
        each ingredient reference to an :class:`EvalResult`, ``gain`` holds :func:`soup_gain`.
        """
        ingredient_results = dict(ingredient_results or {})
        for ing in self.ingredients:
            if ing.reference not in ingredient_results:
                ingredient_results[ing.reference] = evaluate_model(ing.create_model(), data,
                                                                   desc=f"eval {ing.name}"[:40], **kwargs)
        soup_res = evaluate_model(self.create_model(), data, desc="eval soup", **kwargs)
        used = {ing.reference: ingredient_results[ing.reference]
                for ing, w in zip(self.ingredients, self.weights) if w > 0}
        entry = {
            "data": data.describe(),
            "models": {"soup": soup_res, **{i.reference: ingredient_results[i.reference] for i in self.ingredients}},
            "gain": soup_gain(soup_res, used),
        }
        self.results[key or data.split] = entry
        return entry


def _results_to_json(results: dict) -> dict:
    return {split: {"data": r["data"], "models": {k: v.to_dict() for k, v in r["models"].items()},
                    "gain": r.get("gain")} for split, r in results.items()}


# -- recipes ----------------------------------------------------------------------------------------------------
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


def _as_ingredients(models, min_count: int, **load_kwargs) -> list[Ingredient]:
    return load_ingredients(list(models), min_count=min_count, **load_kwargs)


def mix(model_a, model_b, alpha: float = 0.5, *, integer_policy: str = "mean", progress: bool = False,
        **load_kwargs) -> Soup:
    """θ = (1 − α)·θ_A + α·θ_B. ``α`` is the weight of the *second* model: α = 0 gives A, α = 1 gives B exactly.

    ``model_a``/``model_b`` are references (Hub ids, ``id@rev``, folders) or :class:`Ingredient` s.
    """
    (alpha,) = parse_alphas(alpha)
    ings = _as_ingredients([model_a, model_b], 2, **load_kwargs)
    weights = [1.0 - alpha, alpha]
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup("mix", ings, weights, state, parameters={"alpha": alpha, "integer_policy": integer_policy})


def uniform_soup(models: Sequence, *, integer_policy: str = "mean", progress: bool = False,
                 **load_kwargs) -> Soup:
    """Equal weights over all ingredients: the exact mean of their tensors."""
    ings = _as_ingredients(models, 2, **load_kwargs)
    n = len(ings)
    weights = [1.0 / n] * n
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup("uniform", ings, weights, state, parameters={"integer_policy": integer_policy})


def weighted_soup(models: Sequence, weights: Sequence[float], *, normalize: bool = False,
                  integer_policy: str = "mean", recipe: str = "weighted", progress: bool = False,
                  **load_kwargs) -> Soup:
    """Any explicit weighting (must sum to one unless ``normalize``)."""
    ings = _as_ingredients(models, 2, **load_kwargs)
    weights = check_weights(weights, len(ings), normalize=normalize)
    state = average(ings, weights, integer_policy=integer_policy, check=False, progress=progress)
    return Soup(recipe, ings, weights, state, parameters={"integer_policy": integer_policy})


def alpha_folder_name(alpha: float) -> str:
    """Folder of one point of an interpolation curve: ``alpha-0.250``."""
    return f"alpha-{alpha:.3f}"


def check_min_models(n: int, needed: int = 2) -> None:
    if n < needed:
        raise HfSoupError(f"a soup needs at least {needed} models, got {n}: pass more model references")
