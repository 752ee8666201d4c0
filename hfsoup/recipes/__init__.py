"""Soup recipes: mix / uniform / weighted, greedy, RADIN, learned, the ensemble baseline, BN recalibration.

The built-in recipes are declared here, once (:class:`~hfsoup.recipes.registry.Recipe`): their parameters and
defaults, whether they need a held-out split or write a model, and their reference. The CLI options, validation, the
``--help`` text, the docs table and the ``parameters`` recorded in ``soup.json`` all derive from these declarations,
and each recipe function's keyword defaults equal them (a test checks). Declarations are plain data: this module
imports no torch; a recipe's function is imported from its ``entry`` when it runs.

A new recipe is one module with its function plus one :func:`~hfsoup.recipes.registry.register_recipe` call.
"""

from __future__ import annotations

from hfsoup.recipes.registry import Param, Recipe, register_recipe

WORTSMAN = "Wortsman et al. 2022"
RADIN_PAPER = "Ménès & Risser-Maroux, RADIN"


def _positive(value) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


#: One ``--seed`` for every recipe that draws random numbers (RADIN's candidates, the learned soup's minibatches).
SEED = Param("seed", int, 0, "seed of RADIN's candidate sampling and of the learned soup's minibatch order",
             minimum=0)

register_recipe(Recipe(
    name="mix", summary="(1 − α)·A + α·B of two models (α = 0 gives A, α = 1 gives B, bit for bit)",
    reference=f"{WORTSMAN}, §2 (a soup of two models; α-interpolation)", entry="hfsoup.recipes.mix:mix_models",
    params=(Param("alpha", float, 0.5, "weight of the second model, in [0, 1]", minimum=0.0, maximum=1.0),),
    min_models=2, max_models=2))

register_recipe(Recipe(
    name="uniform", summary="equal weights over all models: the exact mean of their tensors",
    reference=f"{WORTSMAN}, §2 (uniform soup)", entry="hfsoup.recipes.mix:uniform_soup"))

register_recipe(Recipe(
    name="greedy",
    summary="add models best-first while the held-out accuracy of their uniform soup improves",
    reference=f"{WORTSMAN}, Recipe 1 (§2)", entry="hfsoup.recipes.greedy:greedy_soup", needs_heldout=True,
    params=(Param("accept_ties", bool, False,
                  "keep a model when the held-out accuracy ties the best (>=) instead of the reference strict "
                  "rule (>), as in the RADIN paper's version of Recipe 1"),)))

register_recipe(Recipe(
    name="radin",
    summary="rank candidate subsets by a proxy on cached logits, evaluate the top B, keep the best",
    reference=f"{RADIN_PAPER}, Recipe 2", entry="hfsoup.recipes.radin:radin_soup", needs_heldout=True,
    params=(Param("budget", int, 25, "number of real (full forward pass) evaluations", minimum=1),
            Param("candidates", int, 200, "Monte-Carlo candidate subsets, plus the uniform soup", minimum=0),
            Param("prior_lambda", float, 0.0,
                  "prior λ·(number of members) favouring larger soups: objective = loss − λ·k (or accuracy + λ·k); "
                  "the paper uses 0 and 1"),
            Param("proxy", str, "loss", "proxy metric of the averaged cached logits", choices=("loss", "accuracy")),
            SEED)))

register_recipe(Recipe(
    name="learned",
    summary="mixing weights (softmax, optionally per layer) and a temperature learned by AdamW on held-out",
    reference=f"{WORTSMAN}, Appendix I", entry="hfsoup.recipes.learned:learned_soup", needs_heldout=True,
    params=(Param("epochs", int, 3, "epochs over the held-out split (the paper: 3)", minimum=1,
                  flag="--learned-epochs"),
            Param("lr", float, 0.1, "AdamW learning rate, constant (the paper: 0.1)", flag="--learned-lr",
                  check=_positive),
            Param("train_batch_size", int, 64, "training minibatch size", minimum=1, flag="--learned-batch-size"),
            Param("weight_decay", float, 0.0,
                  "AdamW weight decay on the mixing logits and log-temperature (0, as in the reference code)",
                  minimum=0.0, flag="--learned-weight-decay"),
            Param("init", str, "uniform", "initial weights: uniform, or half on the best held-out model",
                  choices=("uniform", "best"), flag="--learned-init"),
            Param("per_layer", bool, False,
                  "learn one weight per model and parameter tensor (the paper's 'by layer' variant)"),
            SEED)))

register_recipe(Recipe(
    name="ensemble",
    summary="average of the models' logits (N forward passes at inference): a baseline, reported only",
    reference=f"{WORTSMAN}, §3.1 (logit ensemble baseline)", entry="hfsoup.recipes.ensemble:ensemble_evaluate",
    needs_heldout=True, writes_model=False))
