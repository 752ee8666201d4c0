"""``hfsoup zoo push | list | pull``: publish a built zoo and consume a published one (see :mod:`hfsoup.zoo.hub`).

``hfsoup zoo init | build`` (training) come from :mod:`hfsoup.cli.zoo_build` when it is installed: its
``add_zoo_commands(zoo_subparsers)`` adds them to the same ``zoo`` command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="publish, list and pull model zoos",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="A zoo is a set of models (trunk checkpoints and fine-tuned branches) "
                                          "published one repo per model, with a Hub Collection and a manifest repo "
                                          "{org}/hfsoup-zoo holding zoo.json (repo ids, commit shas, metadata, "
                                          "scores, file hashes).",
                              epilog=_examples("""
                                  hfsoup zoo push runs/zoo --org my-org --dry-run
                                  hfsoup zoo push runs/zoo --org my-org
                                  hfsoup zoo list my-org/hfsoup-zoo
                                  hfsoup zoo pull my-org/hfsoup-zoo --out ./zoo --epochs 150-300 --variants 1,3"""))
    p.set_defaults(func=lambda args: p.print_help())
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")

    q = zsub.add_parser("push", help="publish a built zoo folder (resumable)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="One repo per model ({org}/{prefix}-b{epoch:03d}-v{k}, "
                                    "{org}/{prefix}-trunk-e{epoch:03d}), one commit each, a Hub Collection and the "
                                    "manifest repo {org}/hfsoup-zoo. Rerun the same command to resume after an "
                                    "interruption: repos already pushed are skipped. Rate limits and server errors "
                                    "are retried with exponential backoff. The token comes from HF_TOKEN or "
                                    "`hf auth login` and is never printed.",
                        epilog=_examples("""
                            hfsoup zoo push runs/zoo --org my-org --dry-run
                            hfsoup zoo push runs/zoo --org my-org --private --collection-title "CIFAR-100 soup zoo\""""))
    q.add_argument("zoo", help="built zoo folder (trunk/, branches/)")
    q.add_argument("--org", required=True, help="Hub user or organisation that owns the repos")
    q.add_argument("--prefix", default="resnet50-cifar100", help="repo name prefix (default: %(default)s)")
    q.add_argument("--private", action="store_true", help="create the repos and the collection as private")
    q.add_argument("--dry-run", action="store_true", help="print the plan; no network call")
    q.add_argument("--collection-title", default=None, help="title of the Hub Collection (default: PREFIX model zoo)")
    q.add_argument("--max-retries", type=int, default=6, help="retries per Hub call on 429/5xx (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    q.set_defaults(func=cmd_zoo_push)

    q = zsub.add_parser("list", help="list the models of a zoo manifest",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="SOURCE is a manifest repo (org/hfsoup-zoo[@rev]), a zoo.json file or a zoo "
                                    "folder.",
                        epilog=_examples("""
                            hfsoup zoo list my-org/hfsoup-zoo
                            hfsoup zoo list ./zoo/zoo.json --epochs 200-300 --json"""))
    q.add_argument("source")
    q.add_argument("--epochs", default=None, help="branch epochs to show, e.g. 150-300 or 50,100")
    q.add_argument("--variants", default=None, help="variants to show, e.g. 1,3")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.set_defaults(func=cmd_zoo_list)

    q = zsub.add_parser("pull", help="download a published zoo, pinned to the manifest's commits",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Downloads the selected models into OUT/<repo-name>/ at the commit sha recorded "
                                    "in the manifest, verifies every file's SHA-256 and writes OUT/zoo.json. An "
                                    "interrupted pull resumes (verified folders are skipped).",
                        epilog=_examples("""
                            hfsoup zoo pull my-org/hfsoup-zoo --out ./zoo
                            hfsoup zoo pull my-org/hfsoup-zoo --out ./zoo --epochs 150-300 --variants 1,3 --workers 8"""))
    q.add_argument("source", help="manifest repo (org/hfsoup-zoo[@rev]) or zoo.json")
    q.add_argument("--out", default="./zoo", help="output folder (default: %(default)s)")
    q.add_argument("--epochs", default=None, help="branch epochs (trunk: epoch), e.g. 150-300 or 50,100-120")
    q.add_argument("--variants", default=None, help="branch variants, e.g. 1,3 (excludes trunk checkpoints)")
    q.add_argument("--kind", default=None, choices=["trunk", "branch"], help="only trunk checkpoints or branches")
    q.add_argument("--workers", type=int, default=4, help="parallel downloads (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    q.set_defaults(func=cmd_zoo_pull)

    try:
        build_cli = importlib.import_module("hfsoup.cli.zoo_build")
    except ModuleNotFoundError as e:
        if e.name != "hfsoup.cli.zoo_build":
            raise
    else:
        build_cli.add_zoo_commands(zsub)


def _print_json(doc) -> None:
    from hfsoup.cli import _print_json as pj

    pj(doc)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[escape(str(x)) for x in r])
    Console(highlight=False, width=200 if not sys.stdout.isatty() else None).print(t)


def _num(x, fmt="{:.4g}") -> str:
    return "" if x is None else fmt.format(float(x))


def _pct(x) -> str:
    return "" if x is None else f"{100 * float(x):.2f}%"


def cmd_zoo_push(args) -> dict:
    from hfsoup.zoo.hub import push_zoo

    progress = not getattr(args, "quiet", False) and not args.json
    log = None if args.json or args.dry_run else (lambda s: print(s, file=sys.stderr))
    doc = push_zoo(args.zoo, args.org, prefix=args.prefix, private=args.private or None, dry_run=args.dry_run,
                   collection_title=args.collection_title, token=args.token, max_retries=args.max_retries,
                   progress=progress, log=log)
    if args.json:
        _print_json(doc)
        return doc
    rows = [[m["repo_id"], m["kind"], m.get("branch_epoch", m.get("epoch")), m.get("variant") or "", m["status"],
             (m.get("commit") or "")[:12]] for m in doc["models"]]
    title = ("dry run: nothing is sent" if doc["dry_run"] else "pushed") + f" ({len(rows)} models)"
    _table(title, ["repo", "kind", "epoch", "variant", "status", "commit"], rows)
    if doc["dry_run"]:
        print(f"would also write the collection and the manifest {doc['manifest_repo']}/zoo.json")
    else:
        print(f"collection: {doc['collection']}")
        print(f"manifest: {doc['manifest_repo']} @ {doc['manifest_commit']}")
    return doc


def cmd_zoo_list(args) -> list:
    from hfsoup.zoo.hub import list_zoo

    rows = list_zoo(args.source, token=args.token, epochs=args.epochs, variants=args.variants)
    if args.json:
        _print_json({"source": str(args.source), "models": rows})
        return rows
    _table(f"{args.source} ({len(rows)} models)",
           ["repo", "kind", "epoch", "variant", "lr×", "mom×", "wd×", "val acc", "test acc", "commit"],
           [[r["repo_id"], r["kind"], r["epoch"], r["variant"] or "", _num(r["lr_scale"]), _num(r["momentum_scale"]),
             _num(r["weight_decay_scale"]), _pct(r["val_accuracy"]), _pct(r["test_accuracy"]),
             (r["commit"] or "")[:12]] for r in rows])
    return rows


def cmd_zoo_pull(args) -> dict:
    from hfsoup.zoo.hub import pull_zoo

    doc = pull_zoo(args.source, args.out, epochs=args.epochs, variants=args.variants, kind=args.kind,
                   workers=args.workers, token=args.token, progress=not getattr(args, "quiet", False) and not args.json)
    if args.json:
        _print_json(doc)
        return doc
    done = sum(r["status"] == "downloaded" for r in doc["models"])
    print(f"pulled {len(doc['models'])} models into {doc['out']} ({done} downloaded, "
          f"{len(doc['models']) - done} already verified); manifest: {doc['manifest']}")
    return doc
