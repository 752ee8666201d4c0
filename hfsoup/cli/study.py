"""``hfsoup study``: the pair study of a zoo (``run``, ``status``, ``report``, ``push``).

``hfsoup study run`` computes every pairwise soup of a set of models with its similarity into a resumable,
distributable table (see ``docs/study.md``); ``status`` reads its progress; ``report`` turns the table into the
paper's analyses and figures (``docs/study-report.md``); ``push`` publishes the tables as a Hub dataset. Torch-free at import: the library modules are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hfsoup.cli.options import add_deprecated_alias, add_precision_option, examples, positive_int, progress_enabled
from hfsoup.cli.output import console, print_json, table
from hfsoup.errors import HfSoupError

__all__ = ["register", "main", "cmd_run", "cmd_status", "cmd_report", "cmd_push"]


def register(subparsers) -> None:
    """Add ``hfsoup study {run,status,push}`` to the ``hfsoup`` sub-command parsers."""
    p = subparsers.add_parser(
        "study", help="the pair study: every pairwise soup of a zoo, its similarity, resumable and distributed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The pair study of 'When is model souping tasty?': the soup of every pair of models (α = 0.5 "
                    "or a list of α), its accuracy and loss gain over the better ingredient, and the pair's weight- "
                    "and output-space similarity, as a parquet table (OUT/pairs.parquet, OUT/models.parquet).",
        epilog=examples("""
            hfsoup study run ./zoo --out runs/study
            hfsoup study status runs/study
            hfsoup study report runs/study
            hfsoup study push runs/study my-org/hfsoup-zoo-pairs"""))
    sub = p.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    _add_run_parser(sub)
    _add_status_parser(sub)
    _add_report_parser(sub)
    _add_push_parser(sub)
    p.set_defaults(func=lambda args: p.print_help())


def _add_run_parser(sub) -> None:
    q = sub.add_parser(
        "run", help="soup every pair of models and record accuracy, gain and similarity (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Soup every unordered pair of the given models, (1 − α)·A + α·B for each α, evaluate the soup "
                    "on the test split (and on CIFAR-100-C at one severity), and record one row per (pair, α) with "
                    "the ingredients' and the soup's accuracy and loss, the gains, a collapse flag and the pair's "
                    "similarity (L2, cosine, KL, MSE, CKA of logits and features, disagreement, ensemble "
                    "accuracy). Each model is evaluated once (cached on disk in the hfsoup cache, reused across "
                    "runs). "
                    "Rows are appended as they finish: a rerun skips what is done, a killed run resumes exactly. "
                    "Under `accelerate launch` the pairs are split across processes by their content id; "
                    "--shard i/n does the same across independent jobs. MODELS: a zoo folder (zoo build / zoo "
                    "pull), a zoo manifest on the Hub (org/name, pinned to its commit shas), or two or more model "
                    "references (Hub id[@rev], local folders).",
        epilog=examples("""
            hfsoup study run ./zoo --out runs/study
            hfsoup study run my-org/hfsoup-zoo --out runs/study --epochs 150-300
            hfsoup study run ./m1 ./m2 ./m3 ./m4 --out runs/study
            hfsoup study run ./zoo --out runs/study --corrupted-dataset ./cifar100-c --severity 3
            hfsoup study run ./zoo --out runs/study --alphas 0,0.25,0.5,0.75,1 --pairs pairs.txt
            hfsoup study run ./zoo --out runs/study --shard 3/16
            hfsoup study run hfsoup/assets/mini_zoo --dataset sklearn:digits --out runs/mini
            accelerate launch --multi_gpu --num_processes 8 -m hfsoup.study run ./zoo --out runs/study"""))
    q.add_argument("models", nargs="+", metavar="MODELS",
                   help="a zoo folder, a Hub zoo manifest repo, or two or more model references")
    q.add_argument("--out", required=True, help="study folder (shards/, pairs.parquet, models.parquet, study.json)")
    g = q.add_argument_group("pairs")
    g.add_argument("--epochs", default=None,
                   help="keep models whose branch epoch is in this set, e.g. 150-300 or 50,100,150-200")
    g.add_argument("--variants", default=None, help="keep models of these variants, e.g. 1,2 or 1-3")
    g.add_argument("--pairs", metavar="FILE", default=None,
                   help="only these pairs: one 'modelA modelB' per line (names or references; # comments)")
    g.add_argument("--alphas", default="0.5",
                   help="weight of the second model, or a comma list for interpolation curves (default: 0.5)")
    g.add_argument("--kinds", default=None, choices=["branch", "trunk", "all"],
                   help="which models of a zoo take part (default: branch for a zoo or manifest, all for references)")
    g.add_argument("--integer-policy", default="mean", choices=["mean", "max", "first"],
                   help="how integer buffers (num_batches_tracked) are combined (default: %(default)s)")
    g = q.add_argument_group("data")
    g.add_argument("--dataset", default="uoft-cs/cifar100",
                   help="Hub dataset id, local parquet folder, save_to_disk folder or sklearn:digits "
                        "(default: %(default)s); its test split is used")
    g.add_argument("--dataset-revision", default=None, help="dataset revision (branch, tag or commit)")
    g.add_argument("--image-column", default=None, help="image column (default: img or image)")
    g.add_argument("--label-column", default=None, help="label column (default: fine_label or label)")
    g.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate on the first N test images only (quick runs)")
    g.add_argument("--corrupted-dataset", default=None,
                   help="CIFAR-100-C parquet dataset (Hub id or folder from `hfsoup data cifar100c`)")
    g.add_argument("--corrupted-revision", default=None, help="revision of the corrupted dataset")
    g.add_argument("--severity", type=int, default=3, help="CIFAR-100-C severity 1-5 (default: %(default)s)")
    g.add_argument("--corruptions", default="all",
                   help="comma list of corruptions, 'common' (15) or 'all' (19) (default: %(default)s)")
    g = q.add_argument_group("execution")
    g.add_argument("--batch-size", type=positive_int, default=500, help="evaluation batch size (default: %(default)s)")
    g.add_argument("--device", default=None, help="torch device (default: the Accelerate device, cuda if available)")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="compute only the rows of shard I of N (0-based; for job arrays without a launcher)")
    g.add_argument("--retry-failed", action="store_true", help="recompute rows recorded as failed")
    g.add_argument("--no-merge", action="store_true",
                   help="do not write pairs.parquet/models.parquet at the end (merge later with `study status "
                        "--merge`)")
    g.add_argument("--cache-dir", default=None,
                   help="per-model cache (logits, features, scores; reused across runs) (default: $HFSOUP_CACHE/study)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the forward pass: compiled once per batch shape, faster soups; "
                        "the numbers then differ from `hfsoup mix` in the last bits (recorded as the precision)")
    add_precision_option(g)
    g.add_argument("--allow-pickle", action="store_true",
                   help="accept pytorch_model.bin when no safetensors exist (loaded with weights_only=True)")
    g.add_argument("--token", default=None, help=argparse.SUPPRESS)
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")
    g.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.set_defaults(func=cmd_run)


def _add_status_parser(sub) -> None:
    q = sub.add_parser(
        "status", help="done / remaining / failed rows of a study folder, and throughput",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read the shards of a study folder (while it runs, or after) and print the rows done, "
                    "remaining and failed, per shard, and the throughput. --merge (re)writes pairs.parquet and "
                    "models.parquet from the shards (after --shard jobs, or a run with --no-merge).",
        epilog=examples("""
            hfsoup study status runs/study
            hfsoup study status runs/study --json
            hfsoup study status runs/study --merge"""))
    q.add_argument("out", metavar="OUT", help="study folder (the --out of `hfsoup study run`)")
    q.add_argument("--merge", action="store_true", help="write pairs.parquet and models.parquet from the shards")
    q.add_argument("--failures", type=int, default=10, help="failed rows to list (default: %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.set_defaults(func=cmd_status)


def _add_report_parser(sub) -> None:
    q = sub.add_parser(
        "report", help="the paper's analyses of a study table: report.md, report.html, figures, summary.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Analyse the table of `hfsoup study run` as the paper does — the distribution of soup gain, "
                    "gain vs shared epochs, similarity vs gain (Spearman) and as a predictor of a positive soup "
                    "(AUROC with a bootstrap interval, against shared epochs alone), transitivity, the MDS landscape, "
                    "clean vs corrupted gain, soup vs ensemble — beside the paper's figures, and write report.md, "
                    "a self-contained report.html (no network needed), figures/*.png (and .svg) and summary.json "
                    "(every number the report prints). An analysis the table cannot support says why.",
        epilog=examples("""
            hfsoup study report runs/study
            hfsoup study report runs/study --out ./study-report --force --no-svg
            hfsoup study report runs/study --json
            hfsoup study report my-org/hfsoup-zoo-pairs --out ./zoo-report"""))
    q.add_argument("study", metavar="STUDY",
                   help="study folder (the --out of `hfsoup study run`), or the Hub dataset id of a pushed study")
    q.add_argument("--out", default=None,
                   help="report folder (default: STUDY/report; for a Hub dataset: ./NAME-report)")
    q.add_argument("--dataset-revision", default=None, help="revision of the Hub dataset (branch, tag or commit)")
    add_deprecated_alias(q, "--revision", "--dataset-revision", dest="dataset_revision")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--force", action="store_true", help="replace an existing report folder")
    q.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of MDS (default: %(default)s)")
    q.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples of the AUROC intervals (default: %(default)s)")
    q.add_argument("--no-svg", action="store_true", help="PNG figures only")
    q.add_argument("--json", action="store_true", help="print the summary (every number) as one JSON document")
    q.set_defaults(func=cmd_report)


def _add_push_parser(sub) -> None:
    q = sub.add_parser(
        "push", help="publish a study's tables as a Hub dataset (with a dataset card)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Upload OUT/pairs.parquet, OUT/models.parquet, OUT/study.json and a generated dataset card "
                    "(README.md, configs 'pairs' and 'models') to a Hub dataset repo in one commit.",
        epilog=examples("""
            hfsoup study push runs/study my-org/hfsoup-zoo-pairs
            hfsoup study push runs/study my-org/hfsoup-zoo-pairs --private --create-pr"""))
    q.add_argument("out", metavar="OUT", help="study folder (the --out of `hfsoup study run`)")
    q.add_argument("repo_id", metavar="REPO", help="Hub dataset repo id")
    q.add_argument("--private", action="store_true", help="create the dataset repo as private")
    q.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    q.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    q.add_argument("--token", default=None, help=argparse.SUPPRESS)
    q.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    q.set_defaults(func=cmd_push)


# -------------------------------------------------------------------------------------------------- commands
def _alphas(text: str) -> list[float]:
    from hfsoup.recipes.mix import parse_alphas

    return parse_alphas(text)


def cmd_run(args) -> None:
    """``hfsoup study run``: plan, compute this process's share, merge; prints a summary (or ``--json``)."""
    from hfsoup.study.run import StudyConfig, run_study
    from hfsoup.study.store import parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    if args.severity is not None and not 1 <= args.severity <= 5:
        raise HfSoupError(f"--severity takes one level in 1-5, got {args.severity}")
    config = StudyConfig(
        sources=list(args.models), out=Path(args.out), dataset=args.dataset, dataset_revision=args.dataset_revision,
        image_column=args.image_column, label_column=args.label_column, limit=args.limit,
        corrupted_dataset=args.corrupted_dataset, corrupted_revision=args.corrupted_revision,
        corruptions=args.corruptions, severity=args.severity, alphas=_alphas(args.alphas), kinds=args.kinds,
        epochs=args.epochs, variants=args.variants, pairs_file=Path(args.pairs) if args.pairs else None,
        integer_policy=args.integer_policy, batch_size=args.batch_size, device=args.device, shard=shard,
        retry_failed=args.retry_failed, merge=not args.no_merge,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, compile=args.compile, precision=args.precision,
        allow_pickle=args.allow_pickle, token=args.token, progress=progress_enabled(args))
    result = run_study(config)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return  # under accelerate launch / torchrun only the main process reports
    if args.json:
        print_json(result.to_dict())
        return
    rate = result.rows_per_second
    line = (f"{result.computed} soups computed ({result.failed} failed) in {result.seconds:.1f}s"
            + (f" ({rate:.3g} soups/s)" if rate else "")
            + f"; {result.done_before} of {result.total_rows} rows were done before")
    if result.shard[1] > 1:
        line += f"; shard {result.shard[0]}/{result.shard[1]}"
    console().print(line)
    if result.merged:
        console().print(f"{result.pairs_path}: {result.table_rows} rows ({result.table_failed} failed); "
                        f"{result.models_path}")
    elif result.shard[1] > 1 and not args.no_merge:
        console().print(f"when every shard is done: hfsoup study status {result.out} --merge")


def cmd_status(args) -> None:
    """``hfsoup study status``: counts per shard, throughput and failures; ``--merge`` writes the tables."""
    from hfsoup.study.table import merge_study, study_status

    out = Path(args.out)
    st = study_status(out)
    merged = merge_study(out) if args.merge else None
    doc = {"out": str(out), "done": st.done, "failed": st.failed, "total": st.total, "remaining": st.remaining,
           "per_shard": st.per_shard, "throughput": st.throughput, "ignored_lines": st.ignored_lines,
           "eta_seconds": st.remaining / st.throughput if st.throughput and st.remaining is not None else None,
           "failures": [{"row_id": r, "error": e} for r, e in st.failures],
           "merged": merged.to_dict() if merged else None}
    if args.json:
        print_json(doc)
        return
    rows = [["done", st.done], ["failed", st.failed], ["remaining", "" if st.remaining is None else st.remaining],
            ["total (latest plan)", "" if st.total is None else st.total],
            ["throughput", "" if st.throughput is None else f"{st.throughput:.3g} soups/s"]]
    if st.throughput and st.remaining:
        rows.append(["ETA at that rate", _duration(st.remaining / st.throughput)])
    table(f"study {out}", ["", "value"], rows)
    if st.per_shard:
        table("shards", ["shard", "rows"], sorted(st.per_shard.items()))
    if st.failures:
        shown = st.failures[:max(0, args.failures)]
        table(f"failed rows ({len(st.failures)})", ["row id", "error"], shown)
    if merged:
        console().print(f"merged {merged.rows} rows: {merged.pairs_path}"
                        + (f", {merged.models_path}" if merged.models_path else ""))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def cmd_report(args) -> None:
    """``hfsoup study report``: write the report folder; print the headline findings beside the paper's."""
    from hfsoup.study.report import write_report

    if args.n_boot < 1:
        raise HfSoupError(f"--n-boot takes a positive number of resamples, got {args.n_boot}")
    study, out = Path(args.study), args.out
    if not study.exists() and "/" in args.study and not args.study.startswith((".", "/", "~")):
        from hfsoup.study.publish import fetch_study

        # the tables come from the HF cache, the report is written where the user is, not into the cache
        out = out or f"{args.study.rstrip('/').split('/')[-1]}-report"
        study = fetch_study(args.study, revision=args.dataset_revision, token=args.token)
    elif not study.is_dir():
        raise HfSoupError(f"'{args.study}' is not a study folder: pass the --out of `hfsoup study run`, or the Hub "
                          f"dataset id (org/name) of a pushed study")
    result = write_report(study, out, force=args.force, seed=args.seed, n_boot=args.n_boot,
                          svg=not args.no_svg)
    if args.json:
        print_json(result.summary)
        return
    table(f"study {args.study}: headline findings", ["finding", "this study", "paper"],
          [[r["finding"], r["ours"], r["paper"]] for r in result.headline])
    for name, reason in sorted(result.skipped.items()):
        console().print(f"skipped {name}: {reason}")
    console().print(f"report: {result.report_html} ({result.report_md}, {len(result.figures)} figures, "
                    f"{result.summary_json})")


def cmd_push(args) -> None:
    """``hfsoup study push``: the tables and a dataset card to a Hub dataset repo."""
    from hfsoup.study.publish import push_study

    result = push_study(Path(args.out), args.repo_id, private=args.private or None, create_pr=args.create_pr,
                        revision=args.revision, token=args.token)
    if args.json:
        print_json(result.to_dict())
        return
    console().print(f"pushed {', '.join(result.files)} to {result.url}"
                    + (f" (pull request: {result.pr_url})" if result.pr_url else ""))


def main(argv: list[str] | None = None) -> int:
    """``python -m hfsoup.study …`` (and ``accelerate launch -m hfsoup.study …``): ``hfsoup study …``."""
    from hfsoup.cli import main as hfsoup_main

    return hfsoup_main(["study", *(sys.argv[1:] if argv is None else list(argv))])
