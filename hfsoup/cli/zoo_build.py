"""``hfsoup zoo init`` and ``hfsoup zoo build`` (added to the ``zoo`` command of :mod:`hfsoup.cli.zoo`); the
``build`` options are shared with ``python -m hfsoup.train build`` (:mod:`hfsoup.cli.train`).

Torch-free at import: the library (:mod:`hfsoup.zoo.build`) is imported when a command runs.
"""

from __future__ import annotations

import argparse

from hfsoup.cli.options import examples, progress_enabled

BUILD_EXAMPLES = examples("""
    hfsoup zoo init zoo.yaml
    hfsoup zoo build --config zoo.yaml --out runs/zoo --dry-run
    hfsoup zoo build --config zoo.yaml --out runs/zoo
    accelerate launch --multi_gpu --num_processes 8 -m hfsoup.train build --config zoo.yaml --out runs/zoo""")
BUILD_DESCRIPTION = ("Train every missing step of the zoo in order: the trunk up to the last branch epoch, then each "
                     "branch without an exported folder. Interrupted runs resume from their last state; a finished "
                     "zoo is left as it is.")


def add_zoo_commands(zoo_subparsers) -> None:
    """Add ``init`` and ``build`` to the ``hfsoup zoo`` sub-parsers."""
    p = zoo_subparsers.add_parser(
        "init", help="write the paper's zoo recipe as an editable YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the default zoo config (paper Tables 2 and 3: the trunk's SGD recipe, the branch epochs "
                    "and the four variants' lr / momentum / weight-decay scales) with comments.",
        epilog=examples("""
            hfsoup zoo init zoo.yaml
            hfsoup zoo init configs/zoo.yaml --force
            hfsoup zoo build --config zoo.yaml --out runs/zoo"""))
    p.add_argument("path", nargs="?", default="zoo.yaml", help="config file to write (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_zoo_init)

    p = zoo_subparsers.add_parser("build", help="train every missing step of a zoo (trunk, then branches), resumable",
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  description=BUILD_DESCRIPTION, epilog=BUILD_EXAMPLES)
    add_build_arguments(p)
    p.set_defaults(func=cmd_zoo_build)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hfsoup zoo build`` and ``python -m hfsoup.train build``."""
    p.add_argument("--config", required=True, help="zoo config (hfsoup zoo init zoo.yaml)")
    p.add_argument("--out", required=True, help="zoo folder, e.g. runs/zoo")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    p.add_argument("--dry-run", action="store_true", help="list the missing steps only")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (rerun to continue)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")


def cmd_zoo_init(args) -> None:
    from hfsoup.zoo.config import init_config

    path = init_config(args.path, force=args.force)
    print(f"wrote {path}: edit it, then `hfsoup zoo build --config {path} --out runs/zoo`")


def cmd_zoo_build(args):
    """Run :func:`hfsoup.zoo.build.build` with the options of :func:`add_build_arguments`; errors are raised (the
    caller prints them as one line). ``--dry-run`` prints one missing step per line."""
    from hfsoup.zoo.config import load_config

    cfg = load_config(args.config)  # a bad config fails before torch is imported
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from hfsoup.zoo.build import build

    res = build(cfg, args.out, cpu=True if args.cpu else None, progress=progress_enabled(args),
                dry_run=args.dry_run, max_steps=args.max_steps)
    if args.dry_run:
        for s in res.steps:
            print(" ".join(map(str, s)))
    return res
