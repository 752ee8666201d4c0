"""The training loops of the zoo: the trunk (one long baseline run, checkpointed) and its branches (the trunk's
state at epoch E with scaled optimiser hyperparameters, early-stopped on val).

    python -m hfsoup.train trunk  --config zoo.yaml --out runs/zoo
    accelerate launch --multi_gpu --num_processes 8 -m hfsoup.train trunk --config zoo.yaml --out runs/zoo
    accelerate launch -m hfsoup.train branch --config zoo.yaml --out runs/zoo --epoch 200 --variant 2

Determinism: the data order and augmentation of epoch ``e`` come from ``epoch_plan(data_seed + e)`` (trunk:
``train.seed``; branch (E, k): ``config.branch_data_seed(E, k)``) and the full state (RNGs included) is saved, so a
resumed run sees exactly the batches of an uninterrupted one: on the CPU the final weights are bit-identical.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from hfsoup.zoo.config import ZooConfig
from hfsoup.zoo.layout import (branch_dir, branch_name, branch_state_path, require_trunk_state, trunk_dir,
                               trunk_name, trunk_state_epochs, trunk_state_path)
from hfsoup.zoo.trainer import RunResult, Trainer, base_metadata, epoch_bar, state_hash, write_config_copy


# -- trunk ---------------------------------------------------------------------------------------------------
def train_trunk(cfg: ZooConfig, out: str | Path, *, until_epoch: int | None = None,
                stop_after_epoch: int | None = None, cpu: bool | None = None, progress: bool = True,
                trainer: Trainer | None = None) -> RunResult:
    """Train (or resume) the trunk up to ``until_epoch`` (default: ``train.epochs``).

    Every ``checkpoint_interval`` epochs (and at the last one) the full state goes to ``state/trunk/eNNN`` and
    the weights, evaluated on val and test, to ``trunk/eNNN``. ``stop_after_epoch`` (absolute) stops as a crash
    would; a rerun resumes from the last saved state.
    """
    out = Path(out)
    t = trainer or Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=t.is_main)
    t.acc.wait_for_everyone()
    end = int(until_epoch or cfg.train.epochs)
    model, opt, sched = t.build()
    states = [e for e in trunk_state_epochs(out) if e <= end]
    start = 0
    if states:
        start = states[-1]
        t.load_state(trunk_state_path(out, start), model, opt, sched)
        t.print(f"trunk: resuming from epoch {start} ({trunk_state_path(out, start)})")
    model, opt = t.prepare(model, opt)
    interval = cfg.train.checkpoint_interval
    epoch, results, stopped = start, None, False
    bar = epoch_bar(range(start + 1, end + 1), t.progress, "trunk", initial=start, total=end)
    for epoch in bar:
        t0 = time.time()
        row = t.train_epoch(model, opt, cfg.train.seed + epoch)
        lr_used = opt.param_groups[0]["lr"]
        sched.step()
        row.update(epoch=epoch, lr=lr_used, seconds=time.time() - t0)
        if epoch % interval == 0 or epoch == end:
            results = {"val": t.evaluate(model, t.data.val), "test": t.evaluate(model, t.data.test)}
            row.update(val_accuracy=results["val"]["accuracy"], test_accuracy=results["test"]["accuracy"])
            t.save_state(trunk_state_path(out, epoch), model, opt, sched, epoch)
            prev = max(range(interval, epoch, interval), default=None)
            meta = dict(base_metadata(cfg), kind="trunk", epoch=epoch, data_seed=cfg.train.seed,
                        parent=f"trunk/{trunk_name(prev)}" if prev else "scratch", lr_at_epoch=sched.get_last_lr()[0])
            t.export(model, trunk_dir(out, epoch), meta, results,
                     description=f"Trunk checkpoint after {epoch} epochs of the hfsoup zoo recipe.")
            row["state_sha256"] = state_hash(t.unwrap(model))
        t.log("trunk", row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_accuracy']:.3f}")
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < end:
            t.print(f"trunk: stopping after epoch {epoch} (--stop-after-epoch)")
            stopped = True
            break
    return t.result("trunk", "trunk", epoch, stopped=stopped, state_sha256=state_hash(t.unwrap(model)),
                    val=results["val"] if results else None, test=results["test"] if results else None)


# -- branches ------------------------------------------------------------------------------------------------
def scale_optimizer(opt, sched, *, lr_scale: float, momentum_scale: float, wd_scale: float) -> None:
    """Scale the trunk's hyperparameters on every param group; the scheduler continues with scaled base lrs."""
    for g in opt.param_groups:
        g["lr"] *= lr_scale
        if "initial_lr" in g:
            g["initial_lr"] *= lr_scale
        g["momentum"] *= momentum_scale
        g["weight_decay"] *= wd_scale
    sched.base_lrs = [b * lr_scale for b in sched.base_lrs]
    # the scheduler reports the lr it last set: make it the scaled one (there is no public setter)
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def train_branch(cfg: ZooConfig, out: str | Path, epoch: int, variant: int, *, cpu: bool | None = None,
                 progress: bool = True, stop_after_epoch: int | None = None,
                 trainer: Trainer | None = None) -> RunResult:
    """Branch variant ``variant`` from the trunk state of ``epoch``; export the best-validation weights to
    ``branches/bNNN-vK``.

    The branch trains at most ``branches.max_epochs`` epochs and stops once val accuracy has not improved for
    ``branches.patience`` epochs (ties broken by val loss). Its state is saved every ``checkpoint_interval``
    epochs (and at ``stop_after_epoch``); a rerun resumes from it.
    """
    out = Path(out)
    scales = cfg.variant(variant)
    src = require_trunk_state(out, epoch)
    t = trainer or Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=t.is_main)
    model, opt, sched = t.build()
    name = branch_name(epoch, variant)
    bstate = branch_state_path(out, epoch, variant)
    data_seed = cfg.branch_data_seed(epoch, variant)
    ls, ms, ws = scales["lr_scale"], scales["momentum_scale"], scales["weight_decay_scale"]
    if bstate.is_file():
        st = t.load_state(bstate, model, opt, sched)
        done, best, history = st["epoch"], st["best"], st["history"]
        t.print(f"{name}: resuming after {done - epoch} epochs")
    else:
        t.load_state(src, model, opt, sched)
        scale_optimizer(opt, sched, lr_scale=ls, momentum_scale=ms, wd_scale=ws)
        done, history, best = epoch, [], None
    t.optimizer_view = opt
    model, opt = t.prepare(model, opt)
    b = cfg.branches
    end = epoch + b.max_epochs
    bar = epoch_bar(range(done + 1, end + 1), t.progress, name, initial=done - epoch, total=b.max_epochs)
    stopped_early = False
    for e in bar:
        if best is not None and e - 1 - best["epoch"] >= b.patience:
            stopped_early = True
            break
        t0 = time.time()
        row = t.train_epoch(model, opt, data_seed + e)
        lr_used = opt.param_groups[0]["lr"]
        sched.step()
        val = t.evaluate(model, t.data.val)
        row.update(epoch=e, lr=lr_used, val_accuracy=val["accuracy"], val_loss=val["loss"],
                   seconds=time.time() - t0)
        if best is None or (val["accuracy"], -val["loss"]) > (best["val"]["accuracy"], -best["val"]["loss"]):
            best = {"epoch": e, "val": val,
                    "state": {k: v.detach().cpu().clone() for k, v in t.unwrap(model).state_dict().items()}}
        history.append(row)
        t.log(name, row)
        if (e - epoch) % cfg.train.checkpoint_interval == 0 and e < end:
            t.save_state(bstate, model, opt, sched, e, extra={"best": best, "history": history})
        if stop_after_epoch is not None and e >= stop_after_epoch:
            t.print(f"{name}: stopping after epoch {e} (--stop-after-epoch)")
            t.save_state(bstate, model, opt, sched, e, extra={"best": best, "history": history})
            return t.result("branch", name, e, stopped=True)
    net = t.unwrap(model)
    keep = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best["state"])
    results = {"val": t.evaluate(model, t.data.val), "test": t.evaluate(model, t.data.test)}
    meta = dict(base_metadata(cfg, lr_scale=ls, momentum_scale=ms, wd_scale=ws), kind="branch", branch_epoch=epoch,
                variant=int(variant), data_seed=data_seed, parent=f"trunk/{trunk_name(epoch)}",
                best_epoch=best["epoch"], epochs_trained=len(history), stopped_early=stopped_early,
                max_epochs=b.max_epochs, patience=b.patience)
    t.export(model, branch_dir(out, epoch, variant), meta, results,
             description=f"Variant {variant} of the hfsoup zoo branched from trunk epoch {epoch} "
                         f"(lr x{ls}, momentum x{ms}, weight decay x{ws}); best validation weights.")
    h = state_hash(net)
    net.load_state_dict(keep)
    if t.is_main and bstate.exists():
        shutil.rmtree(bstate.parent, ignore_errors=True)
    t.acc.wait_for_everyone()
    last = history[-1]["epoch"] if history else done
    return t.result("branch", name, last, state_sha256=h, val=results["val"], test=results["test"],
                    best_epoch=best["epoch"])
