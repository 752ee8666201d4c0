"""The ``hfsoup`` application: the top-level parser, the command groups, and the one error policy.

Every command group is a module of :data:`COMMAND_GROUPS` with ``register(subparsers)``. A command either
succeeds (exit 0), or fails with exactly one line on stderr: ``hfsoup: error: …`` (exit 2) for bad input and
usage errors (a full, read-only or forbidden disk included), ``hfsoup: interrupted …`` (exit 130) on Ctrl-C,
``hfsoup: terminated …`` (exit 143) on SIGTERM, ``hfsoup: internal error: …`` (exit 1) for a bug
(``HFSOUP_DEBUG=1`` shows its traceback). Building the parser imports no torch: ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from hfsoup.cli.options import examples
from hfsoup.errors import HfSoupError, InvalidParameterError, from_os_error

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
            hfsoup eval ./soup-ab ./a ./b --dataset uoft-cs/cifar100 --eval-split test
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
    # `datasets` logs the failure it then raises ("Failed to read schema from …" before ArrowInvalid): the raised
    # error becomes hfsoup's one line, so its log line would be a second one. `datasets` sets its logger's level
    # when it is imported, from DATASETS_VERBOSITY: the variable for a later import, the level for an earlier one.
    if "datasets" in sys.modules:
        logging.getLogger("datasets").setLevel(logging.CRITICAL)
    else:
        os.environ.setdefault("DATASETS_VERBOSITY", "critical")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (``kill``, a job scheduler, a container stop): it unwinds like Ctrl-C,
    so the atomic writers (:mod:`hfsoup.core.files`) remove their temporaries and no partial output is left."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """While the command runs, SIGTERM raises :class:`Terminated` (the default action would kill the process
    without running any cleanup). A second SIGTERM during the clean-up is ignored, so the clean-up finishes; the
    previous handler is restored afterwards (``main`` can run in-process)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Environment switches of the clients' progress bars, read when each library is imported.
_CLIENT_PROGRESS_ENV = {"datasets": "HF_DATASETS_DISABLE_PROGRESS_BARS",
                        "huggingface_hub": "HF_HUB_DISABLE_PROGRESS_BARS"}


@contextlib.contextmanager
def _client_progress_bars(enabled: bool):
    """``-q`` also silences the progress bars of ``datasets`` (loading, "Generating split") and ``huggingface_hub``
    (downloads, uploads), with their public switches: ``disable_progress_bars()`` for a library already imported,
    the environment variable it reads at import for one imported later (importing ``datasets`` just for this
    would cost seconds). Switches turned off here are turned back on afterwards."""
    if enabled:
        yield
        return
    saved_env = {var: os.environ.get(var) for var in _CLIENT_PROGRESS_ENV.values()}
    reenable = []
    for module_name, var in _CLIENT_PROGRESS_ENV.items():
        module = sys.modules.get(module_name)
        if module is None:
            os.environ[var] = "1"
            continue
        utils = module if module_name == "datasets" else importlib.import_module("huggingface_hub.utils")
        if not utils.are_progress_bars_disabled():
            utils.disable_progress_bars()
            reenable.append(utils)
    try:
        yield
    finally:
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        for utils in reenable:
            utils.enable_progress_bars()


def cpu_processes_hide_gpus(environ=None) -> bool:
    """Under ``accelerate launch`` with CPU processes (``ACCELERATE_USE_CPU=1``, several processes) on a machine
    with GPUs, hide the GPUs from this process (``CUDA_VISIBLE_DEVICES=""``, unless already set) before torch
    touches CUDA: torch's gloo barrier (Accelerate's ``wait_for_everyone``) otherwise puts a tensor on
    ``cuda:<local rank>``, which fails with "invalid device ordinal" on a rank beyond the GPU count. Returns
    whether it hid them. Called by the ``-m hfsoup.train`` and ``-m hfsoup.study`` entry points."""
    env = os.environ if environ is None else environ
    cpu = env.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    try:
        launched = int(env.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        launched = False
    if cpu and launched and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return True
    return False


def check_device(device: str | None) -> None:
    """Fail early, on one line, for a ``--device`` this machine cannot use (else the first tensor moved there
    ends the command as an internal error). Imports torch only when a device is given."""
    if not device:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InvalidParameterError(f"unknown --device '{device}': use cpu, cuda, cuda:N or mps",
                                    parameter="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError("CUDA is not available on this machine: drop --device or use --device cpu",
                                        parameter="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidParameterError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                                        f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})",
                                        parameter="device")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidParameterError("MPS is not available on this machine: drop --device or use --device cpu",
                                        parameter="device")
    elif dev.type != "cpu":
        raise InvalidParameterError(f"--device {device} is not supported: use cpu, cuda, cuda:N or mps",
                                    parameter="device")


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
        with _sigterm_unwinds(), _client_progress_bars(not args.quiet):
            check_device(getattr(args, "device", None))
            rc = args.func(args)
    except HfSoupError as e:
        print(f"hfsoup: error: {one_line(e) or type(e).__name__}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("hfsoup: terminated by SIGTERM (outputs are written atomically: nothing partial was left)",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("hfsoup: interrupted (outputs are written atomically: nothing partial was left)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: one line, traceback on request
        if (user_error := from_os_error(e)) is not None:  # a full, read-only or forbidden disk: not a bug
            print(f"hfsoup: error: {one_line(user_error)}", file=sys.stderr)
            return user_error.exit_code
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"hfsoup: internal error: {type(e).__name__}: {first} (set HFSOUP_DEBUG=1 for the traceback, "
              f"and please report it)", file=sys.stderr)
        return 1
    # A command returns None (or its report) on success; an int is its exit code.
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
