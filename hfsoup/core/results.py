"""The typed results every layer shares: one model's score on one split (:class:`EvalResult`), the soup gain, and
the entry a soup keeps per split (:class:`SplitResult`). Plain dataclasses: no torch, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

#: SPEC §1: a soup below 5 % top-1 accuracy has collapsed.
COLLAPSE_ACCURACY = 0.05


@dataclass
class EvalResult:
    """Accuracy (a fraction in [0, 1]) and mean cross-entropy of one model on one split."""

    accuracy: float
    loss: float
    num_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def soup_gain(soup: EvalResult, ingredients: Mapping[str, EvalResult] | Sequence[EvalResult]) -> dict:
    """Soup gain: accuracy gain = acc(soup) − max acc(ingredients); loss gain = min loss(ingredients) − loss(soup).

    Positive is good for both. ``collapsed`` marks a soup below 5 % accuracy.
    """
    vals = list(ingredients.values()) if isinstance(ingredients, Mapping) else list(ingredients)
    best_acc = max(r.accuracy for r in vals)
    best_loss = min(r.loss for r in vals)
    return {
        "accuracy_gain": soup.accuracy - best_acc,
        "loss_gain": best_loss - soup.loss,
        "best_ingredient_accuracy": best_acc,
        "best_ingredient_loss": best_loss,
        "collapsed": soup.accuracy < COLLAPSE_ACCURACY,
    }


@dataclass
class SplitResult:
    """What a soup records for one split: the data's provenance, the scores of the soup (key ``"soup"``) and of
    every ingredient (keyed by reference), and the gain over the ingredients that have a positive weight."""

    data: dict
    models: dict[str, EvalResult]
    gain: dict = field(default_factory=dict)

    @classmethod
    def build(cls, data: dict, soup_result: EvalResult, ingredient_results: Mapping[str, EvalResult],
              used: Sequence[str]) -> "SplitResult":
        """The one constructor: ``used`` are the references with a positive weight (the gain is against them)."""
        models = {"soup": soup_result, **dict(ingredient_results)}
        return cls(data=dict(data), models=models, gain=soup_gain(soup_result, [models[r] for r in used]))

    @property
    def soup(self) -> EvalResult:
        return self.models["soup"]

    def ingredient_results(self) -> dict[str, EvalResult]:
        return {k: v for k, v in self.models.items() if k != "soup"}

    def replace_soup(self, soup_result: EvalResult, used: Sequence[str]) -> None:
        """Swap in a new soup score (after BN recalibration, say) and recompute the gain."""
        self.models["soup"] = soup_result
        self.gain = soup_gain(soup_result, [self.models[r] for r in used])

    def to_dict(self) -> dict:
        return {"data": self.data, "models": {k: v.to_dict() for k, v in self.models.items()}, "gain": self.gain}
