"""The SWA baseline of the paper (Appendix A.4, Table 6): stochastic weight averaging from a trunk checkpoint.

    python -m hfsoup.train swa --config zoo.yaml --out runs/zoo --epoch 220
    accelerate launch -m hfsoup.train swa --config zoo.yaml --out runs/zoo --epoch 220

From the trunk's full state at epoch E (weights, momentum buffers, RNG) SGD goes on with the trunk's momentum,
weight decay and data order (epoch ``e`` uses the plan of ``train.seed + e``, as the trunk would), its learning
rate driven by :class:`torch.optim.swa_utils.SWALR` (annealed from the trunk's lr at E to ``swa.lr`` over
``swa.anneal_epochs`` epochs, then constant). After each of the ``swa.epochs`` epochs the weights join a running
average (:class:`~torch.optim.swa_utils.AveragedModel`, parameters only). BatchNorm statistics of the average are
then recomputed with :func:`~torch.optim.swa_utils.update_bn` on the training split (one pass over train-main, with
the training augmentation unless ``swa.bn_augment`` is false), the result is evaluated on val and test and exported
in hfsoup's Hub format with ``kind: swa`` metadata.

Layout::

    runs/zoo/swa/eNNN/                 the SWA model started at trunk epoch NNN
    runs/zoo/state/swa/eNNN/state.pt   state after every SWA epoch (model, optimiser, SWALR, RNG, running average);
                                       removed once exported. A killed run resumes from it (bit-identical on CPU).
    runs/zoo/logs/swa-eNNN.jsonl       one line per epoch

Several processes form one run as for the trunk and branches (DDP over the global batch, only the main process
writes); every rank recomputes the BN statistics over the whole of train-main and rank 0's are broadcast.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from hfsoup.errors import HfSoupError
from hfsoup.zoo.augment import epoch_plan, plan_batch
from hfsoup.zoo.config import ConfigError, ZooConfig
from hfsoup.zoo.layout import (SCORE_KEYS, WEIGHTS_NAME, is_exported, read_model_metadata, require_trunk_state,
                               swa_dir, swa_name, swa_state_path, trunk_dir, trunk_name)
from hfsoup.zoo.trainer import RunResult, Trainer, base_metadata, epoch_bar, state_hash, write_config_copy


def bn_seed(cfg: ZooConfig, start_epoch: int) -> int:
    """Seed of the augmentation plan of the BN pass: the trunk's data seed of the epoch after the last SWA epoch."""
    return cfg.train.seed + int(start_epoch) + cfg.swa.epochs + 1


def bn_batches(t: Trainer, seed: int, augment: bool = True):
    """Normalised batches (``train.batch_size``) covering all of the training split once, on the trainer's device:
    shuffled and augmented by ``epoch_plan(seed)``, or in dataset order without augmentation."""
    n, B = len(t.data.train), t.cfg.train.batch_size
    plan = epoch_plan(n, seed, t.cfg) if augment else None
    order = plan.perm if augment else torch.arange(n)
    for start in range(0, n, B):
        idx = order[start:start + B]
        x = plan_batch(plan, t.train_x, idx, t.device) if augment else t.train_x[idx.to(t.device)]
        yield t.normalize(x)


def _settings(cfg: ZooConfig, start: int) -> dict:
    w = cfg.swa
    return {"start_epoch": int(start), "epochs": w.epochs, "lr": w.lr, "anneal_epochs": w.anneal_epochs,
            "anneal_strategy": w.anneal_strategy, "bn_augment": w.bn_augment}


def _parent_scores(folder: Path) -> dict:
    """val/test accuracy and loss of the exported trunk checkpoint the run started from (when there is one)."""
    if not is_exported(folder):
        return {}
    try:
        m = read_model_metadata(folder / WEIGHTS_NAME)
    except HfSoupError:  # scores of the parent are informative only
        return {}
    return {f"parent_{k}": m[k] for k in SCORE_KEYS if k in m}


def train_swa(cfg: ZooConfig, out: str | Path, epoch: int | None = None, *, cpu: bool | None = None,
              progress: bool = True, stop_after_epoch: int | None = None, trainer: Trainer | None = None,
              callback=None) -> RunResult:
    """SWA from the trunk state of ``epoch`` (default ``swa.start_epoch``); export to ``out/swa/eNNN``.

    ``stop_after_epoch`` (absolute epoch) stops as a crash would; a rerun resumes. ``callback(epoch, model)`` is
    called after each SWA epoch with the (unwrapped) model whose weights were just averaged (tests record them).
    """
    from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

    out = Path(out)
    w = cfg.swa
    start = int(epoch if epoch is not None else w.start_epoch)
    src = require_trunk_state(out, start)
    t = trainer or Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=t.is_main)
    name = f"swa-{swa_name(start)}"
    state_path = swa_state_path(out, start)
    settings = _settings(cfg, start)
    end = start + w.epochs
    model, opt, sched = t.build()
    if state_path.is_file():
        # SWALR first (it writes swa_lr into the param groups), then the saved optimiser/scheduler state over it
        swa_sched = SWALR(opt, swa_lr=0.0, anneal_epochs=w.anneal_epochs, anneal_strategy=w.anneal_strategy)
        st = t.load_state(state_path, model, opt, swa_sched)
        if st.get("swa") != settings:
            raise ConfigError(f"'{state_path}' was written with other SWA settings ({st.get('swa')}): "
                              f"remove it or restore the config", path=state_path)
        done, history, lr_start = st["epoch"], st["history"], st["lr_at_start"]
        swa_model = AveragedModel(model)
        swa_model.load_state_dict(st["swa_model"])
        t.print(f"{name}: resuming after {done - start} SWA epochs")
    else:
        t.load_state(src, model, opt, sched)  # trunk weights, momentum buffers, lr of epoch start + 1, RNG
        lr_start = opt.param_groups[0]["lr"]
        swa_lr = w.lr if w.lr is not None else lr_start
        swa_sched = SWALR(opt, swa_lr=swa_lr, anneal_epochs=w.anneal_epochs, anneal_strategy=w.anneal_strategy)
        swa_model = AveragedModel(model)
        done, history = start, []
    swa_lr = opt.param_groups[0]["swa_lr"]
    t.swa_scheduler = swa_sched  # for tests
    model, opt = t.prepare(model, opt)
    net = t.unwrap(model)
    data_seed = cfg.train.seed
    bar = epoch_bar(range(done + 1, end + 1), t.progress, name, initial=done - start, total=w.epochs)
    for e in bar:
        t0 = time.time()
        row = t.train_epoch(model, opt, data_seed + e)
        lr_used = opt.param_groups[0]["lr"]
        swa_model.update_parameters(net)
        swa_sched.step()
        if callback is not None:
            callback(e, net)
        row.update(epoch=e, lr=lr_used, n_averaged=int(swa_model.n_averaged), seconds=time.time() - t0)
        history.append(row)
        t.log(name, row)
        t.save_state(state_path, model, opt, swa_sched, e,
                     extra={"swa_model": {k: v.detach().cpu().clone() for k, v in swa_model.state_dict().items()},
                            "history": history, "swa": settings, "lr_at_start": lr_start})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", lr=f"{lr_used:.4f}")
        if stop_after_epoch is not None and e >= stop_after_epoch and e < end:
            t.print(f"{name}: stopping after epoch {e} (--stop-after-epoch)")
            return t.result("swa", name, e, stopped=True)
    avg = swa_model.module
    seed = bn_seed(cfg, start)
    update_bn(bn_batches(t, seed, augment=w.bn_augment), avg)
    t.broadcast_buffers(avg)  # identical BN statistics on every rank
    results = {"val": t.evaluate(avg, t.data.val), "test": t.evaluate(avg, t.data.test)}
    meta = dict(base_metadata(cfg), kind="swa", swa_start_epoch=start, epoch=end, swa_lr=swa_lr,
                swa_anneal_epochs=w.anneal_epochs, swa_anneal_strategy=w.anneal_strategy, swa_epochs=w.epochs,
                epochs_averaged=int(swa_model.n_averaged), lr_at_start=lr_start, data_seed=data_seed,
                bn_update=f"update_bn on {cfg.data.train_split}" + (" (augmented)" if w.bn_augment else ""),
                **({"bn_seed": seed} if w.bn_augment else {}), parent=f"trunk/{trunk_name(start)}",
                **_parent_scores(trunk_dir(out, start)))
    t.export(avg, swa_dir(out, start), meta, results,
             description=f"SWA baseline of the hfsoup zoo: {w.epochs} epochs of SGD from trunk epoch {start} "
                         f"(SWALR to lr {swa_lr:g}), weights averaged once per epoch, BN statistics recomputed.")
    h = state_hash(avg)
    if t.is_main and state_path.exists():
        shutil.rmtree(state_path.parent, ignore_errors=True)
    t.acc.wait_for_everyone()
    return t.result("swa", name, end, state_sha256=h, val=results["val"], test=results["test"],
                    epochs_averaged=int(swa_model.n_averaged))
