"""Building a zoo: every missing step, in order, resumable.

Steps: the trunk up to the last branch epoch (resuming from its last full state), then every branch (epoch,
variant) without an exported folder (a branch interrupted mid-way resumes from its own state). A rerun of a
finished zoo does nothing. The same process (one Accelerator, data decoded once) runs every step; the command
``hfsoup zoo build`` (or ``accelerate launch -m hfsoup.train build …`` to spread each step over several GPUs)
calls :func:`build`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hfsoup.zoo.config import ZooConfig
from hfsoup.zoo.layout import branch_dir, branch_name, is_exported, trunk_dir, trunk_state_path


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


def total_steps(cfg: ZooConfig) -> int:
    """The number of steps of a complete zoo: the trunk and every branch."""
    return len(cfg.branches.epochs) * len(cfg.branches.variants) + 1


@dataclass
class StepRecord:
    """One step that :func:`build` ran."""

    step: tuple
    seconds: float
    result: object  # hfsoup.zoo.trainer.RunResult

    def to_dict(self) -> dict:
        r = self.result
        d = {"step": list(self.step), "seconds": self.seconds}
        if self.step[0] == "branch":
            d.update(test_accuracy=r.test["accuracy"] if r.test else None, best_epoch=r.best_epoch)
        else:
            d.update(epoch=r.epoch)
        return d


@dataclass
class BuildResult:
    """The missing steps found (``steps``, as :func:`plan` lists them) and those run (``done``)."""

    out: Path
    steps: list[tuple]
    done: list[StepRecord] = field(default_factory=list)
    dry_run: bool = False
    total: int = 0  # steps of a complete zoo

    def to_dict(self) -> dict:
        return {"out": str(self.out), "steps": [list(s) for s in self.steps], "done": [d.to_dict() for d in self.done],
                "dry_run": self.dry_run, "total": self.total}


def _describe(step: tuple) -> str:
    return f"branch {branch_name(step[1], step[2])}" if step[0] == "branch" else f"trunk -> e{step[1]:03d}"


def build(cfg: ZooConfig, out: str | Path, *, cpu: bool | None = None, progress: bool = True,
          dry_run: bool = False, max_steps: int | None = None, log: Callable[[str], None] = print) -> BuildResult:
    """Run every missing step of the zoo in ``out`` (at most ``max_steps``; rerun to continue); ``dry_run`` only
    plans. ``log`` receives one line per step (main process only)."""
    out = Path(out)
    steps = plan(cfg, out)
    res = BuildResult(out=out, steps=steps, dry_run=dry_run, total=total_steps(cfg))
    log(f"zoo build: {len(steps)} of {res.total} steps to run in '{out}'")
    if dry_run or not steps:
        return res
    from hfsoup.zoo.loops import train_branch, train_trunk  # torch: not needed for planning
    from hfsoup.zoo.trainer import Trainer, write_config_copy

    trainer = Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=trainer.is_main)
    say = log if trainer.is_main else (lambda s: None)
    from tqdm.auto import tqdm

    bar = tqdm(steps, desc="zoo", unit="step", disable=not (progress and trainer.is_main))
    for i, step in enumerate(bar):
        if max_steps is not None and i >= max_steps:
            break
        t0 = time.time()
        bar.set_postfix_str(_describe(step))
        if step[0] == "trunk":
            r = train_trunk(cfg, out, until_epoch=step[1], trainer=trainer, progress=progress)
        else:
            r = train_branch(cfg, out, step[1], step[2], trainer=trainer, progress=progress)
        rec = StepRecord(step=step, seconds=time.time() - t0, result=r)
        res.done.append(rec)
        detail = (f": test acc {r.test['accuracy']:.4f} (best epoch {r.best_epoch})" if step[0] == "branch"
                  else "")
        with tqdm.external_write_mode():  # a line above the bar, not through it
            say(f"  {_describe(step)}: {rec.seconds:.1f}s{detail}")
    bar.close()
    return res
