"""Learned soup (Wortsman et al. 2022, Appendix I): mixing weights learned by gradient descent on the held-out split.

The soup's parameters are θ = Σᵢ wᵢ θᵢ with ``w = softmax(α)`` (each wᵢ > 0, Σ wᵢ = 1), and the held-out loss of
the mixed model with temperature-scaled logits, ``ℓ(f(x, θ) / T, y)``, is minimised over α and T (the paper's eq. 2
writes β·f with β = 1/T) by AdamW on minibatches of the held-out split — never the test split:

* **global** (default): one logit per ingredient, ``α ∈ R^N``;
* **per layer** (``per_layer=True``, the paper's "by layer" variant): one logit per ingredient and *parameter
  tensor*, ``α ∈ R^{K×N}`` for the K floating parameter tensors; each tensor's weights are ``softmax(α[k])``.

Details and choices:

* the model is evaluated functionally (:func:`torch.func.functional_call`) on the mixed tensors, in eval mode, so
  BatchNorm layers use their (mixed) running statistics, exactly as the written soup will;
* **BatchNorm buffers** (running mean/var) are mixed with the weights of the layer they belong to — the global
  weights, or per layer those of the BatchNorm's ``weight`` tensor (the global mean weights when a buffer has no
  such owner) — *detached*: they follow the learned weights but gradients flow through the parameters only.
  Integer buffers (``num_batches_tracked``) play no part in the forward pass; in the soup they follow
  ``integer_policy`` with the (mean) weights;
* T is learned as ``log T`` (so T > 0), starting at T = 1; it only shapes the training loss, it is not part of the
  written model (held-out figures in ``results`` are plain cross-entropy, T = 1);
* AdamW with a constant learning rate (paper: 3 epochs, lr 0.1) and **no weight decay** by default: the paper
  gives none and the reference code (mlfoundations/model-soups) uses 0, so ``weight_decay=0.0`` (not AdamW's
  0.01); minibatches in an order drawn with ``torch.Generator().manual_seed(seed)``: the same seed gives the same
  weights (on the same device);
* **memory**: unlike the other recipes, which stream one tensor at a time, this one holds *all* ingredients'
  tensors at once (as float32 stacks on the compute device), N times the model size, plus one mixed model and its
  gradients — the downside the paper notes;
* the final soup: global mode, ``weights`` = the learned softmax weights and the state dict is exactly
  ``average(ingredients, weights)``; per-layer mode, each tensor is ``Σᵢ w[k, i]·θᵢ[k]`` accumulated in float64
  and cast back, the per-tensor weights are in the decision log (``per_tensor_weights``) and ``Soup.weights`` is
  the mean weight of each ingredient over the parameter tensors (it sums to one; a summary, not a recipe to
  rebuild the soup with :func:`~hfsoup.core.averaging.average`).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from hfsoup.core.averaging import all_finite, average, check_integer_policy, check_weights
from hfsoup.core.models import build_model
from hfsoup.core.soup import Soup
from hfsoup.data.images import ImageData
from hfsoup.errors import HfSoupError, InvalidParameterError, NonFiniteError
from hfsoup.eval.metrics import default_device, norm_stats
from hfsoup.recipes.registry import get_recipe
from hfsoup.recipes.selection import evaluate_state_dict, prepare_selection, results_entry


def _initial_logits(init, n: int, ing_results) -> tuple[torch.Tensor, str]:
    """Initial α (float64, length n) and a description: uniform (α = 0), best (half the weight on the best
    held-out ingredient, the rest shared), or explicit positive weights (α = log w)."""
    if isinstance(init, str):
        if init == "uniform" or n == 1:
            return torch.zeros(n, dtype=torch.float64), "uniform"
        best = min(range(n), key=lambda i: (-ing_results[i].accuracy, ing_results[i].loss, i))
        w = torch.full((n,), 0.5 / (n - 1), dtype=torch.float64)
        w[best] = 0.5
        return w.log(), f"best: 0.5 on ingredient {best}, the rest shared"
    w = [float(x) for x in init]
    if len(w) != n or any(not math.isfinite(x) or x <= 0 for x in w):
        raise InvalidParameterError(f"init weights must be {n} positive finite numbers, got {init}",
                                    parameter="init")
    w = check_weights(w, n, normalize=True)
    return torch.tensor(w, dtype=torch.float64).log(), "explicit weights"


def _owner_rows(keys: Sequence[str], float_keys: Sequence[str], param_rows: dict[str, int]) -> dict[str, int]:
    """Per-layer mode: the α row of every floating tensor. Parameters have their own row; a floating buffer uses
    its module's ``weight`` row (BatchNorm's running stats follow the BatchNorm weight), or -1 (mean weights)."""
    rows = {}
    for k in float_keys:
        if k in param_rows:
            rows[k] = param_rows[k]
        else:
            owner = k.rpartition(".")[0] + ".weight" if "." in k else "weight"
            rows[k] = param_rows.get(owner, -1)
    return rows


def learned_soup(models: Sequence, heldout_data: ImageData, *, epochs: int = 3, lr: float = 0.1,
                 train_batch_size: int = 64, weight_decay: float = 0.0, init="uniform", per_layer: bool = False,
                 seed: int = 0, cache: bool = True, integer_policy: str = "mean", batch_size: int = 500, device=None,
                 progress: bool = False, **load_kwargs) -> Soup:
    """Learned soup on ``heldout_data`` (never the test split): softmax mixing weights (per ingredient, or per
    ingredient × parameter tensor with ``per_layer``) and a temperature trained with AdamW.

    ``train_batch_size`` is the training minibatch size; ``batch_size`` that of the evaluation passes (ingredients,
    one held-out pass per epoch for the training curve, the final soup), as for every recipe. ``weight_decay``
    defaults to 0, as in the reference code (the paper gives none). ``init``: ``"uniform"``, ``"best"`` or a
    sequence of positive initial weights. Returns a :class:`~hfsoup.core.soup.Soup` with recipe ``learned``; see the
    module docstring for the weights, the BatchNorm buffers and memory.
    """
    explicit_init = not isinstance(init, str)  # Python API only: initial weights, checked by _initial_logits
    params = get_recipe("learned").validate({
        "epochs": epochs, "lr": lr, "train_batch_size": train_batch_size, "weight_decay": weight_decay,
        "init": None if explicit_init else init, "per_layer": per_layer, "seed": seed})
    if explicit_init:
        params["init"] = [float(v) for v in init]
    epochs, lr, train_batch_size, weight_decay, per_layer, seed = (
        params[k] for k in ("epochs", "lr", "train_batch_size", "weight_decay", "per_layer", "seed"))
    check_integer_policy(integer_policy)
    t0 = time.perf_counter()
    sel = prepare_selection(models, heldout_data, cache=cache, batch_size=batch_size, device=device,
                            progress=progress, **load_kwargs)
    ings, ing_results, stats, ev = sel.ingredients, sel.results, sel.stats, sel.eval_kwargs
    n = len(ings)
    alpha0, init_note = _initial_logits(init, n, ing_results)
    t_ing = time.perf_counter()

    dev = torch.device(device) if device is not None else default_device()
    config = ings[0].config
    model = build_model(config, None, device=dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    param_keys = [k for k, _ in model.named_parameters()]
    keys = list(ings[0].tensors)
    dtypes = {k: ings[0].tensors[k].dtype for k in keys}
    float_keys = [k for k in keys if dtypes[k].is_floating_point]
    int_keys = [k for k in keys if not dtypes[k].is_floating_point]
    missing = [k for k in param_keys if k not in dtypes or not dtypes[k].is_floating_point]
    if missing:
        raise HfSoupError(f"the ingredients' weights do not match the model's parameters (e.g. '{missing[0]}')")
    mixed_params = [k for k in param_keys]  # the K tensors that get their own α row in per-layer mode
    param_rows = {k: i for i, k in enumerate(mixed_params)}

    # All ingredients at once: one (N, numel) float32 stack per floating tensor, on the compute device.
    # Read tensor by tensor, so the peak is the stacks plus one tensor per ingredient.
    stacks: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as es:
        readers = [es.enter_context(ing.open()) for ing in ings]
        for k in float_keys:
            stacks[k] = torch.stack([r.get_tensor(k).reshape(-1).to(torch.float32) for r in readers]).to(dev)
        fixed = {k: readers[0].get_tensor(k).to(dev) for k in int_keys}  # unused by BatchNorm in eval mode
    shapes = {k: ings[0].tensors[k].shape for k in keys}
    rows = _owner_rows(keys, float_keys, param_rows) if per_layer else {}

    g = torch.Generator().manual_seed(seed)
    if per_layer:
        alpha = alpha0.to(torch.float32).repeat(len(mixed_params), 1).to(dev).requires_grad_(True)
    else:
        alpha = alpha0.to(torch.float32).to(dev).requires_grad_(True)
    log_t = torch.zeros((), dtype=torch.float32, device=dev, requires_grad=True)
    opt = torch.optim.AdamW([alpha, log_t], lr=lr, weight_decay=weight_decay)

    def mixed_state() -> dict[str, torch.Tensor]:
        w = torch.softmax(alpha, dim=-1)
        mean_w = w if not per_layer else w.mean(dim=0)
        out = dict(fixed)
        for k in float_keys:
            if per_layer:
                wk = w[rows[k]] if rows[k] >= 0 else mean_w
            else:
                wk = w
            if k not in param_rows:
                wk = wk.detach()  # buffers follow the weights; gradients flow through the parameters only
            out[k] = (wk @ stacks[k]).view(shapes[k])
        return out

    x_all = heldout_data.normalized(*norm_stats(model))
    y_all = heldout_data.labels.to(torch.int64)
    s = len(heldout_data)

    def curve_point(epoch: int, train_loss) -> dict:
        with torch.no_grad():
            state = mixed_state()
            t = log_t.exp()
            outs = []
            for start in range(0, s, batch_size):
                outs.append(torch.func.functional_call(model, state, (x_all[start:start + batch_size].to(dev),))
                            .float().cpu())
            logits = torch.cat(outs).double()
            point = {"epoch": epoch, "train_loss": train_loss,
                     "heldout_loss": F.cross_entropy(logits, y_all).item(),
                     "heldout_loss_scaled": F.cross_entropy(logits / t.double().cpu(), y_all).item(),
                     "heldout_accuracy": (logits.argmax(1) == y_all).double().mean().item(),
                     "temperature": t.item()}
            w = torch.softmax(alpha.detach().double(), dim=-1)
            point["weights"] = (w.mean(0) if per_layer else w).cpu().tolist()
            return point

    curve = [curve_point(0, None)]
    steps = 0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(s, generator=g)
        total, count = 0.0, 0
        for start in range(0, s, train_batch_size):
            idx = perm[start:start + train_batch_size]
            x, y = x_all[idx].to(dev), y_all[idx].to(dev)
            logits = torch.func.functional_call(model, mixed_state(), (x,))
            loss = F.cross_entropy(logits.float() / log_t.exp(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total += loss.item() * len(idx)
            count += len(idx)
        if not math.isfinite(total):
            raise NonFiniteError(f"learned soup: the training loss became non-finite in epoch {epoch}; lower "
                                 f"--learned-lr")
        curve.append(curve_point(epoch, total / count))
    t_train = time.perf_counter()
    del stacks

    # The soup: float64 softmax of the learned logits.
    w64 = torch.softmax(alpha.detach().double().cpu(), dim=-1)
    temperature = float(log_t.detach().exp().item())
    per_tensor = None
    if per_layer:
        weights = [float(v) for v in w64.mean(dim=0)]
        per_tensor = {k: [float(v) for v in w64[i]] for k, i in param_rows.items()}
        state = _per_layer_state(ings, w64, rows, float_keys, int_keys, dtypes, integer_policy)
    else:
        weights = check_weights([float(v) for v in w64], n)
        state = average(ings, weights, integer_policy=integer_policy, check=False)
    final = evaluate_state_dict(config, state, heldout_data, desc="learned final", **ev)
    t_end = time.perf_counter()

    log = {
        "recipe": "learned",
        "heldout": heldout_data.describe(),
        "mode": "per_layer" if per_layer else "global",
        "options": {"epochs": epochs, "lr": lr, "train_batch_size": train_batch_size, "weight_decay": weight_decay,
                    "seed": seed, "init": params["init"],
                    "init_note": init_note, "optimizer": "AdamW (constant lr)", "integer_policy": integer_policy,
                    "device": str(dev)},
        "parameterisation": ("w = softmax(alpha), alpha: one logit per ingredient" if not per_layer else
                             "w[k] = softmax(alpha[k]), alpha: one logit per ingredient and parameter tensor"),
        "loss": "cross_entropy(f(x, sum_i w_i theta_i) / T, y) on the held-out split, T = exp(log_T) learned",
        "bn_buffers": ("floating buffers mixed with the weights of their layer (global weights"
                       + (", or the BatchNorm weight's row per layer; mean weights without owner" if per_layer
                          else "") + "), detached; integer buffers: integer_policy"),
        "ingredients": [{"index": i, "reference": ing.reference, "accuracy": r.accuracy, "loss": r.loss}
                        for i, (ing, r) in enumerate(zip(ings, ing_results))],
        "curve": curve,
        "weights": weights,
        "temperature": temperature,
        "final": {"accuracy": final.accuracy, "loss": final.loss,
                  "note": "real evaluation of the written weights (plain cross-entropy, T = 1)"},
        "memory": f"all {n} ingredients held at once (float32 stacks on {dev})",
        "cost": {"ingredient_passes": stats.misses, "cache_hits": stats.hits,
                 "optimizer_steps": steps, "curve_passes": len(curve), "soup_passes": 1,
                 "seconds_ingredients": round(t_ing - t0, 3), "seconds_training": round(t_train - t_ing, 3),
                 "seconds_final": round(t_end - t_train, 3)},
    }
    if per_layer:
        log["weights_note"] = "mean over parameter tensors of the per-tensor weights (Soup.weights)"
        log["per_tensor_weights"] = per_tensor
    params.update(integer_policy=integer_policy, heldout=heldout_data.describe())
    soup = Soup("learned", ings, weights, state, parameters=params, log=log)
    soup.results[heldout_data.split] = results_entry(heldout_data, final, ings, ing_results, weights)
    return soup


def _per_layer_state(ings, w64: torch.Tensor, rows: dict[str, int], float_keys, int_keys, dtypes,
                     integer_policy: str) -> dict[str, torch.Tensor]:
    """Σᵢ w[k, i]·θᵢ[k] per tensor, float64 accumulation, cast back; integer buffers with the mean weights."""
    mean_w = w64.mean(dim=0)
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(ing.open()) for ing in ings]
        for k in list(ings[0].tensors):
            if k in rows:
                wk = w64[rows[k]] if rows[k] >= 0 else mean_w
                acc = None
                for w, r in zip(wk.tolist(), readers):
                    t = r.get_tensor(k)
                    if acc is None:
                        acc = t.to(torch.float64, copy=True).mul_(w)
                    else:
                        acc.add_(t, alpha=w)
                res = acc.to(dtypes[k])
                if not all_finite(res):
                    raise NonFiniteError(f"learned soup: tensor '{k}' contains NaN/Inf: check the ingredients")
                out[k] = res
            else:
                ts = [r.get_tensor(k) for r in readers]
                if integer_policy == "first":
                    out[k] = ts[0].clone()
                elif integer_policy == "max":
                    out[k] = torch.stack(ts).max(dim=0).values
                else:
                    acc = sum(t.to(torch.float64) * w for t, w in zip(ts, mean_w.tolist()))
                    out[k] = acc.round().to(dtypes[k])
    return out
