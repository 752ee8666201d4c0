"""``hfsoup mix`` and ``hfsoup soup``: average models with a recipe, evaluate, write the soup folder.

``hfsoup soup`` is driven by the recipe registry (:mod:`hfsoup.recipes.registry`): the ``--recipe`` choices, one
option per declared parameter, its validation (once, for the chosen recipe), whether a held-out split is read and
whether a model is written all come from the recipes' declarations. BatchNorm recalibration (``--recalibrate-bn``)
is applied once, after any recipe that writes a model.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hfsoup.cli.corrupted import (CorruptedRun, add_corrupted_options, check_corrupted_selection,
                                  evaluate_soup_cli, print_soup_tables, wants_corrupted)
from hfsoup.cli.options import (add_data_options, add_json_option, add_model_options, add_output_options,
                                eval_options, examples, load_data, progress_enabled)
from hfsoup.cli.output import (console, left_out_note, loss_cell, non_finite_note, not_finite, pct, print_json,
                               top_rows, unique_names)
from hfsoup.errors import HfSoupError, InvalidParameterError

if TYPE_CHECKING:
    from hfsoup.core.results import EvalResult
    from hfsoup.core.soup import Soup
    from hfsoup.data.images import ImageData
    from hfsoup.recipes.registry import Recipe

#: Splits a selection recipe may read its decisions from (never test): ``hfsoup.recipes.selection.HELDOUT_SPLITS``,
#: repeated here because that module imports torch and ``--help`` must not (a test keeps the two equal).
HELDOUT_SPLITS = ("val", "train", "train-main")
#: ``hfsoup soup --help`` examples (recipes may declare more: ``Recipe.examples``).
SOUP_EXAMPLES = (
    "hfsoup soup ./m1 ./m2 ./m3 --recipe uniform --out ./soup-u",
    "hfsoup soup org/m1 org/m2 --recipe uniform --out ./soup --eval-split test --json",
    "hfsoup soup ./zoo/* --recipe greedy --out ./greedy",
    "hfsoup soup ./zoo/* --recipe greedy --accept-ties --eval-split test --out ./greedy-ties",
    "hfsoup soup ./zoo/* --recipe radin --budget 25 --candidates 200 --prior-lambda 1 --out ./radin",
    "hfsoup soup ./zoo/* --recipe ensemble --eval-split test --json",
    "hfsoup soup ./zoo/* --recipe learned --learned-epochs 3 --per-layer --out ./learned",
    "hfsoup soup ./m1 ./m2 ./m3 --recipe uniform --recalibrate-bn 20 --out ./soup-bn",
)
#: Prefix of the argparse destinations of recipe parameters (their defaults are suppressed, so that a parameter
#: given explicitly can be told from one left at its default).
_PARAM_DEST = "recipe_param__"


def register(subparsers) -> None:
    """Add ``hfsoup mix`` and ``hfsoup soup``."""
    _add_mix_parser(subparsers)
    _add_soup_parser(subparsers)


# -- one run ---------------------------------------------------------------------------------------------------
@dataclass
class SoupRun:
    """What the soups of one ``mix``/``soup`` run share: the evaluation data, the ingredients' results on it
    (each ingredient is evaluated once per run), the corrupted evaluation, and the report of a recipe that writes
    no model (per split)."""

    data: ImageData | None = None
    ingredient_results: dict[str, EvalResult] = field(default_factory=dict)
    corrupted: CorruptedRun | None = None
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    soups: list[dict] = field(default_factory=list)

    def extras(self) -> dict:
        """The optional sections of the report (``corrupted``, and ``<recipe>`` for report-only recipes)."""
        out: dict[str, Any] = dict(self.report)
        if self.corrupted is not None:
            out["corrupted"] = self.corrupted.to_dict()
        return out


def _integer_policy_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--integer-policy", default="mean", choices=["mean", "max", "first"],
                   help="how integer buffers (num_batches_tracked) are combined (default: %(default)s)")


def plan_outputs(args: argparse.Namespace, subfolders: Sequence[str] | None) -> list[Path | None]:
    """The output folder of each soup, checked (exists without ``--force``) before any work."""
    from hfsoup.core.files import check_output

    if args.no_save:
        return [None] * (len(subfolders) if subfolders else 1)
    if not args.out:
        raise HfSoupError("no output folder: pass --out DIR (or --no-save to evaluate only)")
    root = Path(args.out)
    if subfolders is None:
        return [check_output(root, args.force)]
    return [check_output(root / s, args.force) for s in subfolders]


def finish_soup(soup: Soup, args: argparse.Namespace, run: SoupRun, out: Path | None,
                extra: dict | None = None) -> dict:
    """Evaluate ``soup`` on the run's data (and CIFAR-100-C), write it to ``out``; its row of the report."""
    if run.data is not None:
        from hfsoup.eval.soup import evaluate_soup

        entry = evaluate_soup(soup, run.data, ingredient_results=run.ingredient_results, **eval_options(args))
        run.ingredient_results.update(entry.ingredient_results())
    run.corrupted = evaluate_soup_cli(soup, args, run.data, run.corrupted)
    if out is not None:
        from hfsoup.hub.format import save_soup

        save_soup(soup, out, force=args.force)
    row = dict(extra or {})
    row.update(recipe=soup.recipe, weights=soup.weights, out=str(out) if out else None, parameters=soup.parameters)
    if out is not None:
        row["sha256"] = json.loads((Path(out) / "soup.json").read_text())["sha256"]
    row["results"] = {split: dict(r.soup.to_dict(), gain=r.gain) for split, r in soup.results.items()}
    if soup.log is not None:
        row["decision_log"] = soup.log
    run.soups.append(row)
    return row


def report(args: argparse.Namespace, recipe: str, ings: list, run: SoupRun) -> dict:
    """The run's report: printed as one JSON document (``--json``) or as tables; returned."""
    data = run.data
    doc = {
        "recipe": recipe,
        "ingredients": [dict(i.describe(), results={data.split: run.ingredient_results[i.reference].to_dict()}
                             if data is not None and i.reference in run.ingredient_results else {})
                        for i in ings],
        "soups": run.soups,
        "data": data.describe() if data is not None else None,
    }
    doc.update(run.extras())
    if args.json:
        print_json(doc)
    else:
        print_report(doc, report_sections=list(run.report))
        print_soup_tables(doc)
    return doc


def _add_soup_output_and_eval_options(p) -> None:
    """What `mix` and `soup` share: models, output, integer policy, --json, --eval-split data, CIFAR-100-C."""
    add_model_options(p)
    add_output_options(p)
    _integer_policy_option(p)
    add_json_option(p)
    add_data_options(p, split_flag="--eval-split", default_split=None)
    add_corrupted_options(p)


# -- mix -------------------------------------------------------------------------------------------------------
def _add_mix_parser(sub) -> None:
    p = sub.add_parser("mix", help="interpolate two models: (1-α)·A + α·B",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="θ = (1 − α)·θ_A + α·θ_B, tensor by tensor. α is the weight of the second model: "
                                   "α = 0 gives A exactly, α = 1 gives B. A comma list of α writes one soup per value "
                                   "(OUT/alpha-0.250, …).",
                       epilog=examples("""
                           hfsoup mix org/a org/b --alpha 0.5 --out ./soup-ab
                           hfsoup mix org/a@3f2c1e0 ./b --alpha 0,0.25,0.5,0.75,1 --out ./curve
                           hfsoup mix ./a ./b --alpha 0.5 --out ./soup-ab --eval-split test --dataset ./cifar100 --json"""))
    p.add_argument("models", nargs="+", metavar="MODEL", help="two model references (Hub id[@rev], hf-hub:…, folder)")
    p.add_argument("--alpha", default="0.5", help="weight of the second model, or a comma list (default: 0.5)")
    _add_soup_output_and_eval_options(p)
    p.set_defaults(func=cmd_mix)


def cmd_mix(args: argparse.Namespace) -> dict:
    """``hfsoup mix A B --alpha a[,b,…]``: one soup per α (``OUT/alpha-0.250`` … for a list)."""
    from hfsoup.recipes.mix import check_alpha_folders, parse_alphas

    alphas = parse_alphas(args.alpha)
    if len(args.models) != 2:
        raise HfSoupError(f"mix takes exactly two models (got {len(args.models)}): use `hfsoup soup` for more")
    # Plan: check everything (α, output folders, corrupted selection, models) before any averaging or writing.
    subfolders = check_alpha_folders(alphas) if len(alphas) > 1 else None
    outs = plan_outputs(args, subfolders)
    if wants_corrupted(args):
        check_corrupted_selection(args)
    from hfsoup.core.ingredients import load_ingredients
    from hfsoup.recipes.mix import mix

    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, min_count=2)
    from hfsoup.hub.format import check_outputs_not_inputs

    check_outputs_not_inputs(outs, ings)  # --out must not be, hold or lie in an input (--force would delete it)
    run = SoupRun(data=load_data(args) if args.split else None)
    for alpha, out in zip(alphas, outs):
        soup = mix(ings[0], ings[1], alpha, integer_policy=args.integer_policy)
        finish_soup(soup, args, run, out, extra={"alpha": alpha})
    return report(args, "mix", ings, run)


# -- soup: options from the recipe declarations -----------------------------------------------------------------
def _param_dest(flag: str) -> str:
    return _PARAM_DEST + flag.lstrip("-").replace("-", "_")


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    """One option per declared parameter (:func:`~hfsoup.recipes.registry.recipe_params`: a parameter shared by
    several recipes, ``--seed``, is one option), grouped under the first recipe that declares it."""
    from hfsoup.recipes.registry import get_recipe, recipe_params

    groups: dict[str, Any] = {}
    for flag, (param, users) in recipe_params().items():
        owner = users[0]
        if owner not in groups:
            summary = textwrap.fill(get_recipe(owner).summary, 76)  # the raw formatter does not wrap
            groups[owner] = p.add_argument_group(f"recipe {owner}", summary.replace("%", "%%"))
        text = param.help.replace("%", "%%")
        if param.type is not bool and param.default is not None:
            text += f" (default: {param.default})"
        if len(users) > 1:
            text += f" [{', '.join(users)}]"
        # No default: a parameter given explicitly is told from one left at its declared default.
        kwargs: dict[str, Any] = {"dest": _param_dest(flag), "default": argparse.SUPPRESS, "help": text}
        if param.type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = param.type
            if param.choices is not None:
                kwargs["choices"] = list(param.choices)
            else:
                kwargs["metavar"] = {int: "N", float: "X"}.get(param.type, param.name.upper())
        groups[owner].add_argument(flag, **kwargs)


def recipe_parameters(args: argparse.Namespace, recipe: Recipe) -> dict[str, Any]:
    """The chosen recipe's parameters from the command line, validated once (:meth:`Recipe.validate`); a flag of
    another recipe given explicitly is an error naming the recipe(s) that use it."""
    from hfsoup.recipes.registry import recipe_params

    values = {}
    for flag, (param, users) in recipe_params().items():
        if not hasattr(args, _param_dest(flag)):
            continue  # not given: the declared default applies
        if recipe.name not in users:
            raise InvalidParameterError(
                f"{flag} is an option of recipe{'s' if len(users) > 1 else ''} {', '.join(users)}, not of "
                f"'{recipe.name}': drop it or pass --recipe {users[0]}", parameter=param.name)
        values[param.name] = getattr(args, _param_dest(flag))
    return recipe.validate(values)


def _recipe_help() -> str:
    from hfsoup.recipes.registry import get_recipe, list_recipes

    return "; ".join(f"{n}: {get_recipe(n).summary.rstrip('.')}" for n in list_recipes())


def _add_soup_parser(sub) -> None:
    from hfsoup.recipes.registry import get_recipe, list_recipes

    names = list_recipes()
    recipe_examples = [e for n in names for e in get_recipe(n).examples]
    p = sub.add_parser("soup", help="soup two or more models with a recipe",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Average two or more models with a recipe. " + _recipe_help().replace("%", "%%")
                                   + ". Selection recipes decide on the held-out split (never test). Without "
                                     "--eval-split, uniform only writes the soup (no data needed).",
                       epilog=examples("\n".join(dict.fromkeys([*SOUP_EXAMPLES, *recipe_examples]))))
    p.add_argument("models", nargs="+", metavar="MODEL", help="model references (Hub id[@rev], hf-hub:…, folder)")
    p.add_argument("--recipe", default="uniform" if "uniform" in names else names[0], choices=names,
                   metavar="RECIPE", help="soup recipe: " + ", ".join(names) + " (default: %(default)s)")
    _add_soup_output_and_eval_options(p)
    g = p.add_argument_group("held-out data (recipes that select or learn)")
    g.add_argument("--heldout-split", default=None, choices=list(HELDOUT_SPLITS),
                   help="held-out split used for every selection decision (default: val, the held-out 5%% of "
                        "train, seed 42; with --heldout-dataset: train, i.e. the whole given dataset). Never test.")
    g.add_argument("--heldout-dataset", default=None, metavar="PATH",
                   help="a separate held-out dataset (parquet file/folder or save_to_disk folder) instead of "
                        "--dataset's val split")
    g.add_argument("--no-cache", action="store_true",
                   help="do not read or write the logit cache ($HFSOUP_CACHE or $HF_HOME/hfsoup/logits)")
    g = p.add_argument_group("BatchNorm recalibration (any recipe that writes a model)")
    g.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="recompute BatchNorm statistics of the soup on N batches of train-main (default: off)")
    g.add_argument("--bn-batch-size", type=int, default=128, help="batch size for --recalibrate-bn (default: 128)")
    _add_recipe_options(p)
    p.set_defaults(func=cmd_soup)


# -- soup: the command -----------------------------------------------------------------------------------------
def load_heldout(args: argparse.Namespace) -> ImageData:
    """The held-out data of a ``hfsoup soup`` run: ``--heldout-dataset`` (its ``--heldout-split``, default train)
    or ``--dataset``'s ``--heldout-split`` (default val). Never the test split."""
    from hfsoup.data.images import load_image_data
    from hfsoup.recipes.selection import check_heldout

    if args.heldout_dataset:
        dataset, split, revision = args.heldout_dataset, args.heldout_split or "train", None
    else:
        dataset, split, revision = args.dataset, args.heldout_split or "val", args.dataset_revision
    data = load_image_data(dataset, split, revision=revision, image_column=args.image_column,
                           label_column=args.label_column, limit=args.limit, progress=progress_enabled(args))
    return check_heldout(data)


def _recalibrate(soup: Soup, args: argparse.Namespace, heldout: ImageData | None, seed: int) -> None:
    """``--recalibrate-bn N``: BatchNorm statistics recomputed on N batches of train-main (the held-out result,
    if any, re-scored; the figures before are kept in ``soup.parameters``)."""
    from hfsoup.data.images import load_image_data
    from hfsoup.recipes.bn import recalibrate_bn

    n, bs = args.recalibrate_bn, args.bn_batch_size
    data = load_image_data(args.dataset, "train-main", revision=args.dataset_revision,
                           image_column=args.image_column, label_column=args.label_column, limit=n * bs,
                           progress=progress_enabled(args))
    rescore = heldout if heldout is not None and heldout.split in soup.results else None
    recalibrate_bn(soup, data, n, bs, seed=seed, device=args.device, heldout=rescore,
                   eval_batch_size=args.batch_size, progress=progress_enabled(args))


def cmd_soup(args: argparse.Namespace) -> dict:
    """``hfsoup soup MODELS --recipe NAME``: plan (validate every option, check outputs), load, run the recipe,
    recalibrate BatchNorm, evaluate, write, report."""
    from hfsoup.recipes.bn import check_bn_options
    from hfsoup.recipes.registry import get_recipe

    recipe = get_recipe(args.recipe)
    recipe.check_models(len(args.models))
    params = recipe_parameters(args, recipe)
    if args.recalibrate_bn and not recipe.writes_model:
        raise InvalidParameterError(f"recipe '{recipe.name}' writes no model: --recalibrate-bn does not apply",
                                    parameter="recalibrate_bn")
    check_bn_options(args.recalibrate_bn, args.bn_batch_size)
    if wants_corrupted(args):
        check_corrupted_selection(args)
    outs = plan_outputs(args, None) if recipe.writes_model else [None]

    from hfsoup.core.ingredients import load_ingredients

    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token,
                            min_count=recipe.min_models)
    from hfsoup.hub.format import check_outputs_not_inputs

    check_outputs_not_inputs(outs, ings)  # --out must not be, hold or lie in an input (--force would delete it)
    run = SoupRun(data=load_data(args) if args.split else None)
    common: dict[str, Any] = {"integer_policy": args.integer_policy, "progress": progress_enabled(args)}
    heldout = None
    if recipe.needs_heldout:
        heldout = load_heldout(args)
        common.update(cache=not args.no_cache, batch_size=args.batch_size, device=args.device)
    fn = recipe.load()
    from hfsoup.eval.precision import use_precision

    # the recipes' own evaluations (greedy, RADIN, …) use --precision too
    with use_precision(getattr(args, "precision", "auto")):
        result = fn(ings, heldout, **params, **common) if recipe.needs_heldout else fn(ings, **params, **common)

    if recipe.writes_model:
        soup = result
        if args.recalibrate_bn:
            _recalibrate(soup, args, heldout, seed=int(params.get("seed") or 0))
        _share_heldout_results(run, heldout, soup.results.get(heldout.split) if heldout is not None else None)
        finish_soup(soup, args, run, outs[0])
    else:
        _report_only(recipe, run, result, ings, heldout, params, common)
    return report(args, recipe.name, ings, run)


def _share_heldout_results(run: SoupRun, heldout: ImageData | None, entry) -> None:
    """When the ``--eval-split`` data is the held-out data itself, reuse the ingredients' held-out results."""
    if run.data is not None and heldout is not None and entry is not None \
            and run.data.fingerprint == heldout.fingerprint:
        run.ingredient_results.update(entry.ingredient_results())


def _report_only(recipe: Recipe, run: SoupRun, result, ings: list, heldout: ImageData | None, params: dict,
                 common: dict) -> None:
    """A recipe that writes no model (the logit ensemble): its report on the held-out split and, with
    ``--eval-split``, on the evaluation split too (the ingredients' results are shared with the report)."""
    section = run.report.setdefault(recipe.name, {})
    split = heldout.split if heldout is not None else "report"
    section[split] = result
    if run.data is None:
        return
    if heldout is not None and run.data.fingerprint == heldout.fingerprint:
        evaluated = result
    else:
        evaluated = recipe.load()(ings, run.data, **params, **common) if recipe.needs_heldout else result
    section[run.data.split] = evaluated
    run.ingredient_results.update(getattr(evaluated, "ingredients", {}) or {})


# -- tables ----------------------------------------------------------------------------------------------------
def print_report(doc: dict, report_sections: Sequence[str] = ()) -> None:
    """The mix/soup report as tables: ingredients and soups on the evaluation split, the recipe's decisions,
    the report of a recipe that writes no model, and where each soup was written."""
    from rich.markup import escape
    from rich.table import Table

    out = console()
    # Short distinct names (folder name, or the shortest distinct path suffix) for every table of the report.
    names = unique_names(i["reference"] for i in doc["ingredients"])
    for name in report_sections:
        for split, r in (doc.get(name) or {}).items():
            r = r.to_dict() if hasattr(r, "to_dict") else r
            e, gain = r.get("ensemble") or {}, r.get("gain") or {}
            if e:
                out.print(f"logit {name} of {len(doc['ingredients'])} models on {split}: accuracy "
                          f"{pct(e['accuracy'])}, loss {e['loss']:.4f} (gain over best ingredient "
                          f"{100 * gain.get('accuracy_gain', float('nan')):+.2f} pts)")
    split = doc["data"]["split"] if doc.get("data") else None
    if split:
        t = Table(title=escape(f"{doc['recipe']} soup on {doc['data']['dataset']} [{split}, "
                               f"{doc['data']['num_samples']} images]"))
        for c in ("model", "weights", "accuracy", "loss", "acc gain", "loss gain"):
            t.add_column(c, justify="left" if c == "model" else "right")
        bad: list[str] = []
        for ing in doc["ingredients"]:
            r = ing["results"].get(split)
            if r:
                t.add_row(escape(names[str(ing["reference"])]), "", pct(r["accuracy"]), loss_cell(r["loss"]), "", "")
                if not_finite(r["loss"]):
                    bad.append(names[str(ing["reference"])])
        for s in doc["soups"]:
            r = s["results"][split]
            label = "soup" + (f" α={s['alpha']:g}" if "alpha" in s else "")
            t.add_row(label, ",".join(f"{w:.3g}" for w in s["weights"]), pct(r["accuracy"]), loss_cell(r["loss"]),
                      f"{100 * r['gain']['accuracy_gain']:+.2f}", loss_cell(r["gain"]["loss_gain"], "+.4f"))
            if not_finite(r["loss"]):
                bad.append(label)
        out.print(t)
        if bad:  # the loss of a model whose logits overflow: "not finite" in the table, null in --json
            out.print(escape(non_finite_note(bad)))
    for s in doc["soups"]:
        print_decision_log(s.get("decision_log"), names, out)
    for s in doc["soups"]:
        where = f"written to {s['out']}" if s["out"] else "not saved (--no-save)"
        label = f"α={s['alpha']:g}" if "alpha" in s else s["recipe"]
        out.print(escape(f"{label}: {where}"))


def print_decision_log(log: Any, names: dict, out=None) -> None:
    """Why each ingredient was kept or dropped (greedy), or which candidates were evaluated (RADIN)."""
    from rich.markup import escape
    from rich.table import Table

    log = log.to_dict() if hasattr(log, "to_dict") else log
    if not isinstance(log, dict):
        return
    out = out or console()
    split = (log.get("heldout") or {}).get("split", "val")
    if log.get("recipe") == "greedy" and log.get("steps"):
        t = Table(title=escape(f"greedy decisions on the held-out split ({split}); rule: {log.get('rule', '')}"))
        for c in ("step", "candidate", "held-out acc", "best before", "decision"):
            t.add_column(c, justify="left" if c in ("candidate", "decision") else "right")
        for st in log["steps"]:
            before = st.get("best_before")
            t.add_row(str(st["step"]), escape(names.get(st["reference"], st["reference"])), pct(st["accuracy"]),
                      pct(before) if before is not None else "", "kept" if st["accepted"] else "dropped")
        out.print(t)
    elif log.get("recipe") == "radin" and log.get("candidates"):
        evaluated = [c for c in log["candidates"] if c.get("evaluated")]
        refs = [i["reference"] for i in log.get("ingredients", [])]
        lam, by_loss = log["prior_lambda"], log.get("proxy", "loss") == "loss"
        # The rank is by this score (the candidate's "objective"), so the table shows it.
        score = (f"proxy loss − {lam:g}·size, lower is better" if by_loss
                 else f"proxy accuracy + {lam:g}·size, higher is better")
        t = Table(title=f"RADIN: {log['num_candidates']} candidates ranked by score = {score}; "
                        f"{len(evaluated)} evaluated on {split}")
        proxy_col = "proxy loss" if by_loss else "proxy acc"
        for c in ("rank", "members", "score", proxy_col, "held-out acc", ""):
            t.add_column(c, justify="left" if c in ("members", "") else "right")
        winner = (log.get("winner") or {}).get("id")
        ranked = sorted(evaluated, key=lambda c: c["rank"])
        # The top rows and the winner: a budget of 100+ would print 100+ lines.
        shown, hidden = top_rows(ranked, keep=[i for i, c in enumerate(ranked) if c["id"] == winner])
        for c in shown:
            members = ", ".join(names.get(refs[i], refs[i]) if i < len(refs) else str(i) for i in c["members"])
            proxy = f"{c['proxy_loss']:.4f}" if by_loss else pct(c["proxy_accuracy"])
            t.add_row(str(c["rank"]), escape(members), f"{c['objective']:.4f}", proxy, pct(c["accuracy"]),
                      "winner" if c["id"] == winner else "")
        out.print(t)
        if hidden:
            out.print(left_out_note(hidden, "evaluated candidates"))
