"""``hfsoup zoo build``: every missing step of a zoo, in order, resumable.

Steps: the trunk up to the last branch epoch (resuming from its last full state), then every branch (epoch,
variant) without an exported folder (a branch interrupted mid-way resumes from its own state). A rerun of a
finished zoo does nothing. The same process (one Accelerator, data decoded once) runs every step; launch it with
``accelerate launch -m hfsoup.zoo.build …`` to spread each step over several GPUs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hfsoup.errors import HfSoupError
from hfsoup.zoo.train import (Trainer, branch_dir, is_exported, train_branch, train_trunk, trunk_dir, trunk_state_path,
                    write_config_copy)
from hfsoup.zoo.config import ZooConfig, load_config


def plan(cfg: ZooConfig, out: str | Path) -> list[tuple]:
    """The missing steps: ``("trunk", until_epoch)`` then ``("branch", epoch, variant)`` in order."""
    out = Path(out)
    steps: list[tuple] = []
    last = cfg.last_branch_epoch or cfg.train.epochs
    need_trunk = [e for e in cfg.branches.epochs if not trunk_state_path(out, e).is_file()]
    if not is_exported(trunk_dir(out, last)) or need_trunk:
        steps.append(("trunk", last))
    for e in cfg.branches.epochs:
        for k in sorted(cfg.branches.variants):
            if not is_exported(branch_dir(out, e, k)):
                steps.append(("branch", e, k))
    return steps


def build(cfg: ZooConfig, out: str | Path, *, cpu: bool | None = None, progress: bool = True,
          dry_run: bool = False, max_steps: int | None = None, log=print) -> dict:
    """Run every missing step; returns what was done with timings."""
    out = Path(out)
    steps = plan(cfg, out)
    total = len(cfg.branches.epochs) * len(cfg.branches.variants) + 1
    log(f"zoo build: {len(steps)} of {total} steps to run in '{out}'")
    if dry_run or not steps:
        return {"steps": [list(s) for s in steps], "done": [], "dry_run": dry_run}
    trainer = Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=trainer.acc.is_main_process)
    done = []
    from tqdm.auto import tqdm

    bar = tqdm(steps, desc="zoo", unit="step", disable=not (progress and trainer.acc.is_main_process))
    for i, step in enumerate(bar):
        if max_steps is not None and i >= max_steps:
            break
        t0 = time.time()
        bar.set_postfix_str(step[0] + (f" b{step[1]:03d}-v{step[2]}" if step[0] == "branch" else f" ->e{step[1]}"))
        if step[0] == "trunk":
            res = train_trunk(cfg, out, until_epoch=step[1], trainer=trainer, progress=progress)
        else:
            res = train_branch(cfg, out, step[1], step[2], trainer=trainer, progress=progress)
        dt = time.time() - t0
        done.append({"step": list(step), "seconds": dt,
                     **({"test_accuracy": res["test"]["accuracy"], "best_epoch": res["best_epoch"]}
                        if step[0] == "branch" else {"epoch": res["epoch"]})})
        if trainer.acc.is_main_process:
            tqdm.write(f"  {'/'.join(map(str, step))}: {dt:.1f}s "
                       + (f"test acc {res['test']['accuracy']:.4f} (best epoch {res['best_epoch']})"
                          if step[0] == "branch" else ""))
    return {"steps": [list(s) for s in steps], "done": done}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hfsoup.zoo.build", description="train every missing step of a zoo")
    add_build_arguments(p)
    args = p.parse_args(argv)
    return run_build(args)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="zoo config (hfsoup zoo init zoo.yaml)")
    p.add_argument("--out", required=True, help="zoo folder, e.g. runs/zoo")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    p.add_argument("--dry-run", action="store_true", help="list the missing steps only")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (rerun to continue)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")


def run_build(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config)
        res = build(cfg, args.out, cpu=True if args.cpu else None, progress=not getattr(args, "quiet", False), dry_run=args.dry_run,
                    max_steps=args.max_steps)
    except HfSoupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for s in res["steps"]:
            print(" ".join(map(str, s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
