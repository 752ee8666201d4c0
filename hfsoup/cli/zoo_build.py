"""``hfsoup zoo init`` and ``hfsoup zoo build``: added to the ``zoo`` command of :mod:`hfsoup.cli.zoo`."""

from __future__ import annotations

import argparse


def add_zoo_commands(zoo_subparsers) -> None:
    p = zoo_subparsers.add_parser("init", help="write the paper's zoo recipe as an editable YAML config",
                                  description="Write the default zoo config (paper Tables 2 and 3) with comments.")
    p.add_argument("path", nargs="?", default="zoo.yaml", help="config file to write (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_init)

    p = zoo_subparsers.add_parser(
        "build", help="train every missing step of a zoo (trunk, then branches), resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every missing step of the zoo in order: the trunk up to the last branch epoch, then each "
                    "branch without an exported folder. Interrupted runs resume from their last state.",
        epilog="examples:\n  hfsoup zoo init zoo.yaml\n  hfsoup zoo build --config zoo.yaml --out runs/zoo\n"
               "  accelerate launch --multi_gpu --num_processes 8 -m hfsoup.zoo.build --config zoo.yaml --out runs/zoo")
    from hfsoup.zoo.build import add_build_arguments

    add_build_arguments(p)
    p.set_defaults(func=_cmd_build)


def _cmd_init(args):
    from hfsoup.zoo.config import init_config

    path = init_config(args.path, force=args.force)
    print(f"wrote {path}: edit it, then `hfsoup zoo build --config {path} --out runs/zoo`")


def _cmd_build(args):
    from hfsoup.errors import HfSoupError
    from hfsoup.zoo.build import run_build

    rc = run_build(args)
    if rc:
        raise HfSoupError("zoo build failed (see above)")
