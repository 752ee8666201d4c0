"""Greedy soup (Wortsman et al. 2022, Recipe 1) on the held-out split only, and the helpers the selection recipes
(greedy, RADIN, ensemble) share: held-out loading, real evaluation of averaged weights, the ``hfsoup soup`` options.

Greedy, as in SPEC §2:

1. every ingredient is evaluated on the held-out split (from the logit cache, :mod:`hfsoup.eval.logit_cache`);
2. ingredients are sorted by held-out accuracy, best first; ties are broken by lower held-out loss, then by the
   order the models were given (input order);
3. the soup starts as the best ingredient, whose accuracy is the score to beat;
4. for each next ingredient the candidate is the uniform average of the kept ingredients plus it, built from a
   running float64 sum (one average and one evaluation per step); it is kept iff its held-out accuracy is strictly
   greater than the best so far (``accept_ties=True``: greater or equal, as in the RADIN paper's Recipe 1);
5. the returned soup is exactly ``average(selected ingredients, uniform weights)`` (weight 0 for the dropped ones).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import torch

from hfsoup.core.averaging import average
from hfsoup.data.images import ImageData
from hfsoup.errors import DatasetError, HfSoupError
from hfsoup.core.ingredients import Ingredient, load_ingredients
from hfsoup.core.models import build_model
from hfsoup.core.results import EvalResult, SplitResult
from hfsoup.core.soup import Soup
from hfsoup.eval.metrics import metrics_from_logits, predict_logits
from hfsoup.eval.logit_cache import ingredient_logits

HELDOUT_SPLITS = ("val", "train", "train-main")


# -- shared helpers ---------------------------------------------------------------------------------------------
def evaluate_state_dict(config: dict, state_dict: dict[str, torch.Tensor], data: ImageData, *,
                        batch_size: int = 500, device=None, progress: bool = False,
                        desc: str = "eval candidate") -> EvalResult:
    """One real evaluation (full forward pass over ``data``) of averaged weights. Recipes count these calls."""
    model = build_model(config, state_dict)
    logits = predict_logits(model, data, batch_size=batch_size, device=device, progress=progress, desc=desc)
    return metrics_from_logits(logits, data.labels)


def ingredient_heldout_results(ingredients: Sequence[Ingredient], data: ImageData, *, cache: bool = True,
                               stats: dict | None = None, **eval_kwargs) -> tuple[torch.Tensor, list[EvalResult]]:
    """Cached held-out logits (N x S x K) of every ingredient and their :class:`EvalResult` s."""
    logits = torch.stack([ingredient_logits(ing, data, cache=cache, stats=stats, **eval_kwargs)
                          for ing in ingredients])
    return logits, [metrics_from_logits(l, data.labels) for l in logits]


def results_entry(data: ImageData, soup_result: EvalResult, ingredients: Sequence[Ingredient],
                  ingredient_results: Sequence[EvalResult], weights: Sequence[float]) -> SplitResult:
    """A ``Soup.results[split]`` entry built from results already known (no evaluation)."""
    used = [ing.reference for ing, w in zip(ingredients, weights) if w > 0]
    return SplitResult.build(data.describe(), soup_result,
                             {i.reference: r for i, r in zip(ingredients, ingredient_results)}, used)


def check_heldout(data: ImageData) -> ImageData:
    if data.split == "test":
        raise DatasetError("selection recipes only use held-out data, never the test split: pass the held-out "
                           "split (val) or a separate held-out dataset")
    return data


def prepare_selection(models, heldout_data: ImageData, *, cache: bool, batch_size: int, device, progress: bool,
                      **load_kwargs):
    """The common start of every selection recipe: refuse the test split, load and check the ingredients, and get
    their (cached) held-out logits and results. Returns ``(ingredients, logits, results, cache_stats, eval_kwargs)``."""
    check_heldout(heldout_data)
    ings = _ingredients(models, 2, **load_kwargs)
    ev = {"batch_size": batch_size, "device": device, "progress": progress}
    stats: dict = {}
    logits, results = ingredient_heldout_results(ings, heldout_data, cache=cache, stats=stats, **ev)
    return ings, logits, results, stats, ev


def _ingredients(models, min_count: int = 2, **load_kwargs) -> list[Ingredient]:
    models = [str(m) if isinstance(m, os.PathLike) else m for m in models]  # folders given as Paths
    return load_ingredients(models, min_count=min_count, **load_kwargs)


def uniform_weights(members: Sequence[int], n: int) -> list[float]:
    k = len(members)
    sel = set(members)
    return [1.0 / k if i in sel else 0.0 for i in range(n)]


# -- greedy -----------------------------------------------------------------------------------------------------
def greedy_order(results: Sequence[EvalResult]) -> list[int]:
    """Indices sorted by held-out accuracy (best first), then lower loss, then input order."""
    return sorted(range(len(results)), key=lambda i: (-results[i].accuracy, results[i].loss, i))


def greedy_soup(models: Sequence, heldout_data: ImageData, *, accept_ties: bool = False, cache: bool = True,
                integer_policy: str = "mean", batch_size: int = 500, device=None, progress: bool = False,
                **load_kwargs) -> "Soup":
    """Greedy soup selected on ``heldout_data`` (never the test split).

    Returns a :class:`~hfsoup.core.soup.Soup` with recipe ``greedy``: weights uniform over the selected ingredients and
    0 for the others, the decision log in ``soup.log`` and the held-out scores in ``soup.results[split]``.
    """
    t0 = time.perf_counter()
    ings, _, ing_results, stats, ev = prepare_selection(models, heldout_data, cache=cache, batch_size=batch_size,
                                                        device=device, progress=progress, **load_kwargs)
    n = len(ings)
    order = greedy_order(ing_results)
    config = ings[0].config

    best = order[0]
    selected = [best]
    best_result = ing_results[best]
    steps = [{"step": 0, "candidate": best, "reference": ings[best].reference, "soup": [best],
              "accuracy": best_result.accuracy, "loss": best_result.loss, "best_before": None,
              "accepted": True, "note": "start: best ingredient on held-out"}]
    # Running float64 sum of the kept ingredients' floating tensors (integer buffers: sum too, rounded mean).
    running: dict[str, torch.Tensor] = {}
    dtypes = {k: info.dtype for k, info in ings[0].tensors.items()}
    _accumulate(running, ings[best])
    real_evals = 0
    last_accepted_state = None  # state dict of the last accepted candidate (to reuse its evaluation)
    for step, idx in enumerate(order[1:], start=1):
        k = len(selected) + 1
        with ings[idx].open() as reader:
            cand = {}
            for key, dtype in dtypes.items():
                t = reader.get_tensor(key).to(torch.float64)
                s = running[key] + t
                cand[key] = (s / k).to(dtype) if dtype.is_floating_point else (s / k).round().to(dtype)
        res = evaluate_state_dict(config, cand, heldout_data, desc=f"greedy step {step}", **ev)
        real_evals += 1
        accepted = res.accuracy >= best_result.accuracy if accept_ties else res.accuracy > best_result.accuracy
        steps.append({"step": step, "candidate": idx, "reference": ings[idx].reference,
                      "soup": sorted(selected + [idx]), "accuracy": res.accuracy, "loss": res.loss,
                      "best_before": best_result.accuracy, "accepted": accepted})
        if accepted:
            selected.append(idx)
            _accumulate(running, ings[idx])
            best_result = res
            last_accepted_state = cand
        del cand

    weights = uniform_weights(selected, n)
    state = average(ings, weights, integer_policy=integer_policy, check=False)
    # The final soup is evaluated on held-out once more unless it equals the last accepted candidate bit for bit
    # (float64 sums in another order can differ in the last bit; then the real figure is measured again).
    if len(selected) == 1:
        final, final_note = ing_results[best], "single ingredient: its held-out evaluation"
    elif last_accepted_state is not None and all(torch.equal(state[k], last_accepted_state[k])
                                                 for k in dtypes if dtypes[k].is_floating_point):
        final, final_note = best_result, "identical to the last accepted candidate: its evaluation reused"
    else:
        final = evaluate_state_dict(config, state, heldout_data, desc="greedy final", **ev)
        real_evals += 1
        final_note = "re-evaluated (differs in the last bit from the running-sum candidate)"
    log = {
        "recipe": "greedy",
        "heldout": heldout_data.describe(),
        "accept_ties": accept_ties,
        "rule": "accuracy >= best" if accept_ties else "accuracy > best (strict)",
        "tie_order": "held-out accuracy desc, then held-out loss asc, then input order",
        "order": [{"rank": r, "index": i, "reference": ings[i].reference, "accuracy": ing_results[i].accuracy,
                   "loss": ing_results[i].loss} for r, i in enumerate(order, start=1)],
        "steps": steps,
        "selected": sorted(selected),
        "selected_references": [ings[i].reference for i in sorted(selected)],
        "final": {"accuracy": final.accuracy, "loss": final.loss, "note": final_note},
        "cost": {"ingredient_passes": stats.get("misses", 0), "cache_hits": stats.get("hits", 0),
                 "soup_passes": real_evals, "seconds": round(time.perf_counter() - t0, 3)},
    }
    params = {"accept_ties": accept_ties, "integer_policy": integer_policy, "heldout": heldout_data.describe(),
              "selected": sorted(selected)}
    soup = Soup("greedy", ings, weights, state, parameters=params, log=log)
    soup.results[heldout_data.split] = results_entry(heldout_data, final, ings, ing_results, weights)
    return soup


def _accumulate(running: dict, ing: Ingredient) -> None:
    with ing.open() as reader:
        for key in ing.tensors:
            t = reader.get_tensor(key).to(torch.float64)
            if key in running:
                running[key].add_(t)
            else:
                running[key] = t.clone()


# -- CLI --------------------------------------------------------------------------------------------------------
def add_soup_options(parser) -> None:
    g = parser.add_argument_group("selection recipes (greedy, radin, ensemble)")
    g.add_argument("--heldout-split", default=None, choices=list(HELDOUT_SPLITS),
                   help="held-out split used for every selection decision (default: val, the held-out 5%% of "
                        "train, seed 42; with --heldout-dataset: train, i.e. the whole given dataset). Never test.")
    g.add_argument("--heldout-dataset", default=None, metavar="PATH",
                   help="a separate held-out dataset (parquet file/folder or save_to_disk folder) instead of "
                        "--dataset's val split")
    g.add_argument("--accept-ties", action="store_true",
                   help="greedy: keep an ingredient when held-out accuracy ties the best (>=) instead of the "
                        "reference strict rule (>)")
    g.add_argument("--no-cache", action="store_true",
                   help="do not read or write the logit cache ($HFSOUP_CACHE or $HF_HOME/hfsoup/logits)")


def eval_kwargs(args) -> dict:
    return {"batch_size": args.batch_size, "device": args.device, "progress": not getattr(args, "quiet", False)}


def load_heldout(args) -> ImageData:
    """The held-out data of a ``hfsoup soup`` run: --heldout-dataset or --dataset's --heldout-split (val)."""
    from hfsoup.data.images import load_image_data

    if args.heldout_dataset:
        dataset, split = args.heldout_dataset, args.heldout_split or "train"
        revision = None
    else:
        dataset, split, revision = args.dataset, args.heldout_split or "val", args.dataset_revision
    if split == "test":
        raise HfSoupError("the held-out split cannot be test: selection never looks at the test split")
    data = load_image_data(dataset, split, revision=revision, image_column=args.image_column,
                           label_column=args.label_column, limit=args.limit,
                           progress=not getattr(args, "quiet", False))
    return check_heldout(data)


def share_eval_results(soup, heldout: ImageData, ctx: dict) -> None:
    """If the --eval-split data is the held-out data itself, reuse the held-out ingredient results."""
    eval_data = ctx.get("eval_data")
    if eval_data is not None and eval_data.fingerprint == heldout.fingerprint:
        entry = soup.results.get(heldout.split)
        if entry:
            ctx["ingredient_results"].update(entry.ingredient_results())


def recipe_greedy(ingredients, args, ctx):
    """``hfsoup soup --recipe greedy``."""
    from hfsoup.recipes.bn import maybe_recalibrate, validate_bn_args

    validate_bn_args(args)
    heldout = load_heldout(args)
    soup = greedy_soup(ingredients, heldout, accept_ties=args.accept_ties, cache=not args.no_cache,
                       integer_policy=args.integer_policy, **eval_kwargs(args))
    soup = maybe_recalibrate(soup, args, heldout)
    share_eval_results(soup, heldout, ctx)
    return soup
