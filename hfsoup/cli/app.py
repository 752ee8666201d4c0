"""The ``hfsoup`` application: the top-level parser, the command groups, and the one error policy.

Every command group is a module of :data:`COMMAND_GROUPS` with ``register(subparsers)``. A command either
succeeds (exit 0), or fails with exactly one line on stderr: ``hfsoup: error: …`` (exit 2) for bad input and
usage errors, ``hfsoup: interrupted …`` (exit 130) on Ctrl-C, ``hfsoup: internal error: …`` (exit 1) for a bug
(``HFSOUP_DEBUG=1`` shows its traceback). Building the parser imports no torch: ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from hfsoup.cli.options import examples
from hfsoup.errors import HfSoupError

#: Modules that add sub-commands, in ``hfsoup --help`` order: each has ``register(subparsers)``.
COMMAND_GROUPS: list[str] = ["hfsoup.cli.soup", "hfsoup.cli.eval", "hfsoup.cli.push", "hfsoup.cli.data",
                             "hfsoup.cli.zoo", "hfsoup.cli.demo", "hfsoup.cli.study"]

#: Loggers of the HF clients: they log every network retry as a warning, and the CLI ends with its own one-line
#: error instead (shown with ``HFSOUP_DEBUG=1``).
CLIENT_LOGGERS = ("huggingface_hub", "datasets", "httpx", "filelock")


def one_line(message: str) -> str:
    """A message on one line (a multi-line message would break the one-line error rule)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class ArgumentParser(argparse.ArgumentParser):
    """argparse with hfsoup's error format: a usage error is one line that points to ``--help``, not the usage
    block followed by the error. Sub-command parsers (``add_subparsers``) inherit this class."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"hfsoup: error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``hfsoup`` parser with every command group registered (torch-free)."""
    from hfsoup import __version__

    parser = ArgumentParser(
        prog="hfsoup", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Model soups for timm models on the Hugging Face Hub: average the weights of fine-tuned "
                    "models (Hub ids, id@revision, local folders) into one model, evaluate and publish it.",
        epilog=examples("""
            hfsoup mix org/a org/b --alpha 0.5 --out ./soup-ab
            hfsoup mix ./a ./b --alpha 0,0.25,0.5,0.75,1 --out ./curve
            hfsoup soup ./m1 ./m2 ./m3 --recipe uniform --out ./soup-u
            hfsoup eval ./soup-ab ./a ./b --dataset uoft-cs/cifar100 --split test
            hfsoup push ./soup-ab org/soup-ab --private"""))
    parser.add_argument("--version", action="version", version=f"hfsoup {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars (or set HFSOUP_NO_PROGRESS=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def _silence_client_loggers() -> None:
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run ``hfsoup ARGV``; returns the exit code (``--help`` and usage errors exit through ``SystemExit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    args.quiet = bool(getattr(args, "quiet", False) or os.environ.get("HFSOUP_NO_PROGRESS"))
    debug = bool(os.environ.get("HFSOUP_DEBUG"))
    if not debug:
        _silence_client_loggers()
    try:
        rc = args.func(args)
    except HfSoupError as e:
        print(f"hfsoup: error: {one_line(e) or type(e).__name__}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hfsoup: interrupted (outputs are written atomically: nothing partial was left)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: one line, traceback on request
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"hfsoup: internal error: {type(e).__name__}: {first} (set HFSOUP_DEBUG=1 for the traceback, "
              f"and please report it)", file=sys.stderr)
        return 1
    # A command returns None (or its report) on success; an int is its exit code.
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
