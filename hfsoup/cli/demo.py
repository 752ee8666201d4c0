"""``hfsoup demo``: soup the embedded mini-zoo offline (:mod:`hfsoup.study.demo`), and the rebuild script's
parser (``scripts/build_mini_zoo.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hfsoup.cli.options import examples, positive_int, progress_enabled

DESCRIPTION = ("The pair study of the paper, offline in about two minutes on the embedded mini-zoo: 24 "
               "resnet10_cifar_nano branches (6 branch epochs x 4 variants) trained on 160 images of scikit-learn's "
               "digits by hfsoup's own zoo pipeline. Runs `hfsoup study run` (the midpoint soup of all 276 pairs, "
               "its gain and the pair's similarity) and `hfsoup study report` on it, prints the headline findings "
               "beside the paper's, and compares the uniform, greedy and RADIN soups with the best model.")


def register(subparsers) -> None:
    """Add ``hfsoup demo``."""
    p = subparsers.add_parser(
        "demo", help="the pair study and its report on the embedded mini-zoo, offline, in about two minutes",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION,
        epilog=examples("""
            hfsoup demo
            hfsoup demo --out ./demo --force --limit 360
            hfsoup demo --rebuild --work runs/mini_zoo --out ./demo-rebuilt"""))
    p.add_argument("--out", default="hfsoup-demo", help="output folder (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--zoo", default=None, help="another zoo folder (default: the embedded mini-zoo)")
    p.add_argument("--rebuild", action="store_true",
                   help="retrain the mini-zoo from scratch first (hfsoup zoo build code, ~6-10 min on 2 cores); "
                        "its weights equal the committed ones bit for bit only with the same torch version, CPU "
                        "capability (instruction set) and architecture, trained on one thread: the rebuild records "
                        "these in build.json and says when they differ from the committed zoo's")
    p.add_argument("--work", default="runs/mini_zoo", help="training folder for --rebuild (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate on the first N test images (default: 200 of digits' 360, to stay near two "
                        "minutes on 2 cores; 360 for all)")
    p.add_argument("--max-pairs", type=positive_int, default=None, help=argparse.SUPPRESS)  # quick runs (tests)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads for evaluation (default: torch's, all cores); --rebuild always trains "
                        "with one thread, one of the conditions for reproducing the committed mini-zoo")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    """Run the demo (after rebuilding the mini-zoo with ``--rebuild``); prints the story."""
    import torch

    from hfsoup.core.files import check_output
    from hfsoup.study.demo import rebuild, run_demo

    eval_threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(eval_threads)
    check_output(args.out, args.force)
    zoo = args.zoo
    if args.rebuild:
        dest = Path(args.work) / "packaged"
        rebuild(Path(args.work) / "train", dest, threads=1, progress=progress_enabled(args))
        torch.set_num_threads(eval_threads)
        zoo = dest
    kwargs = {} if args.limit is None else {"limit": args.limit}
    run_demo(args.out, zoo=zoo, force=args.force, progress=progress_enabled(args), max_pairs=args.max_pairs,
             **kwargs)


def build_rebuild_parser() -> argparse.ArgumentParser:
    """The parser of ``scripts/build_mini_zoo.py``."""
    p = argparse.ArgumentParser(description="rebuild the embedded mini-zoo")
    p.add_argument("--work", default="runs/mini_zoo", help="training folder (default: %(default)s)")
    p.add_argument("--dest", default=None, help="package folder (default: hfsoup/assets/mini_zoo)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="keep an existing --work folder and resume it")
    return p


def rebuild_main(argv: list[str] | None = None) -> int:
    """``python scripts/build_mini_zoo.py``: retrain and package the mini-zoo; prints a JSON summary."""
    from hfsoup.study.demo import rebuild

    args = build_rebuild_parser().parse_args(argv)
    res = rebuild(args.work, args.dest, threads=args.threads, fresh=not args.resume)
    sys.stdout.write(json.dumps(res.to_dict() if hasattr(res, "to_dict") else res) + "\n")
    return 0
