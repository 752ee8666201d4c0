"""``hfsoup push``: upload a model folder to the Hub in one commit (no torch: it only reads files)."""

from __future__ import annotations

import argparse

from hfsoup.cli.options import add_json_option, examples
from hfsoup.cli.output import print_json


def register(subparsers) -> None:
    """Add ``hfsoup push``."""
    p = subparsers.add_parser("push", help="upload a model folder to the Hub in one commit",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Upload model.safetensors, config.json, README.md and soup.json as one "
                                          "commit. The token comes from HF_TOKEN or `hf auth login` and is never "
                                          "printed.",
                              epilog=examples("""
                                  hfsoup push ./soup-ab org/soup-ab --private
                                  hfsoup push ./soup-ab org/soup-ab --create-pr"""))
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    add_json_option(p)
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> dict:
    """Push ``args.folder`` to ``args.repo_id``; prints the commit and its URL (or the JSON document)."""
    from hfsoup.hub.upload import push

    info = push(args.folder, args.repo_id, private=args.private or None, create_pr=args.create_pr,
                revision=args.revision, token=args.token)
    doc = info.to_dict() if hasattr(info, "to_dict") else dict(info)
    if args.json:
        print_json(doc)
    else:
        print(f"pushed {args.folder} to {doc['repo_id']} @ {doc['commit']}")
        print(doc.get("pr_url") or doc["url"])
    return doc
