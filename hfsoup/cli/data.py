"""``hfsoup data``: dataset preparation commands (``hfsoup data cifar100c``)."""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

from hfsoup.errors import HfSoupError


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare datasets (convert CIFAR-100-C to parquet and publish it)",
                              description="Dataset preparation.")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    q = sub.add_parser(
        "cifar100c", help="convert the original CIFAR-100-C release to a parquet Hub dataset (and push it)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert the original CIFAR-100-C release (Zenodo 3555552: the CIFAR-100-C/ folder of "
                    "<corruption>.npy arrays and labels.npy, or CIFAR-100-C.tar directly) into a parquet dataset "
                    "with columns image, label, corruption, severity and one config per corruption (plus 'all'). "
                    "The conversion streams (bounded memory) and writes atomically. With --push the folder is "
                    "uploaded to a Hub dataset repo; re-running is safe (unchanged files are skipped). --from may "
                    "also be an already converted folder, which is then pushed as is.",
        epilog="examples:\n" + textwrap.indent(textwrap.dedent("""
            hfsoup data cifar100c --from ./CIFAR-100-C --out ./cifar100-c-parquet
            hfsoup data cifar100c --from ./CIFAR-100-C.tar --out ./cifar100-c-parquet --check-labels uoft-cs/cifar100
            hfsoup data cifar100c --from ./CIFAR-100-C --push my-org/cifar100-c
            hfsoup data cifar100c --from ./cifar100-c-parquet --push my-org/cifar100-c""").strip(), "  "))
    q.add_argument("--from", dest="source", required=True,
                   help="CIFAR-100-C folder, CIFAR-100-C.tar, or a folder converted earlier (push only)")
    q.add_argument("--out", default=None, help="output folder (default with --push: a temporary folder)")
    q.add_argument("--force", action="store_true", help="replace an existing output folder")
    q.add_argument("--push", metavar="REPO", default=None, help="upload to this Hub dataset repo (created if missing)")
    q.add_argument("--private", action="store_true", help="create the dataset repo as private")
    q.add_argument("--revision", default=None, help="branch to push to")
    q.add_argument("--large", action="store_true", help="push with upload_large_folder (resumable, many commits)")
    q.add_argument("--check-labels", metavar="DATASET", default=None,
                   help="check labels.npy against the test split of this CIFAR-100 dataset (Hub id or folder)")
    q.add_argument("--class-names-from", metavar="DATASET", default=None,
                   help="take the label names from this CIFAR-100 dataset (default: CIFAR-100's fine names)")
    q.add_argument("--shard-rows", type=int, default=10_000, help="rows per parquet shard (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.set_defaults(func=cmd_cifar100c)
    p.set_defaults(func=lambda args: p.print_help())


def cmd_cifar100c(args) -> dict:
    from hfsoup.data.cifar100c import convert_release, is_converted, push_converted
    from hfsoup.cli import _print_json, _progress

    if args.shard_rows <= 0:
        raise HfSoupError(f"--shard-rows must be positive, got {args.shard_rows}")
    if not args.out and not args.push:
        raise HfSoupError("nothing to do: pass --out DIR to convert, --push REPO to publish (or both)")
    info: dict = {}
    tmp = None
    try:
        if is_converted(args.source):
            if args.out:
                raise HfSoupError(f"'{args.source}' is already converted: drop --out (use --push to publish it)")
            folder = Path(args.source)
            info["out"] = str(folder)
        else:
            if args.out:
                out = Path(args.out)
            else:
                tmp = tempfile.TemporaryDirectory(prefix="hfsoup-cifar100c-")
                out = Path(tmp.name) / "cifar100-c"
            info = convert_release(args.source, out, force=args.force, check_labels=args.check_labels,
                                   class_names_from=args.class_names_from, shard_rows=args.shard_rows,
                                   progress=_progress(args))
            info.pop("files", None)
            info.pop("class_names", None)
            folder = out
            if tmp is not None:
                info["out"] = None
        if args.push:
            info["push"] = push_converted(folder, args.push, private=args.private or None, revision=args.revision,
                                          token=args.token, large=args.large)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        _print_json(info)
    else:
        if "corruptions" in info:
            print(f"converted {len(info['corruptions'])} corruptions x 5 severities x "
                  f"{info['images_per_severity']} images" + (f" to {info['out']}" if info.get("out") else ""))
        if "push" in info:
            print(f"pushed to dataset {info['push']['repo_id']}: {info['push']['url']}")
    return info
