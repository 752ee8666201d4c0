"""``python -m hfsoup.train`` (and ``accelerate launch -m hfsoup.train``): the zoo trainer's command line.

    python -m hfsoup.train trunk  --config zoo.yaml --out runs/zoo
    accelerate launch --multi_gpu --num_processes 8 -m hfsoup.train trunk --config zoo.yaml --out runs/zoo
    accelerate launch -m hfsoup.train branch --config zoo.yaml --out runs/zoo --epoch 200 --variant 2
    python -m hfsoup.train swa --config zoo.yaml --out runs/zoo --epoch 220
    accelerate launch -m hfsoup.train build --config zoo.yaml --out runs/zoo      (= hfsoup zoo build)

The library is :mod:`hfsoup.zoo.loops` (trunk, branches), :mod:`hfsoup.zoo.swa` and :mod:`hfsoup.zoo.build`.
Errors print one line (``hfsoup: error: …``, exit 2). Torch is imported when a command runs, not for ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hfsoup.cli.app import ArgumentParser, one_line
from hfsoup.cli.options import examples
from hfsoup.cli.zoo_build import BUILD_DESCRIPTION, BUILD_EXAMPLES, add_build_arguments, cmd_zoo_build
from hfsoup.errors import HfSoupError

PROG = "python -m hfsoup.train"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train the zoo with Accelerate: the trunk (checkpointed), its branches, the SWA "
                                   "baseline, or every missing step (build).",
                       epilog=examples("""
                           python -m hfsoup.train trunk --config zoo.yaml --out runs/zoo
                           accelerate launch --multi_gpu --num_processes 8 -m hfsoup.train trunk --config zoo.yaml --out runs/zoo
                           accelerate launch -m hfsoup.train branch --config zoo.yaml --out runs/zoo --epoch 200 --variant 2
                           python -m hfsoup.train swa --config zoo.yaml --out runs/zoo --epoch 220
                           accelerate launch -m hfsoup.train build --config zoo.yaml --out runs/zoo"""))
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    helps = {"trunk": "train (or resume) the trunk", "branch": "train (or resume) one branch",
             "swa": "SWA baseline from a trunk checkpoint"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        s.add_argument("--config", required=True, help="zoo config (hfsoup zoo init zoo.yaml)")
        s.add_argument("--out", required=True, help="zoo folder (e.g. runs/zoo)")
        s.add_argument("--stop-after-epoch", type=int, default=None,
                       help="stop after this (absolute) epoch, as a crash would; rerun to resume")
        s.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
        s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        s.add_argument("--report", default=None,
                       help="write this process's result (final state hash, rank) to REPORT.rankN.json "
                            "(multi-process checks)")
    sub.choices["trunk"].add_argument("--until-epoch", type=int, default=None,
                                      help="train up to this epoch (default: train.epochs)")
    sub.choices["branch"].add_argument("--epoch", type=int, required=True, help="trunk epoch to branch from")
    sub.choices["branch"].add_argument("--variant", type=int, required=True, help="variant id (1..4 by default)")
    sub.choices["swa"].add_argument("--epoch", type=int, default=None,
                                    help="trunk epoch to start SWA from (default: swa.start_epoch, 220)")
    b = sub.add_parser("build", help="every missing step of the zoo (as `hfsoup zoo build`)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=BUILD_DESCRIPTION,
                       epilog=BUILD_EXAMPLES)
    add_build_arguments(b)
    return p


def run(args) -> object:
    """Run the parsed command; returns its result (:class:`~hfsoup.zoo.trainer.RunResult` or
    :class:`~hfsoup.zoo.build.BuildResult`)."""
    if args.cmd == "build":
        return cmd_zoo_build(args)
    from hfsoup.zoo.config import load_config

    cfg = load_config(args.config)
    cpu = True if args.cpu else None
    progress = not args.quiet
    if args.cmd == "trunk":
        from hfsoup.zoo.loops import train_trunk

        return train_trunk(cfg, args.out, until_epoch=args.until_epoch, stop_after_epoch=args.stop_after_epoch,
                           cpu=cpu, progress=progress)
    if args.cmd == "branch":
        from hfsoup.zoo.loops import train_branch

        return train_branch(cfg, args.out, args.epoch, args.variant, cpu=cpu, progress=progress,
                            stop_after_epoch=args.stop_after_epoch)
    from hfsoup.zoo.swa import train_swa

    return train_swa(cfg, args.out, args.epoch, cpu=cpu, progress=progress, stop_after_epoch=args.stop_after_epoch)


def main(argv: list[str] | None = None) -> int:
    """``python -m hfsoup.train ARGV``; returns the exit code (2 with one error line on a user error)."""
    args = build_parser().parse_args(argv)
    try:
        res = run(args)
    except HfSoupError as e:
        print(f"hfsoup: error: {one_line(e) or type(e).__name__}", file=sys.stderr)
        return e.exit_code
    if getattr(args, "report", None):
        from hfsoup.core.files import atomic_write_text

        rank = getattr(res, "rank", int(os.environ.get("RANK", 0)))
        atomic_write_text(Path(f"{args.report}.rank{rank}.json"), json.dumps(res.to_dict(), default=str))
    return 0
