"""CIFAR-100-C on the command line: the options of ``eval``/``mix``/``soup``, ``hfsoup eval`` on corrupted data,
the corrupted part of a mix/soup run, and their tables. The library part is :mod:`hfsoup.eval.corrupted`.

Torch-free at import (the options are declared by ``--help``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfsoup.cli.options import eval_options, load_data, progress_enabled
from hfsoup.cli.output import console, print_json, unique_names
from hfsoup.errors import HfSoupError

if TYPE_CHECKING:
    from hfsoup.core.soup import Soup
    from hfsoup.data.images import ImageData
    from hfsoup.eval.corrupted import CorruptedResults

#: ``--dataset cifar100-c=SRC`` selects corrupted data (the prefix of the result keys, too).
PREFIX = "cifar100-c"


def add_corrupted_options(p: argparse.ArgumentParser) -> None:
    """Options of eval/mix/soup: ``--eval-corrupted``, ``--corrupted-dataset``, ``--corruptions``, ``--severity``."""
    from hfsoup.data.cifar100c import DEFAULT_CORRUPTED_DATASET

    g = p.add_argument_group("corrupted data (CIFAR-100-C)")
    g.add_argument("--eval-corrupted", action="store_true",
                   help="also evaluate on CIFAR-100-C (mean over corruptions, per severity) with soup gain")
    g.add_argument("--corrupted-dataset", default=None,
                   help="converted CIFAR-100-C: Hub dataset id or local folder (`hfsoup data cifar100c`); default: "
                        f"the value of --dataset cifar100-c=…, else {DEFAULT_CORRUPTED_DATASET}")
    g.add_argument("--corrupted-revision", default=None, help="revision of the corrupted dataset")
    g.add_argument("--corruptions", default="all",
                   help="all (19), common (15), extra (4) or corruption names, comma separated (default: all)")
    g.add_argument("--severity", default="3", help="severity 1-5: a level, a range (1-5) or a list (default: 3)")


def corrupted_source(args: argparse.Namespace) -> str | None:
    """The corrupted dataset selected by ``--dataset cifar100-c=SRC`` or ``--eval-corrupted``, else None."""
    ds = getattr(args, "dataset", None) or ""
    from_dataset = ds.split("=", 1)[1] if ds.lower().startswith(PREFIX + "=") else None
    if from_dataset is not None and not from_dataset:
        raise HfSoupError("--dataset cifar100-c= needs a dataset: cifar100-c=<hub id or converted folder>")
    if from_dataset is None and not getattr(args, "eval_corrupted", False):
        return None
    if getattr(args, "corrupted_dataset", None) or from_dataset:
        return args.corrupted_dataset or from_dataset
    from hfsoup.data.cifar100c import DEFAULT_CORRUPTED_DATASET

    return DEFAULT_CORRUPTED_DATASET


def wants_corrupted(args: argparse.Namespace) -> bool:
    """Whether the command evaluates on CIFAR-100-C."""
    return corrupted_source(args) is not None


def check_corrupted_selection(args: argparse.Namespace) -> None:
    """Parse (and reject) ``--corruptions``/``--severity`` before any model is built."""
    from hfsoup.data.cifar100c import parse_corruptions, parse_severities

    parse_corruptions(args.corruptions)
    parse_severities(args.severity)


def _evaluate(args: argparse.Namespace, models: dict, results: CorruptedResults | None = None) -> CorruptedResults:
    from hfsoup.eval.corrupted import evaluate_corrupted

    check_corrupted_selection(args)
    return evaluate_corrupted(models, corrupted_source(args), args.corruptions, args.severity,
                              revision=args.corrupted_revision, limit=args.limit, batch_size=max(args.batch_size, 1),
                              device=args.device, progress=progress_enabled(args), results=results,
                              precision=getattr(args, "precision", "auto"))


# -- mix / soup ------------------------------------------------------------------------------------------------
@dataclass
class CorruptedRun:
    """The corrupted evaluation of one mix/soup run: the results its soups share (each ingredient is evaluated
    once per run) and the ``corrupted`` section of the report."""

    results: CorruptedResults
    ingredients: dict[str, Any] = field(default_factory=dict)
    soups: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"data": self.results.describe(), "ingredients": self.ingredients, "soups": self.soups}


def evaluate_soup_cli(soup: Soup, args: argparse.Namespace, data: ImageData | None,
                      run: CorruptedRun | None) -> CorruptedRun | None:
    """``mix``/``soup`` with ``--eval-corrupted``: evaluate the soup (and, once per run, its ingredients) on
    CIFAR-100-C and record the results in ``soup.results``. Returns the run's corrupted section (``run``
    extended, or a new one); None without ``--eval-corrupted``."""
    if not wants_corrupted(args):
        return run
    from hfsoup.eval.corrupted import record_in_soup

    previous = None
    if run is not None:  # ingredients of an earlier soup of this run are reused; the new soup is evaluated
        previous = run.results
        previous.cells.pop("soup", None)
    models: dict[str, Any] = {i.reference: i for i in soup.ingredients}
    models["soup"] = soup
    res = _evaluate(args, models, previous)
    run = run or CorruptedRun(res)
    clean = None
    if data is not None and data.split in soup.results:
        clean = soup.results[data.split].models
    entries = record_in_soup(soup, res, clean=clean)
    run.ingredients = {r: {"mean": {f"s{s}": res.mean(r, s).to_dict() for s in res.severities},
                           "per_corruption": res.per_corruption(r)}
                       for r in models if r != "soup"}
    run.soups.append({"recipe": soup.recipe, "weights": soup.weights,
                      "mean": {f"s{s}": res.mean("soup", s).to_dict() for s in res.severities},
                      "per_corruption": res.per_corruption("soup"),
                      "gain": {k.rsplit("/", 1)[1]: e.gain for k, e in entries.items()}})
    return run


# -- eval ------------------------------------------------------------------------------------------------------
def cmd_eval_corrupted(args: argparse.Namespace, ings: list) -> dict:
    """``hfsoup eval`` on CIFAR-100-C (``--dataset cifar100-c=SRC``, or ``--eval-corrupted`` beside a clean split):
    per model the corrupted mean per severity and per corruption; soups listed with all their parents get gains."""
    from hfsoup.core.results import soup_gain
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.eval.soup import soup_parents

    ds = args.dataset or ""
    check_corrupted_selection(args)
    clean_data = None if ds.lower().startswith(PREFIX + "=") else load_data(args)
    clean = {}
    if clean_data is not None:
        for ing in ings:
            clean[ing.reference] = evaluate_model(ing.create_model(), clean_data, desc=f"eval {ing.name}"[:40],
                                                  **eval_options(args))
    res = _evaluate(args, {ing.reference: ing for ing in ings})
    by_sha = {ing.sha256: ing.reference for ing in ings}
    rows = []
    for ing in ings:
        row = dict(ing.describe())
        if clean:
            row["clean"] = clean[ing.reference].to_dict()
        row["corrupted"] = {"mean": {f"s{s}": res.mean(ing.reference, s).to_dict() for s in res.severities},
                            "per_corruption": res.per_corruption(ing.reference)}
        parents = soup_parents(ing, by_sha)
        if parents:
            row["gain_against"] = parents
            row["corrupted"]["gain"] = res.gains(ing.reference, parents, clean or None)
            if clean:
                row["clean"]["gain"] = soup_gain(clean[ing.reference], [clean[p] for p in parents])
        rows.append(row)
    doc = {"data": clean_data.describe() if clean_data is not None else None, "corrupted_data": res.describe(),
           "models": rows}
    if args.json:
        print_json(doc)
    else:
        print_eval_tables(doc)
    return doc


# -- tables ----------------------------------------------------------------------------------------------------
def _cell(m: dict) -> str:
    return f"{100 * m['accuracy']:.2f}% / {m['loss']:.3f}"


def print_eval_tables(doc: dict) -> None:
    """Per model: accuracy / loss per corruption and severity, the mean, and the soup gain."""
    from rich.markup import escape
    from rich.table import Table

    out = console()
    d = doc["corrupted_data"]
    sevs = d["severities"]
    # Short unique names (folder name, or the shortest distinct path suffix): a full path is cut by the terminal.
    names = unique_names(row["reference"] for row in doc["models"])
    for row in doc["models"]:
        t = Table(title=escape(f"{names[str(row['reference'])]} on CIFAR-100-C ({d['dataset']}, {d['config']}): "
                               f"accuracy / loss"))
        t.add_column("corruption")
        for s in sevs:
            t.add_column(f"s{s}", justify="right")
        for c, cells in row["corrupted"]["per_corruption"].items():
            t.add_row(escape(c), *(_cell(cells[f"s{s}"]) for s in sevs))
        mean = row["corrupted"]["mean"]
        t.add_row("[bold]mean[/bold]", *(_cell(mean[f"s{s}"]) for s in sevs))
        g = row["corrupted"].get("gain")
        if g:
            t.add_row("soup gain", *(f"{100 * g[f's{s}']['accuracy_gain']:+.2f} / {g[f's{s}']['loss_gain']:+.3f}"
                                     for s in sevs))
        out.print(t)
        if "clean" in row:
            out.print(f"clean: {100 * row['clean']['accuracy']:.2f}% / {row['clean']['loss']:.4f}")


def print_soup_tables(doc: dict) -> None:
    """Corrupted part of the mix/soup report (``doc['corrupted']``)."""
    from rich.markup import escape
    from rich.table import Table

    cor = doc.get("corrupted")
    if not cor:
        return
    d = cor["data"]
    sevs = d["severities"]
    t = Table(title=escape(f"CIFAR-100-C mean over {len(d['corruptions'])} corruptions ({d['config']}, "
                           f"{d['dataset']}): accuracy / loss"))
    t.add_column("model")
    for s in sevs:
        t.add_column(f"s{s}", justify="right")
        t.add_column(f"gain s{s}", justify="right")
    names = unique_names(cor["ingredients"])  # short and distinct: full paths would be cut to the same text
    for ref, r in cor["ingredients"].items():
        cells = []
        for s in sevs:
            cells += [_cell(r["mean"][f"s{s}"]), ""]
        t.add_row(escape(names[str(ref)]), *cells)
    for sp in cor["soups"]:
        cells = []
        for s in sevs:
            m, g = sp["mean"][f"s{s}"], sp["gain"][f"s{s}"]
            cells += [_cell(m), f"{100 * g['accuracy_gain']:+.2f} / {g['loss_gain']:+.3f}"]
        t.add_row("soup " + ",".join(f"{w:.3g}" for w in sp["weights"]), *cells)
    console().print(t)
