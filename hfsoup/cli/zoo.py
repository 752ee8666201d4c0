"""``hfsoup zoo push | list | pull | init | build``: publish a built zoo, consume a published one
(:mod:`hfsoup.zoo.publish`, :mod:`hfsoup.zoo.manifest`, :mod:`hfsoup.zoo.pull`), and train one
(:mod:`hfsoup.cli.zoo_build`).

Torch-free at import, and ``zoo list`` / ``zoo push --dry-run`` never import torch.
"""

from __future__ import annotations

import argparse
import sys

from hfsoup.cli.options import add_json_option, examples, progress_enabled
from hfsoup.cli.zoo_build import add_zoo_commands


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="train, publish, list and pull model zoos",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="A zoo is a set of models (trunk checkpoints and fine-tuned branches) "
                                          "trained with `hfsoup zoo build`, published one repo per model, with a Hub "
                                          "Collection and a manifest repo {org}/hfsoup-zoo holding zoo.json (repo "
                                          "ids, commit shas, metadata, scores, file hashes).",
                              epilog=examples("""
                                  hfsoup zoo init zoo.yaml
                                  hfsoup zoo build --config zoo.yaml --out runs/zoo
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
                                    "manifest repo {org}/hfsoup-zoo. Every model folder is published: the branches "
                                    "and the trunk checkpoints they start from (the default config: 104 branches = "
                                    "4 variants x 26 branch epochs, plus 30 trunk checkpoints); --branches-only "
                                    "publishes the branches alone. Each card's usage snippet names its repo. "
                                    "Rerun the same command to resume after an "
                                    "interruption: repos already pushed are skipped. Rate limits and server errors "
                                    "are retried with exponential backoff. The token comes from HF_TOKEN or "
                                    "`hf auth login` and is never printed.",
                        epilog=examples("""
                            hfsoup zoo push runs/zoo --org my-org --dry-run
                            hfsoup zoo push runs/zoo --org my-org --branches-only
                            hfsoup zoo push runs/zoo --org my-org --private --collection-title "CIFAR-100 soup zoo\""""))
    q.add_argument("zoo", help="built zoo folder (trunk/, branches/)")
    q.add_argument("--org", required=True, help="Hub user or organisation that owns the repos")
    q.add_argument("--prefix", default=None,
                   help="repo name prefix (default: ARCHITECTURE-DATASET of the zoo's zoo.yaml, e.g. "
                        "resnet50-cifar100 for the default config)")
    q.add_argument("--branches-only", action="store_true",
                   help="publish the branches only, not the trunk checkpoints they start from")
    q.add_argument("--private", action="store_true", help="create the repos and the collection as private")
    q.add_argument("--dry-run", action="store_true", help="print the plan; no network call")
    q.add_argument("--collection-title", default=None, help="title of the Hub Collection (default: PREFIX model zoo)")
    q.add_argument("--max-retries", type=int, default=6, help="retries per Hub call on 429/5xx (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    add_json_option(q)
    q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    q.set_defaults(func=cmd_zoo_push)

    q = zsub.add_parser("list", help="list the models of a zoo manifest",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="SOURCE is a manifest repo (org/hfsoup-zoo[@rev]), a zoo.json file or a zoo "
                                    "folder.",
                        epilog=examples("""
                            hfsoup zoo list my-org/hfsoup-zoo
                            hfsoup zoo list ./zoo/zoo.json --epochs 200-300 --json
                            hfsoup zoo list runs/zoo"""))
    q.add_argument("source")
    q.add_argument("--epochs", default=None, help="branch epochs to show, e.g. 150-300 or 50,100")
    q.add_argument("--variants", default=None, help="variants to show, e.g. 1,3")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    add_json_option(q)
    q.set_defaults(func=cmd_zoo_list)

    q = zsub.add_parser("pull", help="download a published zoo, pinned to the manifest's commits",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Downloads the selected models into OUT/<repo-name>/ at the commit sha recorded "
                                    "in the manifest, verifies every file's SHA-256 and writes OUT/zoo.json. An "
                                    "interrupted pull resumes (verified folders are skipped).",
                        epilog=examples("""
                            hfsoup zoo pull my-org/hfsoup-zoo --out ./zoo
                            hfsoup zoo pull my-org/hfsoup-zoo --out ./zoo --epochs 150-300 --variants 1,3 --workers 8"""))
    q.add_argument("source", help="manifest repo (org/hfsoup-zoo[@rev]) or zoo.json")
    q.add_argument("--out", default="./zoo", help="output folder (default: %(default)s)")
    q.add_argument("--epochs", default=None, help="branch epochs (trunk: epoch), e.g. 150-300 or 50,100-120")
    q.add_argument("--variants", default=None, help="branch variants, e.g. 1,3 (excludes trunk checkpoints)")
    q.add_argument("--kind", default=None, choices=["trunk", "branch"], help="only trunk checkpoints or branches")
    q.add_argument("--workers", type=int, default=4, help="parallel downloads (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    add_json_option(q)
    q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    q.set_defaults(func=cmd_zoo_pull)

    add_zoo_commands(zsub)


def _scale(x) -> str:
    return "" if x is None else f"{float(x):.4g}"


def _wide_console():
    """A console that does not wrap the zoo tables (ten columns, long repo ids) at 80 columns when the output is a
    file or a pipe (a terminal keeps its own width)."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def cmd_zoo_push(args):
    from hfsoup.cli.output import print_json, table
    from hfsoup.zoo.publish import push_zoo

    progress = progress_enabled(args) and not args.json
    log = None if args.json or args.dry_run else (lambda s: print(s, file=sys.stderr))
    res = push_zoo(args.zoo, args.org, prefix=args.prefix, private=args.private or None, dry_run=args.dry_run,
                   collection_title=args.collection_title, token=args.token, max_retries=args.max_retries,
                   progress=progress, branches_only=args.branches_only, log=log)
    if args.json:
        print_json(res.to_dict())
        return res
    rows = [[m.repo_id, m.model.kind, m.model.epoch, m.model.variant or "", m.status, (m.commit or "")[:12]]
            for m in res.models]
    title = ("dry run: nothing is sent" if res.dry_run else "pushed") + f" ({len(rows)} models)"
    table(title, ["repo", "kind", "epoch", "variant", "status", "commit"], rows, out=_wide_console())
    if res.dry_run:
        print(f"would also write the collection and the manifest {res.manifest_repo}/zoo.json")
    else:
        print(f"collection: {res.collection}")
        print(f"manifest: {res.manifest_repo} @ {res.manifest_commit}")
    return res


def cmd_zoo_list(args):
    from hfsoup.cli.output import pct, print_json, table
    from hfsoup.zoo.manifest import list_zoo

    res = list_zoo(args.source, token=args.token, epochs=args.epochs, variants=args.variants)
    if args.json:
        print_json(res.to_dict())
        return res
    table(f"{args.source} ({len(res.models)} models)",
          ["repo", "kind", "epoch", "variant", "lr×", "mom×", "wd×", "val acc", "test acc", "commit"],
          [[r.repo_id, r.kind, r.epoch, r.variant or "", _scale(r.lr_scale), _scale(r.momentum_scale),
            _scale(r.weight_decay_scale), pct(r.val_accuracy), pct(r.test_accuracy), (r.commit or "")[:12]]
           for r in res.models], out=_wide_console())
    return res


def cmd_zoo_pull(args):
    from hfsoup.cli.output import print_json
    from hfsoup.zoo.pull import pull_zoo

    res = pull_zoo(args.source, args.out, epochs=args.epochs, variants=args.variants, kind=args.kind,
                   workers=args.workers, token=args.token, progress=progress_enabled(args) and not args.json)
    if args.json:
        print_json(res.to_dict())
        return res
    done = sum(m.status == "downloaded" for m in res.models)
    print(f"pulled {len(res.models)} models into {res.out} ({done} downloaded, {len(res.models) - done} already "
          f"verified); manifest: {res.manifest}")
    return res
