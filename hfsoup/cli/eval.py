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
                                          "listed with all its ingredients also gets its soup gain. Every model "
                                          "is scored in one precision (--precision; auto is checked once, on "
                                          "a listed soup, else on the first model), reported with why "
                                          "(data.precision in --json).",
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
    from hfsoup.eval.metrics import choose_eval_precision, evaluate_model
    from hfsoup.eval.soup import soup_parents

    ings = load_ingredients(args.models, allow_pickle=args.allow_pickle, token=args.token, check=False)
    if wants_corrupted(args):  # --dataset cifar100-c=SRC or --eval-corrupted
        return cmd_eval_corrupted(args, ings)
    data = load_data(args)
    by_sha = {ing.sha256: ing.reference for ing in ings}
    parents = {ing.reference: soup_parents(ing, by_sha) for ing in ings}
    # One precision for the whole command, resolved (and, for auto on native bf16, checked) once: a soup and its
    # parents are then scored in the same numerics, as `mix`/`soup` score them (checked on the soup there too).
    opts = eval_options(args)
    checked = next((ing for ing in ings if parents[ing.reference]), ings[0])
    models = {checked.reference: checked.create_model()}
    choice = choose_eval_precision(opts.pop("precision"), models[checked.reference], data, device=args.device,
                                   batch_size=args.batch_size)
    results = {}
    for ing in ings:
        model = models.pop(ing.reference) if ing.reference in models else ing.create_model()
        results[ing.reference] = evaluate_model(model, data, desc=f"eval {ing.name}"[:40], precision=choice,
                                                **opts)
    rows = []
    for ing in ings:
        row = dict(ing.describe(), **results[ing.reference].to_dict())
        if parents[ing.reference]:
            row["gain"] = soup_gain(results[ing.reference], [results[p] for p in parents[ing.reference]])
            row["gain_against"] = parents[ing.reference]
        rows.append(row)
    # data.precision: the same record (PrecisionChoice.to_dict) as soup.json's results[split].data.precision
    doc = {"data": dict(data.describe(), precision=choice.to_dict()), "models": rows}
    if args.json:
        print_json(doc)
    else:
        print_eval_table(doc)
    return doc


def print_eval_table(doc: dict) -> None:
    """One row per model: accuracy, loss, and the soup gain of soups; then the evaluation precision."""
    d = doc["data"]
    rows = []
    for r in doc["models"]:
        g = r.get("gain")
        rows.append([r.get("name", r["reference"]), pct(r["accuracy"]), loss_cell(r["loss"]),
                     f"{100 * g['accuracy_gain']:+.2f}" if g else "", loss_cell(g["loss_gain"], "+.4f") if g else ""])
    table(f"{d['dataset']} [{d['split']}, {d['num_samples']} images]",
          ["model", "accuracy", "loss", "acc gain", "loss gain"], rows)
    if d.get("precision"):
        print(precision_line(d["precision"]))
    note = non_finite_note([r.get("name", r["reference"]) for r in doc["models"] if not_finite(r["loss"])])
    if note:
        print(note)


def precision_line(p: dict) -> str:
    """The evaluation precision as one line, in the model card's words (``model_cards/soup.md``):
    ``precision: fp32 (auto: no native bf16 on this cpu)``, with the bf16 check's agreement where one ran."""
    check = p.get("check")
    extra = (f"; bf16 vs fp32 on {check['num_samples']} images: {100 * check['agreement']:.2f} % same top-1"
             if check else "")
    return f"precision: {p['precision']} ({p['requested']}: {p['reason']}{extra})"
