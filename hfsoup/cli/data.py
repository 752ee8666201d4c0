"""``hfsoup data``: dataset preparation commands (``hfsoup data cifar100c``)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hfsoup.cli.options import add_json_option, examples, positive_int, progress_enabled
from hfsoup.cli.output import print_json
from hfsoup.errors import HfSoupError, InvalidParameterError


def register(subparsers) -> None:
    """Add ``hfsoup data`` and its sub-commands."""
    p = subparsers.add_parser("data", help="prepare datasets (convert CIFAR-100-C to parquet and publish it)",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Dataset preparation.",
                              epilog=examples("""
                                  hfsoup data cifar100c --from ./CIFAR-100-C --out ./cifar100-c-parquet
                                  hfsoup data cifar100c --from ./CIFAR-100-C.tar --push my-org/cifar100-c"""))
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
        epilog=examples("""
            hfsoup data cifar100c --from ./CIFAR-100-C --out ./cifar100-c-parquet
            hfsoup data cifar100c --from ./CIFAR-100-C.tar --out ./cifar100-c-parquet --check-labels uoft-cs/cifar100
            hfsoup data cifar100c --from ./CIFAR-100-C --push my-org/cifar100-c
            hfsoup data cifar100c --from ./cifar100-c-parquet --push my-org/cifar100-c --revision v2"""))
    q.add_argument("--from", dest="source", required=True,
                   help="CIFAR-100-C folder, CIFAR-100-C.tar, or a folder converted earlier (push only)")
    q.add_argument("--out", default=None, help="output folder (default with --push: a temporary folder)")
    q.add_argument("--force", action="store_true", help="replace an existing output folder")
    q.add_argument("--push", metavar="REPO", default=None, help="upload to this Hub dataset repo (created if missing)")
    q.add_argument("--private", action="store_true", help="create the dataset repo as private")
    q.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    q.add_argument("--large", action="store_true", help="push in several resumable commits (very large folders)")
    q.add_argument("--check-labels", metavar="DATASET", default=None,
                   help="check labels.npy against the test split of this CIFAR-100 dataset (Hub id or folder)")
    q.add_argument("--class-names-from", metavar="DATASET", default=None,
                   help="take the label names from this CIFAR-100 dataset (default: CIFAR-100's fine names)")
    q.add_argument("--shard-rows", type=positive_int, default=10_000,
                   help="rows per parquet shard (default: %(default)s)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    add_json_option(q)
    q.set_defaults(func=cmd_cifar100c)
    p.set_defaults(func=lambda args: p.print_help())


def cmd_cifar100c(args: argparse.Namespace) -> dict:
    """Convert (``--out``) and/or publish (``--push``) CIFAR-100-C; prints a summary (or the JSON document)."""
    from hfsoup.data.cifar100c_release import convert_release, is_converted

    if args.shard_rows <= 0:
        raise InvalidParameterError(f"--shard-rows must be positive, got {args.shard_rows}", parameter="shard_rows")
    if not args.out and not args.push:
        raise HfSoupError("nothing to do: pass --out DIR to convert, --push REPO to publish (or both)")
    doc: dict = {}
    tmp = None
    try:
        if is_converted(args.source):
            if args.out:
                raise HfSoupError(f"'{args.source}' is already converted: drop --out (use --push to publish it)")
            folder = Path(args.source)
            doc["out"] = str(folder)
        else:
            if args.out:
                folder = Path(args.out)
            else:
                tmp = tempfile.TemporaryDirectory(prefix="hfsoup-cifar100c-")
                folder = Path(tmp.name) / "cifar100-c"
            result = convert_release(args.source, folder, force=args.force, check_labels=args.check_labels,
                                     class_names_from=args.class_names_from, shard_rows=args.shard_rows,
                                     progress=progress_enabled(args))
            doc = {k: v for k, v in result.to_dict().items() if k not in ("files", "class_names")}
            if tmp is not None:
                doc["out"] = None
        if args.push:
            from hfsoup.hub.datasets import push_dataset_folder

            doc["push"] = push_dataset_folder(
                folder, args.push, private=args.private or None, revision=args.revision, token=args.token,
                large=args.large, commit_message="Upload CIFAR-100-C (parquet, converted by hfsoup)").to_dict()
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print_json(doc)
    else:
        if "corruptions" in doc:
            print(f"converted {len(doc['corruptions'])} corruptions x 5 severities x "
                  f"{doc['images_per_severity']} images" + (f" to {doc['out']}" if doc.get("out") else ""))
        if "push" in doc:
            where = f" (branch {args.revision})" if args.revision else ""
            print(f"pushed to dataset {doc['push']['repo_id']}{where} @ {doc['push']['commit']}: {doc['push']['url']}")
    return doc
