"""The :class:`Soup` type: averaged weights with their provenance, the recipe's parameters and decision log, and
the scores recorded per split. A plain data type: recipes (:mod:`hfsoup.recipes`) build it, :mod:`hfsoup.eval`
scores it, :mod:`hfsoup.hub` writes and publishes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hfsoup.core.ingredients import Ingredient
from hfsoup.core.models import build_model
from hfsoup.core.results import SplitResult


@dataclass
class Soup:
    """Averaged weights with everything needed to reproduce and judge them.

    Attributes:
        recipe: ``mix``, ``uniform``, ``greedy``, ``radin``…
        ingredients: the ingredients considered (weight 0 for those a selection recipe dropped).
        weights: one weight per ingredient, summing to one.
        state_dict: the averaged tensors.
        parameters: the recipe's parameters (α, integer policy, seeds, budgets…), as recorded in ``soup.json``.
        log: the recipe's decision log (greedy steps, RADIN candidates…), JSON-serialisable.
        results: per split (or corrupted-data key), a :class:`~hfsoup.core.results.SplitResult`.
    """

    recipe: str
    ingredients: list[Ingredient]
    weights: list[float]
    state_dict: dict[str, torch.Tensor]
    parameters: dict = field(default_factory=dict)
    log: object = None
    results: dict[str, SplitResult] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.ingredients[0].architecture

    @property
    def config(self) -> dict:
        """timm ``config.json`` of the soup: the ingredients' (they share the architecture)."""
        return dict(self.ingredients[0].config)

    @property
    def used_references(self) -> list[str]:
        """References of the ingredients with a positive weight (gains are measured against these)."""
        return [ing.reference for ing, w in zip(self.ingredients, self.weights) if w > 0]

    def create_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The soup as a timm model in eval mode."""
        return build_model(self.config, self.state_dict, device=device)

    def describe_ingredients(self) -> list[dict]:
        return [dict(ing.describe(), weight=w) for ing, w in zip(self.ingredients, self.weights)]

    def manifest(self) -> dict:
        """The content of ``soup.json`` (its ``sha256`` is added when the weights are written)."""
        from hfsoup import __version__

        return {
            "hfsoup_version": __version__,
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": self.describe_ingredients(),
            "decision_log": self.log,
            "results": {split: r.to_dict() for split, r in self.results.items()},
        }

    def metadata(self) -> dict:
        """Safetensors ``__metadata__`` of the soup (values JSON-encoded where not strings)."""
        from hfsoup import __version__

        return {
            "hfsoup_version": __version__,
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": [i.repo_id and (i.repo_id + (f"@{i.commit}" if i.commit else "")) or i.reference
                            for i in self.ingredients],
            "weights": self.weights,
        }
