"""The logit-ensemble baseline: the average of the ingredients' logits (an O(N) model at inference), evaluated and
reported beside the soups, never written as a model. Its logits come from the logit cache."""

from __future__ import annotations

from typing import Sequence

import torch

from hfsoup.data.images import ImageData
from hfsoup.eval.metrics import metrics_from_logits, soup_gain
from hfsoup.recipes.greedy import _ingredients, eval_kwargs, load_heldout
from hfsoup.eval.logit_cache import all_logits


def ensemble_evaluate(models: Sequence, data: ImageData, *, weights: Sequence[float] | None = None,
                      cache: bool = True, batch_size: int = 500, device=None, progress: bool = False,
                      **load_kwargs) -> dict:
    """Accuracy and loss of the (uniform or weighted) average of the ingredients' logits on ``data``.

    Returns ``{"data", "ensemble": EvalResult, "ingredients": {reference: EvalResult}, "weights"}``.
    """
    ings = _ingredients(models, 1, **load_kwargs)
    logits = all_logits(ings, data, cache=cache, batch_size=batch_size, device=device, progress=progress)
    n = len(ings)
    w = torch.tensor([1.0 / n] * n if weights is None else [float(x) for x in weights], dtype=torch.float64)
    avg = (w.view(-1, 1, 1) * logits.to(torch.float64)).sum(0) / w.sum()
    res = metrics_from_logits(avg, data.labels)
    ing_res = {ing.reference: metrics_from_logits(l, data.labels) for ing, l in zip(ings, logits)}
    return {"data": data.describe(), "ensemble": res, "ingredients": ing_res, "weights": w.tolist(),
            "gain": soup_gain(res, ing_res)}


def recipe_ensemble(ingredients, args, ctx):
    """``hfsoup soup --recipe ensemble``: report only (no model written); held-out and --eval-split figures."""
    out = {}
    heldout = load_heldout(args)
    splits = [heldout] + ([ctx["eval_data"]] if ctx.get("eval_data") is not None else [])
    for data in splits:
        r = ensemble_evaluate(ingredients, data, cache=not args.no_cache, **eval_kwargs(args))
        out[data.split] = {"data": r["data"], "ensemble": r["ensemble"].to_dict(),
                           "ingredients": {k: v.to_dict() for k, v in r["ingredients"].items()},
                           "gain": r["gain"]}
        if data is ctx.get("eval_data"):
            ctx["ingredient_results"].update(r["ingredients"])
    ctx.setdefault("report_extra", {})["ensemble"] = out
    if not args.json:
        from rich.console import Console

        for split, r in out.items():
            e = r["ensemble"]
            Console(highlight=False).print(
                f"logit ensemble of {len(ingredients)} models on {split}: accuracy {100 * e['accuracy']:.2f}%, "
                f"loss {e['loss']:.4f} (gain over best ingredient {100 * r['gain']['accuracy_gain']:+.2f} pts)")
    return None
