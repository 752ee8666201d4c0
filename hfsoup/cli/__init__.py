"""The ``hfsoup`` command line: a thin layer over the Python API.

User errors (:class:`~hfsoup.errors.HfSoupError`) print one line on stderr and exit 2; ``--json`` prints one JSON
document on stdout; tables otherwise. Other commands (greedy/RADIN recipes, zoo, demo, data) register themselves
through :data:`COMMAND_MODULES` and :data:`SOUP_RECIPES`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable

from hfsoup.errors import HfSoupError

#: Modules that add sub-commands: each has ``register(subparsers)``.
COMMAND_MODULES: list[str] = ["hfsoup.cli.data", "hfsoup.cli.zoo", "hfsoup.study.demo"]
#: ``hfsoup soup --recipe NAME``: NAME -> "module:function"; function(ingredients, args, ctx) -> Soup | None.
SOUP_RECIPES: dict[str, str] = {"uniform": "hfsoup.recipes.bn:recipe_uniform", "greedy": "hfsoup.recipes.greedy:recipe_greedy",
                                 "radin": "hfsoup.recipes.radin:recipe_radin", "ensemble": "hfsoup.recipes.ensemble:recipe_ensemble",
                                 "learned": "hfsoup.recipes.learned:recipe_learned"}
#: Recipes that only report (write no model): no --out needed.
SOUP_REPORT_ONLY: set[str] = {"ensemble"}
#: Modules with ``add_soup_options(parser)``: recipe-specific options of ``hfsoup soup``.
SOUP_OPTION_MODULES: list[str] = ["hfsoup.recipes.greedy", "hfsoup.recipes.radin", "hfsoup.recipes.bn", "hfsoup.recipes.learned"]


# -- shared options ------------------------------------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--allow-pickle", action="store_true",
                   help="accept pytorch_model.bin when no safetensors exist (loaded with weights_only=True)")
    g.add_argument("--token", default=None, help=argparse.SUPPRESS)  # prefer HF_TOKEN / hf auth login


def _add_data_options(p: argparse.ArgumentParser, *, split_flag: str, default_split: str | None) -> None:
    g = p.add_argument_group("data")
    g.add_argument(split_flag, dest="split", default=default_split, choices=["test", "val", "train", "train-main"],
                   help="split to evaluate on: test, val (the held-out 5%% of train, seed 42), train, train-main"
                        + ("" if default_split else " (default: no evaluation)"))
    g.add_argument("--dataset", default="uoft-cs/cifar100",
                   help="Hub dataset id, local parquet folder/file or save_to_disk folder (default: %(default)s)")
    g.add_argument("--dataset-revision", default=None, help="dataset revision (branch, tag or commit)")
    g.add_argument("--image-column", default=None, help="image column (default: img or image)")
    g.add_argument("--label-column", default=None, help="label column (default: fine_label or label)")
    g.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only (quick runs)")
    g.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default: %(default)s)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    importlib.import_module("hfsoup.eval.corrupted").add_corrupted_options(p)  # --eval-corrupted, --corruptions, --severity (CIFAR-100-C)


def _add_output_options(p: argparse.ArgumentParser, default_out: str | None = None) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=default_out,
                   help="output folder (model.safetensors, config.json, README.md, soup.json)"
                        + (" (default: %(default)s)" if default_out else ""))
    g.add_argument("--no-save", action="store_true", help="do not write the soup (evaluate only)")
    g.add_argument("--force", action="store_true", help="replace an existing output folder")
    g.add_argument("--integer-policy", default="mean", choices=["mean", "max", "first"],
                   help="how integer buffers (num_batches_tracked) are combined (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _progress(args) -> bool:
    return not getattr(args, "quiet", False)


def _load_data(args):
    from hfsoup.data.images import load_image_data

    return load_image_data(args.dataset, args.split, revision=args.dataset_revision, image_column=args.image_column,
                           label_column=args.label_column, limit=args.limit, progress=_progress(args))


def _eval_kwargs(args) -> dict:
    return {"batch_size": args.batch_size, "device": args.device, "progress": _progress(args)}


# -- mix / soup ----------------------------------------------------------------------------------------------
def cmd_mix(args) -> dict:
    from hfsoup.core.ingredients import load_ingredients
    from hfsoup.recipes.mix import alpha_folder_name, mix, parse_alphas

    alphas = parse_alphas(args.alpha)
    if len(args.models) != 2:
        raise HfSoupError(f"mix takes exactly two models (got {len(args.models)}): use `hfsoup soup` for more")
    # Plan: resolve and check everything before any averaging or writing.
    outs = _plan_outputs(args, [alpha_folder_name(a) for a in alphas] if len(alphas) > 1 else None)
    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, min_count=2)
    data = _load_data(args) if args.split else None
    ctx = {"ingredient_results": {}}
    soups = []
    for alpha, out in zip(alphas, outs):
        soup = mix(ings[0], ings[1], alpha, integer_policy=args.integer_policy)
        soups.append(_finish_soup(soup, args, data, out, ctx, extra={"alpha": alpha}))
    return _report(args, "mix", ings, soups, data, ctx)


def cmd_soup(args) -> dict:
    from hfsoup.core.ingredients import load_ingredients

    recipe = _resolve_recipe(args.recipe)
    outs = [None] if args.recipe in SOUP_REPORT_ONLY else _plan_outputs(args, None)
    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, min_count=2)
    data = _load_data(args) if args.split else None
    ctx = {"ingredient_results": {}, "eval_data": data}
    soup = recipe(ings, args, ctx)
    soups = [] if soup is None else [_finish_soup(soup, args, data, outs[0], ctx)]
    return _report(args, args.recipe, ings, soups, data, ctx)


def _recipe_uniform(ingredients, args, ctx):
    from hfsoup.recipes.mix import uniform_soup

    return uniform_soup(ingredients, integer_policy=args.integer_policy, progress=_progress(args))


def _resolve_recipe(name: str) -> Callable:
    if name not in SOUP_RECIPES:
        raise HfSoupError(f"unknown recipe '{name}': choose one of {', '.join(SOUP_RECIPES)}")
    module, _, fn = SOUP_RECIPES[name].partition(":")
    return getattr(importlib.import_module(module), fn)


def _plan_outputs(args, subfolders: list[str] | None) -> list[Path | None]:
    from hfsoup.hub.format import check_output

    if args.no_save:
        return [None] * (len(subfolders) if subfolders else 1)
    if not args.out:
        raise HfSoupError("no output folder: pass --out DIR (or --no-save to evaluate only)")
    root = Path(args.out)
    if subfolders is None:
        return [check_output(root, args.force)]
    return [check_output(root / s, args.force) for s in subfolders]


def _finish_soup(soup, args, data, out, ctx, extra=None) -> dict:
    if data is not None:
        from hfsoup.eval.soup import evaluate_soup

        entry = evaluate_soup(soup, data, ingredient_results=ctx["ingredient_results"], **_eval_kwargs(args))
        ctx["ingredient_results"].update(entry.ingredient_results())
    importlib.import_module("hfsoup.eval.corrupted").evaluate_soup_cli(soup, args, data, ctx)  # with --eval-corrupted: CIFAR-100-C results
    if out is not None:
        from hfsoup.hub.format import save_soup

        save_soup(soup, out, force=args.force)
    row = dict(extra or {})
    row.update(recipe=soup.recipe, weights=soup.weights, out=str(out) if out else None,
               parameters=soup.parameters)
    if out is not None:
        row["sha256"] = json.loads((Path(out) / "soup.json").read_text())["sha256"]
    row["results"] = {split: dict(r.soup.to_dict(), gain=r.gain) for split, r in soup.results.items()}
    if soup.log is not None:
        row["decision_log"] = soup.log
    return row


def _report(args, recipe, ings, soups, data, ctx) -> dict:
    doc = {
        "recipe": recipe,
        "ingredients": [dict(i.describe(), results={data.split: ctx["ingredient_results"][i.reference].to_dict()}
                             if data is not None and i.reference in ctx["ingredient_results"] else {})
                        for i in ings],
        "soups": soups,
        "data": data.describe() if data is not None else None,
    }
    doc.update(ctx.get("report_extra", {}))
    if args.json:
        _print_json(doc)
    else:
        _print_soup_tables(doc)
        importlib.import_module("hfsoup.eval.corrupted").print_soup_tables(doc)
    return doc


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args) -> dict:
    from hfsoup.eval.metrics import evaluate_model, soup_gain
    from hfsoup.core.ingredients import load_ingredients

    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, check=False)
    if importlib.import_module("hfsoup.eval.corrupted").wants_corrupted(args):  # --dataset cifar100-c=SRC or --eval-corrupted
        return importlib.import_module("hfsoup.eval.corrupted").cmd_eval_corrupted(args, ings)
    data = _load_data(args)
    results = {}
    for ing in ings:
        results[ing.reference] = evaluate_model(ing.create_model(), data, desc=f"eval {ing.name}"[:40],
                                                **_eval_kwargs(args))
    rows = []
    by_sha = {ing.sha256: ing.reference for ing in ings}
    for ing in ings:
        row = dict(ing.describe(), **results[ing.reference].to_dict())
        parents = _soup_parents(ing, by_sha)
        if parents:
            row["gain"] = soup_gain(results[ing.reference], [results[p] for p in parents])
            row["gain_against"] = parents
        rows.append(row)
    doc = {"data": data.describe(), "models": rows}
    if args.json:
        _print_json(doc)
    else:
        _print_eval_table(doc)
    return doc


def _soup_parents(ing, by_sha: dict) -> list[str]:
    """If ``ing`` is a soup folder whose ingredients are all among the evaluated models, their references."""
    manifest = ing.resolved.folder / "soup.json"
    if not manifest.is_file():
        return []
    try:
        entries = [e for e in json.loads(manifest.read_text()).get("ingredients", []) if e.get("weight", 1) > 0]
    except ValueError:
        return []
    refs = [by_sha.get(e.get("sha256")) for e in entries]
    return refs if refs and all(refs) else []


# -- push ----------------------------------------------------------------------------------------------------
def cmd_push(args) -> dict:
    from hfsoup.hub.upload import push

    info = push(args.folder, args.repo_id, private=args.private or None, create_pr=args.create_pr,
                revision=args.revision, token=args.token)
    if args.json:
        _print_json(info)
    else:
        print(f"pushed {args.folder} to {info['repo_id']} @ {info['commit']}")
        print(info["pr_url"] or info["url"])
    return info


# -- printing ------------------------------------------------------------------------------------------------
def _print_json(doc) -> None:
    from hfsoup.hub.format import _json_default

    sys.stdout.write(json.dumps(doc, indent=2, default=_json_default) + "\n")


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _pct(x):
    return f"{100 * x:.2f}%"


def _print_soup_tables(doc) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    split = doc["data"]["split"] if doc.get("data") else None
    if split:
        t = Table(title=escape(f"{doc['recipe']} soup on {doc['data']['dataset']} [{split}, "
                               f"{doc['data']['num_samples']} images]"))
        for c in ("model", "weights", "accuracy", "loss", "acc gain", "loss gain"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for ing in doc["ingredients"]:
            r = ing["results"].get(split)
            if r:
                t.add_row(ing["name"], "", _pct(r["accuracy"]), f"{r['loss']:.4f}", "", "")
        for s in doc["soups"]:
            r = s["results"][split]
            label = "soup" + (f" α={s['alpha']:g}" if "alpha" in s else "")
            t.add_row(label, ",".join(f"{w:.3g}" for w in s["weights"]), _pct(r["accuracy"]), f"{r['loss']:.4f}",
                      f"{100 * r['gain']['accuracy_gain']:+.2f}", f"{r['gain']['loss_gain']:+.4f}")
        console.print(t)
    names = {i["reference"]: i["name"] for i in doc["ingredients"]}
    for s in doc["soups"]:
        _print_decision_log(console, s.get("decision_log"), names)
    for s in doc["soups"]:
        where = f"written to {s['out']}" if s["out"] else "not saved (--no-save)"
        label = f"α={s['alpha']:g}" if "alpha" in s else s["recipe"]
        console.print(f"{label}: {where}")


def _print_decision_log(console, log, names: dict) -> None:
    """Why each ingredient was kept or dropped (greedy), or which candidates were evaluated (RADIN)."""
    from rich.table import Table

    if not isinstance(log, dict):
        return
    split = (log.get("heldout") or {}).get("split", "val")
    if log.get("recipe") == "greedy" and log.get("steps"):
        t = Table(title=f"greedy decisions on the held-out split ({split}); rule: {log.get('rule', '')}")
        for c in ("step", "candidate", "held-out acc", "best before", "decision"):
            t.add_column(c, justify="left" if c in ("candidate", "decision") else "right")
        for st in log["steps"]:
            before = st.get("best_before")
            t.add_row(str(st["step"]), names.get(st["reference"], st["reference"]), _pct(st["accuracy"]),
                      _pct(before) if before is not None else "", "kept" if st["accepted"] else "dropped")
        console.print(t)
    elif log.get("recipe") == "radin" and log.get("candidates"):
        evaluated = [c for c in log["candidates"] if c.get("evaluated")]
        refs = [i["reference"] for i in log.get("ingredients", [])]
        t = Table(title=f"RADIN: {log['num_candidates']} candidates scored by the {log['proxy']} proxy "
                        f"(λ = {log['prior_lambda']:g}), {len(evaluated)} evaluated on {split}")
        for c in ("rank", "members", "proxy loss", "held-out acc", ""):
            t.add_column(c, justify="left" if c in ("members", "") else "right")
        winner = (log.get("winner") or {}).get("id")
        for c in sorted(evaluated, key=lambda c: c["rank"]):
            members = ", ".join(names.get(refs[i], refs[i]) if i < len(refs) else str(i) for i in c["members"])
            t.add_row(str(c["rank"]), members, f"{c['proxy_loss']:.4f}", _pct(c["accuracy"]),
                      "winner" if c["id"] == winner else "")
        console.print(t)


def _print_eval_table(doc) -> None:
    from rich.markup import escape
    from rich.table import Table

    d = doc["data"]
    t = Table(title=escape(f"{d['dataset']} [{d['split']}, {d['num_samples']} images]"))
    for c in ("model", "accuracy", "loss", "acc gain", "loss gain"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in doc["models"]:
        g = r.get("gain")
        t.add_row(r.get("name", r["reference"]), _pct(r["accuracy"]), f"{r['loss']:.4f}",
                  f"{100 * g['accuracy_gain']:+.2f}" if g else "", f"{g['loss_gain']:+.4f}" if g else "")
    _console().print(t)


# -- parser --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from hfsoup import __version__

    parser = argparse.ArgumentParser(
        prog="hfsoup", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Model soups for timm models on the Hugging Face Hub: average the weights of fine-tuned "
                    "models (Hub ids, id@revision, local folders) into one model, evaluate and publish it.",
        epilog=_examples("""
            hfsoup mix org/a org/b --alpha 0.5 --out ./soup-ab
            hfsoup mix ./a ./b --alpha 0,0.25,0.5,0.75,1 --out ./curve
            hfsoup soup ./m1 ./m2 ./m3 --recipe uniform --out ./soup-u
            hfsoup eval ./soup-ab ./a ./b --dataset uoft-cs/cifar100 --split test
            hfsoup push ./soup-ab org/soup-ab --private"""))
    parser.add_argument("--version", action="version", version=f"hfsoup {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("mix", help="interpolate two models: (1-α)·A + α·B", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="θ = (1 − α)·θ_A + α·θ_B, tensor by tensor. α is the weight of the second model: "
                                   "α = 0 gives A exactly, α = 1 gives B. A comma list of α writes one soup per value "
                                   "(OUT/alpha-0.250, …).",
                       epilog=_examples("""
                           hfsoup mix org/a org/b --alpha 0.5 --out ./soup-ab
                           hfsoup mix org/a@3f2c1e0 ./b --alpha 0,0.25,0.5,0.75,1 --out ./curve
                           hfsoup mix ./a ./b --alpha 0.5 --out ./soup-ab --eval-split test --dataset ./cifar100 --json"""))
    p.add_argument("models", nargs="+", metavar="MODEL", help="two model references (Hub id[@rev], hf-hub:…, folder)")
    p.add_argument("--alpha", default="0.5", help="weight of the second model, or a comma list (default: 0.5)")
    _add_model_options(p)
    _add_output_options(p)
    _add_data_options(p, split_flag="--eval-split", default_split=None)
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser("soup", help="soup two or more models with a recipe",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Average two or more models with a recipe. uniform: equal weights; greedy: "
                                   "Wortsman et al.'s greedy soup on the held-out split; radin: RADIN on a budget "
                                   "of real evaluations; ensemble: averaged logits, reported only; learned: mixing "
                                   "weights trained on the held-out split (Wortsman et al. App. I). Without "
                                   "--eval-split, uniform only writes the soup (no data needed).",
                       epilog=_examples("""
                           hfsoup soup ./m1 ./m2 ./m3 --recipe uniform --out ./soup-u
                           hfsoup soup org/m1 org/m2 --recipe uniform --out ./soup --eval-split test --json
                           hfsoup soup ./zoo/* --recipe greedy --out ./greedy
                           hfsoup soup ./zoo/* --recipe greedy --accept-ties --eval-split test --out ./greedy-ties
                           hfsoup soup ./zoo/* --recipe radin --budget 25 --candidates 200 --prior-lambda 1 --out ./radin
                           hfsoup soup ./zoo/* --recipe ensemble --eval-split test --json
                           hfsoup soup ./zoo/* --recipe learned --learned-epochs 3 --per-layer --out ./learned"""))
    p.add_argument("models", nargs="+", metavar="MODEL", help="model references (Hub id[@rev], hf-hub:…, folder)")
    p.add_argument("--recipe", default="uniform", help="soup recipe: " + ", ".join(SOUP_RECIPES))
    _add_model_options(p)
    _add_output_options(p)
    _add_data_options(p, split_flag="--eval-split", default_split=None)
    for module in SOUP_OPTION_MODULES:
        importlib.import_module(module).add_soup_options(p)
    p.set_defaults(func=cmd_soup)

    p = sub.add_parser("eval", help="accuracy and loss of models on a dataset split",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Top-1 accuracy and mean cross-entropy of each model. A soup folder listed with "
                                   "all its ingredients also gets its soup gain.",
                       epilog=_examples("""
                           hfsoup eval ./soup-ab ./a ./b --dataset uoft-cs/cifar100 --split test
                           hfsoup eval org/a@main --dataset ./cifar100-parquet --split val --limit 500 --json"""))
    p.add_argument("models", nargs="+", metavar="MODEL")
    _add_model_options(p)
    _add_data_options(p, split_flag="--split", default_split="test")
    p.add_argument("--revision", dest="dataset_revision", default=None, help="alias of --dataset-revision")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of a table")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("push", help="upload a model folder to the Hub in one commit",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Upload model.safetensors, config.json, README.md and soup.json as one commit. "
                                   "The token comes from HF_TOKEN or `hf auth login` and is never printed.",
                       epilog=_examples("""
                           hfsoup push ./soup-ab org/soup-ab --private
                           hfsoup push ./soup-ab org/soup-ab --create-pr"""))
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_push)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    args.quiet = args.quiet or bool(os.environ.get("HFSOUP_NO_PROGRESS"))
    if not os.environ.get("HFSOUP_DEBUG"):
        # The HF clients log each network retry as a warning; the CLI ends with its own one-line error instead.
        import logging

        for name in ("huggingface_hub", "datasets"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        args.func(args)
    except HfSoupError as e:
        print(f"hfsoup: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hfsoup: interrupted (outputs are written atomically: nothing partial was left)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: one line, traceback on request
        if os.environ.get("HFSOUP_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"hfsoup: internal error: {type(e).__name__}: {first} (set HFSOUP_DEBUG=1 for the traceback, and "
              f"please report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
