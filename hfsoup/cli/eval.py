"""``hfsoup eval``: accuracy and loss of models on a split (and on CIFAR-100-C); soups get their gain."""

from __future__ import annotations

import argparse

from hfsoup.cli.corrupted import add_corrupted_options, cmd_eval_corrupted, wants_corrupted
from hfsoup.cli.options import (SPLITS, add_data_options, add_deprecated_alias, add_json_option, add_model_options,
                                eval_options, examples, load_data)
from hfsoup.cli.output import loss_cell, non_finite_note, not_finite, pct, print_json, table


def register(subparsers) -> None:
    """Add ``hfsoup eval``."""
    p = subparsers.add_parser("eval", help="accuracy and loss of models on a dataset split",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Top-1 accuracy and mean cross-entropy of each model. A soup folder "
                                          "listed with all its ingredients also gets its soup gain.",
                              epilog=examples("""
                                  hfsoup eval ./soup-ab ./a ./b --dataset uoft-cs/cifar100 --eval-split test
                                  hfsoup eval org/a@main --dataset ./cifar100-parquet --eval-split val --json"""))
    p.add_argument("models", nargs="+", metavar="MODEL")
    add_model_options(p)
    # The same spellings as mix/soup: --eval-split (soup also has --heldout-split, so a bare --split would be
    # ambiguous there) and --dataset-revision (--revision is the branch written to, in push and data cifar100c).
    add_data_options(p, split_flag="--eval-split", default_split="test")
    add_corrupted_options(p)
    add_deprecated_alias(p, "--split", "--eval-split", dest="split", choices=SPLITS)
    add_deprecated_alias(p, "--revision", "--dataset-revision", dest="dataset_revision")
    add_json_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> dict:
    """Evaluate every model; a soup listed with all its ingredients gets ``gain`` and ``gain_against``."""
    from hfsoup.core.ingredients import load_ingredients
    from hfsoup.core.results import soup_gain
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.eval.soup import soup_parents

    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, check=False)
    if wants_corrupted(args):  # --dataset cifar100-c=SRC or --eval-corrupted
        return cmd_eval_corrupted(args, ings)
    data = load_data(args)
    results = {}
    for ing in ings:
        results[ing.reference] = evaluate_model(ing.create_model(), data, desc=f"eval {ing.name}"[:40],
                                                **eval_options(args))
    rows = []
    by_sha = {ing.sha256: ing.reference for ing in ings}
    for ing in ings:
        row = dict(ing.describe(), **results[ing.reference].to_dict())
        parents = soup_parents(ing, by_sha)
        if parents:
            row["gain"] = soup_gain(results[ing.reference], [results[p] for p in parents])
            row["gain_against"] = parents
        rows.append(row)
    doc = {"data": data.describe(), "models": rows}
    if args.json:
        print_json(doc)
    else:
        print_eval_table(doc)
    return doc


def print_eval_table(doc: dict) -> None:
    """One row per model: accuracy, loss, and the soup gain of soups."""
    d = doc["data"]
    rows = []
    for r in doc["models"]:
        g = r.get("gain")
        rows.append([r.get("name", r["reference"]), pct(r["accuracy"]), loss_cell(r["loss"]),
                     f"{100 * g['accuracy_gain']:+.2f}" if g else "", loss_cell(g["loss_gain"], "+.4f") if g else ""])
    table(f"{d['dataset']} [{d['split']}, {d['num_samples']} images]",
          ["model", "accuracy", "loss", "acc gain", "loss gain"], rows)
    note = non_finite_note([r.get("name", r["reference"]) for r in doc["models"] if not_finite(r["loss"])])
    if note:
        print(note)
