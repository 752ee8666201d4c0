"""Option groups shared by the commands (models, data, output, ``--json``) and the helpers that read them back.

Torch-free at import: declaring options must not cost the import of torch (``--help``); the data is loaded by
:func:`load_data`, called inside a command.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hfsoup.data.images import ImageData

#: The splits of an image dataset a command can evaluate on (``val`` is the held-out 5% of train, seed 42).
SPLITS = ["test", "val", "train", "train-main"]


def examples(text: str) -> str:
    """An ``examples:`` epilog from an indented block of command lines (use with ``RawDescriptionHelpFormatter``)."""
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _int_at_least(text: str, low: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got '{text}'") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type`` of counts and sizes (``--batch-size``, ``--limit``): an integer >= 1. A zero or negative
    value would otherwise fail deep inside the command (``range()`` with step 0, an empty ``torch.cat``)."""
    return _int_at_least(text, 1, "a positive integer (1 or more)")


def non_negative_int(text: str) -> int:
    """argparse ``type`` of counts where 0 means "off" (``--recalibrate-bn``): an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option (kept for one release): stores into the new option's destination and
    notes the rename on stderr, once per use. Declare with ``help=argparse.SUPPRESS`` and ``new="--new-flag"``."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"hfsoup: warning: {option_string} is deprecated here, use {self.new} (the old spelling will be "
              f"removed in the next release)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of ``new`` (same ``dest``; ``kwargs``: ``choices``…)."""
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS, **kwargs)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--allow-pickle`` and the hidden ``--token`` (prefer ``HF_TOKEN`` or ``hf auth login``)."""
    g = p.add_argument_group("models")
    g.add_argument("--allow-pickle", action="store_true",
                   help="accept pytorch_model.bin when no safetensors exist (loaded with weights_only=True)")
    g.add_argument("--token", default=None, help=argparse.SUPPRESS)  # prefer HF_TOKEN / hf auth login


def add_data_options(p: argparse.ArgumentParser, *, split_flag: str, default_split: str | None) -> None:
    """The image dataset to evaluate on (``split_flag`` names the split option, ``--split`` or ``--eval-split``;
    with ``default_split=None`` no evaluation happens unless it is given), evaluation settings and ``-q``.
    (CIFAR-100-C options: :func:`hfsoup.cli.corrupted.add_corrupted_options`.)"""
    g = p.add_argument_group("data")
    g.add_argument(split_flag, dest="split", default=default_split, choices=SPLITS,
                   help="split to evaluate on: test, val (the held-out 5%% of train, seed 42), train, train-main"
                        + ("" if default_split else " (default: no evaluation)"))
    g.add_argument("--dataset", default="uoft-cs/cifar100",
                   help="Hub dataset id, local parquet folder/file or save_to_disk folder (default: %(default)s)")
    g.add_argument("--dataset-revision", default=None, help="dataset revision (branch, tag or commit)")
    g.add_argument("--image-column", default=None, help="image column (default: img or image)")
    g.add_argument("--label-column", default=None, help="label column (default: fine_label or label)")
    g.add_argument("--limit", type=positive_int, default=None, help="evaluate on the first N images only (quick runs)")
    g.add_argument("--batch-size", type=positive_int, default=500,
                   help="evaluation batch size (default: %(default)s)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_precision_option(g)
    # SUPPRESS: `hfsoup -q mix …` (the top-level flag) is not reset to False by the sub-command's default.
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")


#: ``--precision`` values (:data:`hfsoup.eval.precision.PRECISIONS`; repeated here to keep --help torch-free).
PRECISIONS = ("fp32", "bf16", "auto")


def add_precision_option(g) -> None:
    """``--precision fp32|bf16|auto`` of every evaluating command (``g``: a parser or an argument group)."""
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="evaluation numerics: auto = bf16 autocast only where the device has native bf16 (CUDA, "
                        "CPUs with AMX/AVX-512 BF16) and a check on a few batches finds the same results, else "
                        "fp32 (default: %(default)s)")


def add_output_options(p: argparse.ArgumentParser, *, default_out: str | None = None) -> None:
    """``--out``, ``--no-save`` and ``--force`` of the commands that write a model folder."""
    g = p.add_argument_group("output")
    g.add_argument("--out", default=default_out,
                   help="output folder (model.safetensors, config.json, README.md, soup.json)"
                        + (" (default: %(default)s)" if default_out else ""))
    g.add_argument("--no-save", action="store_true", help="do not write the soup (evaluate only)")
    g.add_argument("--force", action="store_true", help="replace an existing output folder")


def add_json_option(p: argparse.ArgumentParser) -> None:
    """``--json``: one JSON document on stdout instead of tables."""
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars unless ``-q``/``--quiet`` or ``HFSOUP_NO_PROGRESS`` is set."""
    return not getattr(args, "quiet", False) and not os.environ.get("HFSOUP_NO_PROGRESS")


def load_data(args: argparse.Namespace) -> ImageData:
    """The split selected by the data options (:func:`add_data_options`)."""
    from hfsoup.data.images import load_image_data

    return load_image_data(args.dataset, args.split, revision=args.dataset_revision, image_column=args.image_column,
                           label_column=args.label_column, limit=args.limit, progress=progress_enabled(args))


def eval_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the evaluation functions: ``batch_size``, ``device``, ``progress``, ``precision``."""
    return {"batch_size": args.batch_size, "device": args.device, "progress": progress_enabled(args),
            "precision": getattr(args, "precision", "auto")}
