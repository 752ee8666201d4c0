"""RADIN — Resource ADjusted soups craftINg (Ménès & Risser-Maroux, Recipe 2): soup selection on a budget.

1. every ingredient is run once on the held-out split; its logits are cached (:mod:`hfsoup.eval.logit_cache`);
2. candidates: ``C`` distinct subsets drawn by Monte-Carlo (size uniform in [2, N − 1], then members uniform among
   subsets of that size, redrawn when already drawn), plus the uniform soup of all N. When there are at most ``C``
   such subsets (2^N − N − 2 ≤ C) they are all enumerated instead;
3. every candidate is scored from the cached logits only: the held-out loss (or accuracy) of the *average of its
   members' logits* (the paper's eq. 3), computed for all candidates at once as a membership matrix (C × N) times
   the logits (N × S·K), divided by the subset sizes;
4. the prior of eq. 4, λ·(number of members), is added so that λ > 0 favours larger soups, as the paper intends:

   - ``proxy="loss"``: objective = loss − λ·k, lower is better,
   - ``proxy="accuracy"``: objective = accuracy + λ·k, higher is better (accuracy as a fraction in [0, 1]);

   (the paper writes ``L + λ·Σ 1[p_k > 0]`` while sorting by an "ApproxValAcc" where higher is better; for a loss,
   which is minimised, the prior therefore enters with a minus sign). λ = 0 and λ = 1 are the paper's settings;
5. the top ``B`` candidates by objective (ties: generation order) get a real evaluation — averaged weights, full
   forward pass on the held-out split — and the one with the best real held-out accuracy wins (ties: better
   objective). Exactly ``min(B, number of candidates)`` real evaluations.

RADIN does not compare its winner with the single ingredients: at a small budget (B = 1) the one candidate it
evaluates can be worse on held-out than the best single model (the proxy is only a proxy). The decision log records
both, and ``soup.results[split].gain`` shows the difference.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hfsoup.core.averaging import average, check_integer_policy
from hfsoup.core.soup import Soup
from hfsoup.data.images import ImageData
from hfsoup.errors import InvalidParameterError
from hfsoup.recipes.registry import get_recipe
from hfsoup.recipes.selection import evaluate_state_dict, prepare_selection, results_entry, uniform_weights


def num_subsets(n: int) -> int:
    """Number of subsets of size 2 … N−1 of N ingredients: 2^N − N − 2 (0 when N ≤ 2)."""
    return max(0, 2 ** n - n - 2) if n >= 3 else 0


def generate_candidates(n: int, num_candidates: int = 200, seed: int = 0) -> list[tuple[int, ...]]:
    """Candidate subsets (sorted index tuples): the uniform soup of all ``n`` first, then ``num_candidates``
    distinct subsets of size in [2, n − 1] (all of them, in size then lexicographic order, when there are at most
    ``num_candidates``).

    Monte-Carlo draws use ``numpy.random.default_rng(seed)``: a size uniform in [2, n − 1] among the sizes not yet
    exhausted, then a uniform subset of that size; a subset already drawn is redrawn.
    """
    if n < 2:
        raise InvalidParameterError(f"RADIN needs at least 2 ingredients, got {n}", parameter="models")
    if num_candidates < 0:
        raise InvalidParameterError(f"--candidates must be >= 0, got {num_candidates}", parameter="candidates")
    out: list[tuple[int, ...]] = [tuple(range(n))]
    total = num_subsets(n)
    if total <= num_candidates:
        for size in range(2, n):
            out.extend(itertools.combinations(range(n), size))
        return out
    rng = np.random.default_rng(seed)
    sizes = list(range(2, n))
    remaining = {s: math.comb(n, s) for s in sizes}
    seen: set[tuple[int, ...]] = set()
    while len(seen) < num_candidates:
        open_sizes = [s for s in sizes if remaining[s] > 0]
        size = open_sizes[int(rng.integers(len(open_sizes)))]
        subset = tuple(sorted(int(i) for i in rng.choice(n, size=size, replace=False)))
        if subset in seen:
            continue
        seen.add(subset)
        remaining[size] -= 1
        out.append(subset)
    return out


def membership_matrix(candidates: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """C × N float64 matrix: 1 where ingredient j is in candidate i."""
    m = torch.zeros(len(candidates), n, dtype=torch.float64)
    for i, c in enumerate(candidates):
        m[i, list(c)] = 1.0
    return m


def proxy_scores(logits: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor,
                 max_elements: int = 2 ** 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out loss and accuracy of the averaged cached logits of every candidate.

    ``logits``: N × S × K, ``membership``: C × N (0/1). The candidates' logits are ``membership @ logits / sizes``
    in float64, computed in chunks of candidates so that at most ``max_elements`` values are held at once.
    Returns ``(loss, accuracy)``, two float64 tensors of length C.
    """
    n, s, k = logits.shape
    flat = logits.reshape(n, s * k).to(torch.float64)
    sizes = membership.sum(dim=1, keepdim=True)
    labels = labels.to(torch.int64)
    chunk = max(1, max_elements // max(1, s * k))
    losses, accs = [], []
    for start in range(0, membership.shape[0], chunk):
        m = membership[start:start + chunk]
        avg = ((m @ flat) / sizes[start:start + chunk]).view(-1, s, k)  # (c, S, K)
        logp = F.log_softmax(avg, dim=2)
        nll = -logp.gather(2, labels.view(1, s, 1).expand(avg.shape[0], s, 1)).squeeze(2)  # (c, S)
        losses.append(nll.mean(dim=1))
        accs.append((avg.argmax(dim=2) == labels.view(1, s)).to(torch.float64).mean(dim=1))
    return torch.cat(losses), torch.cat(accs)


def objective(loss: torch.Tensor, accuracy: torch.Tensor, sizes: torch.Tensor, proxy: str,
              prior_lambda: float) -> torch.Tensor:
    """The ranking objective, as a *lower is better* tensor: loss − λ·k, or −(accuracy + λ·k)."""
    sizes = sizes.to(torch.float64)
    if proxy == "loss":
        return loss - prior_lambda * sizes
    return -(accuracy + prior_lambda * sizes)


def radin_soup(models: Sequence, heldout_data: ImageData, *, budget: int = 25, candidates: int = 200,
               prior_lambda: float = 0.0, proxy: str = "loss", seed: int = 0, cache: bool = True,
               integer_policy: str = "mean", batch_size: int = 500, device=None, progress: bool = False,
               **load_kwargs) -> Soup:
    """RADIN soup selected on ``heldout_data`` with a budget of ``budget`` real evaluations.

    ``models``: references, paths or ingredients. Returns a :class:`~hfsoup.core.soup.Soup` with recipe ``radin``
    (weights uniform over the winning subset, 0 for the others), the decision log in ``soup.log`` and the held-out
    scores in ``soup.results[split]``. The winner is the best of the evaluated candidates, which at a small budget
    can be below the best single ingredient. Raises :class:`~hfsoup.errors.NonFiniteError` up front if an
    ingredient's held-out logits hold NaN/Inf.
    """
    params = get_recipe("radin").validate({"budget": budget, "candidates": candidates, "prior_lambda": prior_lambda,
                                           "proxy": proxy, "seed": seed})
    budget, candidates, prior_lambda, proxy, seed = (params[k] for k in ("budget", "candidates", "prior_lambda",
                                                                         "proxy", "seed"))
    check_integer_policy(integer_policy)
    t0 = time.perf_counter()
    sel = prepare_selection(models, heldout_data, cache=cache, batch_size=batch_size, device=device,
                            progress=progress, **load_kwargs)
    ings, logits, ing_results, stats, ev = sel.ingredients, sel.logits, sel.results, sel.stats, sel.eval_kwargs
    n = len(ings)
    t_logits = time.perf_counter()

    cands = generate_candidates(n, candidates, seed)
    membership = membership_matrix(cands, n)
    sizes = membership.sum(dim=1)
    loss, acc = proxy_scores(logits, heldout_data.labels, membership)
    obj = objective(loss, acc, sizes, proxy, prior_lambda)
    # Stable sort: ties keep generation order (the uniform soup is candidate 0).
    ranking = sorted(range(len(cands)), key=lambda i: (obj[i].item(), i))
    t_proxy = time.perf_counter()

    top = ranking[:min(budget, len(cands))]
    config = ings[0].config
    real: dict[int, object] = {}
    best_i, best_state = None, None
    for r, ci in enumerate(top):
        weights = uniform_weights(cands[ci], n)
        state = average(ings, weights, integer_policy=integer_policy, check=False)
        real[ci] = evaluate_state_dict(config, state, heldout_data, desc=f"radin {r + 1}/{len(top)}", **ev)
        # Candidates come in objective order, so a strict '>' keeps the better objective on accuracy ties.
        if best_i is None or real[ci].accuracy > real[best_i].accuracy:
            best_i, best_state = ci, state
        del state
    t_real = time.perf_counter()

    rank_of = {ci: r for r, ci in enumerate(ranking, start=1)}
    sign = -1.0 if proxy == "accuracy" else 1.0
    cand_log = []
    for ci, c in enumerate(cands):
        entry = {"id": ci, "members": list(c), "size": len(c), "uniform": len(c) == n,
                 "proxy_loss": loss[ci].item(), "proxy_accuracy": acc[ci].item(),
                 "objective": sign * obj[ci].item(), "rank": rank_of[ci]}
        if ci in real:
            entry.update(evaluated=True, accuracy=real[ci].accuracy, loss=real[ci].loss)
        cand_log.append(entry)
    weights = uniform_weights(cands[best_i], n)
    log = {
        "recipe": "radin",
        "heldout": heldout_data.describe(),
        "seed": seed, "candidates_requested": candidates, "num_candidates": len(cands),
        "enumerated": num_subsets(n) <= candidates, "budget": budget, "evaluations": len(top),
        "prior_lambda": prior_lambda, "proxy": proxy,
        "objective": ("proxy_loss - prior_lambda * size (lower is better)" if proxy == "loss" else
                      "proxy_accuracy + prior_lambda * size (higher is better)"),
        "ingredients": [{"index": i, "reference": ing.reference, "accuracy": r.accuracy, "loss": r.loss}
                        for i, (ing, r) in enumerate(zip(ings, ing_results))],
        "candidates": cand_log,
        "evaluated": [ci for ci in top],
        "winner": {"id": best_i, "members": list(cands[best_i]),
                   "references": [ings[i].reference for i in cands[best_i]],
                   "accuracy": real[best_i].accuracy, "loss": real[best_i].loss, "rank": rank_of[best_i]},
        # > 0 when the proxy ranking tracks the real held-out accuracy of the evaluated candidates.
        "proxy_real_spearman": _spearman([-obj[ci].item() for ci in top], [real[ci].accuracy for ci in top]),
        "cost": {"ingredient_passes": stats.misses, "cache_hits": stats.hits,
                 "soup_passes": len(top), "seconds_logits": round(t_logits - t0, 3),
                 "seconds_proxy": round(t_proxy - t_logits, 4), "seconds_real": round(t_real - t_proxy, 3)},
    }
    params.update(integer_policy=integer_policy, heldout=heldout_data.describe())
    soup = Soup("radin", ings, weights, best_state, parameters=params, log=log)
    soup.results[heldout_data.split] = results_entry(heldout_data, real[best_i], ings, ing_results, weights)
    return soup


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties) between the objective and the real accuracy."""
    if len(a) < 3:
        return None

    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):
            idx = x == v
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
