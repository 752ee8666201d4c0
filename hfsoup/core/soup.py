"""The :class:`Soup` type: averaged weights with their provenance, the recipe's parameters and decision log, and
the scores recorded per split. A plain data type: recipes (:mod:`hfsoup.recipes`) build it, :mod:`hfsoup.eval`
scores it, :mod:`hfsoup.hub` writes and publishes it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

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

    def public_references(self) -> dict[str, str]:
        """What published files (``soup.json``, the safetensors metadata, the card) record for each local
        ingredient's reference as typed: the folder's name, not its path (which means nothing to a reader and may
        reveal the author's file system). Names shared by several folders get their parent folders' names too, so
        they stay distinct. Hub references are kept: their commit is recorded next to them."""
        local = {ing.reference: ing.resolved.folder.resolve() for ing in self.ingredients if ing.repo_id is None}
        folders = sorted(set(local.values()))
        for depth in range(1, max((len(f.parts) for f in folders), default=1) + 1):
            names = {f: "/".join(f.parts[-depth:]).lstrip("/") or f.name for f in folders}
            if len(set(names.values())) == len(folders):
                break
        # The reference as typed, and the resolved folder (the ``path`` of :meth:`Ingredient.describe`).
        return {**{str(folder): names[folder] for folder in folders},
                **{ref: names[folder] for ref, folder in local.items()}}

    def public(self, obj):
        """``obj`` (JSON-like) as published: local ingredient references replaced by :meth:`public_references`
        (keys and values), and any other absolute local path (a dataset folder…) by its last component."""
        refs = self.public_references()

        def fix(v):
            if isinstance(v, str):
                if v in refs:
                    return refs[v]
                if os.path.isabs(v) or v.startswith("~"):
                    return Path(v).name or v
                return v
            if isinstance(v, dict):
                return {fix(k) if isinstance(k, str) else k: fix(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [fix(x) for x in v]
            if isinstance(v, os.PathLike):
                return fix(os.fspath(v))
            if hasattr(v, "to_dict"):
                return fix(v.to_dict())
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return fix(dataclasses.asdict(v))
            return v

        return fix(obj)

    def manifest(self) -> dict:
        """The content of ``soup.json`` (its ``sha256`` is added when the weights are written).

        Reproducible and shareable: no timestamps or absolute paths (:meth:`public`), so the same inputs give the
        same bytes wherever the soup is written."""
        from hfsoup import __version__

        return self.public({
            "hfsoup_version": __version__,
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": self.describe_ingredients(),
            "decision_log": self.log,
            "results": {split: r.to_dict() for split, r in self.results.items()},
        })

    def metadata(self) -> dict:
        """Safetensors ``__metadata__`` of the soup (values JSON-encoded where not strings); Hub ingredients as
        ``repo@commit``, local ones by folder name (:meth:`public`)."""
        from hfsoup import __version__

        return self.public({
            "hfsoup_version": __version__,
            "recipe": self.recipe,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "ingredients": [i.repo_id and (i.repo_id + (f"@{i.commit}" if i.commit else "")) or i.reference
                            for i in self.ingredients],
            "weights": self.weights,
        })
