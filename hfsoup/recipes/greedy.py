"""Greedy soup (Wortsman et al. 2022, Recipe 1) on the held-out split only.

Greedy, as in SPEC §2:

1. every ingredient is evaluated on the held-out split (from the logit cache, :mod:`hfsoup.eval.logit_cache`);
2. ingredients are sorted by held-out accuracy, best first; ties are broken by lower held-out loss, then by the
   order the models were given (input order). The reference implementation's sort puts tied models in *reverse*
   input order; hfsoup's order is deterministic and documented instead (docs/recipes.md);
3. the soup starts as the best ingredient, whose accuracy is the score to beat;
4. for each next ingredient the candidate is the uniform average of the kept ingredients plus it, built from a
   running float64 sum (one average and one evaluation per step); it is kept iff its held-out accuracy is strictly
   greater than the best so far (``accept_ties=True``: greater or equal, as in the RADIN paper's Recipe 1);
5. the returned soup is exactly ``average(selected ingredients, uniform weights)`` (weight 0 for the dropped ones).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from hfsoup.core.averaging import average, check_integer_policy
from hfsoup.core.ingredients import Ingredient
from hfsoup.core.results import EvalResult
from hfsoup.core.soup import Soup
from hfsoup.data.images import ImageData
from hfsoup.recipes.registry import get_recipe
from hfsoup.recipes.selection import evaluate_state_dict, prepare_selection, results_entry, uniform_weights


def greedy_order(results: Sequence[EvalResult]) -> list[int]:
    """Indices sorted by held-out accuracy (best first), then lower loss, then input order."""
    return sorted(range(len(results)), key=lambda i: (-results[i].accuracy, results[i].loss, i))


def greedy_soup(models: Sequence, heldout_data: ImageData, *, accept_ties: bool = False, cache: bool = True,
                integer_policy: str = "mean", batch_size: int = 500, device=None, progress: bool = False,
                **load_kwargs) -> Soup:
    """Greedy soup selected on ``heldout_data`` (never the test split).

    ``models``: references, paths or ingredients. Returns a :class:`~hfsoup.core.soup.Soup` with recipe
    ``greedy``: weights uniform over the selected ingredients and 0 for the others, the decision log in
    ``soup.log`` and the held-out scores in ``soup.results[split]``. Raises
    :class:`~hfsoup.errors.NonFiniteError` up front if an ingredient's held-out logits hold NaN/Inf.
    """
    params = get_recipe("greedy").validate({"accept_ties": accept_ties})
    accept_ties = params["accept_ties"]
    check_integer_policy(integer_policy)
    t0 = time.perf_counter()
    sel = prepare_selection(models, heldout_data, cache=cache, batch_size=batch_size, device=device,
                            progress=progress, **load_kwargs)
    ings, ing_results, stats, ev = sel.ingredients, sel.results, sel.stats, sel.eval_kwargs
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
        "cost": {"ingredient_passes": stats.misses, "cache_hits": stats.hits,
                 "soup_passes": real_evals, "seconds": round(time.perf_counter() - t0, 3)},
    }
    params.update(integer_policy=integer_policy, heldout=heldout_data.describe())
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
