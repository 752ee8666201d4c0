"""Training the zoo with Accelerate: the trunk (baseline run, checkpointed) and its branches.

    python -m hfsoup.train trunk  --config zoo.yaml --out runs/zoo
    accelerate launch --multi_gpu --num_processes 8 -m hfsoup.train trunk --config zoo.yaml --out runs/zoo
    accelerate launch -m hfsoup.train branch --config zoo.yaml --out runs/zoo --epoch 200 --variant 2
    python -m hfsoup.train swa --config zoo.yaml --out runs/zoo --epoch 220       (SWA baseline: hfsoup/swa.py)

Layout of a zoo folder (a contract with ``hfsoup zoo push``)::

    runs/zoo/zoo.yaml                      the config used (copied on the first run)
    runs/zoo/trunk/eNNN/                   trunk weights after NNN epochs, hfsoup Hub format + metadata
    runs/zoo/branches/bNNN-vK/             best-validation weights of variant K branched at trunk epoch NNN
    runs/zoo/state/trunk/eNNN/state.pt     full training state (model, optimiser, scheduler, RNG, epoch)
    runs/zoo/state/branches/bNNN-vK/state.pt   the latest state of a running branch (removed when it is done)
    runs/zoo/logs/*.jsonl                  one line per epoch

Determinism: the data order and augmentation of epoch ``e`` come from a generator seeded with ``data_seed + e``
(on the CPU, then moved to the device), so a resumed run sees exactly the batches of an uninterrupted one; on
the CPU the final weights are bit-identical. Several processes form one run: the global batch is split across
ranks, DDP averages gradients, metrics are reduced across ranks and only the main process writes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hfsoup.errors import HfSoupError
from hfsoup.zoo.config import ZooConfig, load_config

STATE_NAME = "state.pt"


# -- layout --------------------------------------------------------------------------------------------------
def trunk_dir(out: Path, epoch: int) -> Path:
    return Path(out) / "trunk" / f"e{epoch:03d}"


def branch_name(epoch: int, variant: int) -> str:
    return f"b{epoch:03d}-v{variant}"


def branch_dir(out: Path, epoch: int, variant: int) -> Path:
    return Path(out) / "branches" / branch_name(epoch, variant)


def trunk_state_path(out: Path, epoch: int) -> Path:
    return Path(out) / "state" / "trunk" / f"e{epoch:03d}" / STATE_NAME


def require_trunk_state(out: Path, epoch: int) -> Path:
    """The trunk's full state at ``epoch`` (what branches and SWA start from), or a one-line error."""
    src = trunk_state_path(out, epoch)
    if not src.is_file():
        raise HfSoupError(f"no trunk state for epoch {epoch} at '{src}': train the trunk first "
                          f"(hfsoup.train trunk --until-epoch {epoch})")
    return src


def branch_state_path(out: Path, epoch: int, variant: int) -> Path:
    return Path(out) / "state" / "branches" / branch_name(epoch, variant) / STATE_NAME


def trunk_state_epochs(out: Path) -> list[int]:
    root = Path(out) / "state" / "trunk"
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir()
                  if p.name.startswith("e") and p.name[1:].isdigit() and (p / STATE_NAME).is_file())


def is_exported(folder: Path) -> bool:
    return (Path(folder) / "model.safetensors").is_file() and (Path(folder) / "config.json").is_file()


# -- helpers -------------------------------------------------------------------------------------------------
def library_versions() -> dict:
    import accelerate
    import timm

    from hfsoup import __version__

    import datasets

    return {"hfsoup": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__}


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def state_hash(model) -> str:
    """SHA-256 of a model's state dict (names, dtypes, bytes): the same on every rank of a coherent run.
    ``model`` may also be a state dict (e.g. ``safetensors.torch.load_file`` of an exported folder)."""
    import hashlib

    sd = model if isinstance(model, dict) else model.state_dict()
    h = hashlib.sha256()
    for k, v in sorted(sd.items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if v.numel() else b"")
    return h.hexdigest()


def write_config_copy(cfg: ZooConfig, out: Path, *, is_main: bool) -> None:
    """Copy the config into ``out/zoo.yaml``; refuse a zoo folder trained with another recipe."""
    from hfsoup.zoo.config import dump_config, load_config as _load

    path = Path(out) / "zoo.yaml"
    if path.exists():
        old = _load(path)
        if old.recipe_hash() != cfg.recipe_hash():
            raise HfSoupError(f"'{out}' holds a zoo trained with a different recipe ({path}): use another --out")
        if old.to_dict() == cfg.to_dict() or not is_main:
            return
    if is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".zoo.yaml.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(f"# recipe sha256: {cfg.recipe_hash()}\n" + dump_config(cfg), encoding="utf-8")
        os.replace(tmp, path)


@dataclass
class Data:
    train: object
    val: object
    test: object


def load_data(cfg: ZooConfig, progress: bool = False) -> Data:
    from hfsoup.data.images import load_image_data

    d = cfg.data
    kw = dict(revision=d.revision, image_column=d.image_column, label_column=d.label_column, progress=progress)
    return Data(train=load_image_data(d.dataset, d.train_split, limit=d.limit, **kw),
                val=load_image_data(d.dataset, d.val_split, **kw),
                test=load_image_data(d.dataset, d.test_split, **kw))


def epoch_plan(n: int, epoch_seed: int, cfg: ZooConfig) -> dict:
    """Permutation, crop offsets and flips of one epoch, from one CPU generator: identical on every rank and
    every device, whatever the number of processes."""
    g = torch.Generator().manual_seed(int(epoch_seed))
    perm = torch.randperm(n, generator=g)
    pad = cfg.augment.padding if cfg.augment.random_crop else 0
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g) if pad else torch.zeros(n, 2, dtype=torch.long)
    flips = (torch.rand(n, generator=g) < 0.5) if cfg.augment.hflip else torch.zeros(n, dtype=torch.bool)
    return {"perm": perm, "offsets": offsets, "flips": flips, "pad": pad}


def augment_batch(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop (zero padding + per-image offsets, by indexing) and horizontal flip (torch.where) of a uint8
    batch, on its device."""
    b, c, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, 0, None] + torch.arange(h, device=x.device)[None]  # b x h
        cols = offsets[:, 1, None] + torch.arange(w, device=x.device)[None]  # b x w
        xp = xp.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad))
        x = xp.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
    if flips.any():
        x = torch.where(flips.view(b, 1, 1, 1), x.flip(3), x)
    return x


class Trainer:
    """One process of a (possibly multi-process) training run."""

    def __init__(self, cfg: ZooConfig, out: str | Path, *, cpu: bool | None = None, progress: bool = True,
                 data: Data | None = None):
        from accelerate import Accelerator

        self.cfg = cfg
        self.out = Path(out)
        mp = "bf16" if cfg.train.precision == "bf16" else "no"
        kwargs = {}
        if cpu is not None:
            kwargs["cpu"] = cpu
        self.acc = Accelerator(mixed_precision=mp, **kwargs)
        self.device = self.acc.device
        self.progress = progress and self.acc.is_main_process
        self.data = data or load_data(cfg, progress=self.progress)
        mean, std = self._norm_stats()
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        # uint8 images live on the device: augmentation and normalisation happen there, in batches
        self.train_x = self.data.train.images.to(self.device)
        self.train_y = self.data.train.labels.to(self.device)
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"

    # -- model / optimiser ---------------------------------------------------------------------------------
    def _norm_stats(self):
        import timm

        from hfsoup.core import models  # noqa: F401

        cfg = timm.models.get_pretrained_cfg(self.cfg.train.architecture)
        cfg = cfg.to_dict() if cfg is not None else {}
        return cfg.get("mean", (0.5071, 0.4867, 0.4408)), cfg.get("std", (0.2675, 0.2565, 0.2761))

    def build(self, *, lr_scale=1.0, momentum_scale=1.0, wd_scale=1.0):
        import timm

        from hfsoup.core import models  # noqa: F401

        o = self.cfg.optim
        torch.manual_seed(self.cfg.train.seed)
        model = timm.create_model(self.cfg.train.architecture, num_classes=self.cfg.data.num_classes)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=o.lr * lr_scale, momentum=o.momentum * momentum_scale,
                              weight_decay=o.weight_decay * wd_scale, nesterov=o.nesterov)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=o.t_max, eta_min=o.eta_min)
        return model, opt, sched

    def prepare(self, model, opt):
        model, opt = self.acc.prepare(model, opt)
        if self.cfg.train.compile:
            model = torch.compile(model)
        return model, opt

    # -- one epoch -------------------------------------------------------------------------------------------
    def _normalize(self, x_uint8):
        x = (x_uint8.float().div_(255.0) - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_epoch(self, model, opt, epoch_seed: int) -> dict:
        acc, B = self.acc, self.cfg.train.batch_size
        n = len(self.data.train)
        plan = epoch_plan(n, epoch_seed, self.cfg)
        world, rank = acc.num_processes, acc.process_index
        model.train()
        tot = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        for start in range(0, n, B):
            idx = plan["perm"][start:start + B]
            if len(idx) < world:  # a last batch too small to give every rank an image
                break
            mine = idx[rank::world]
            x = self.train_x[mine.to(self.device)]
            y = self.train_y[mine.to(self.device)]
            x = augment_batch(x, plan["offsets"][mine].to(self.device), plan["flips"][mine].to(self.device),
                              plan["pad"])
            x = self._normalize(x)
            with acc.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            with torch.no_grad():
                tot += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                    torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])
        tot = acc.reduce(tot, reduction="sum")
        if world > 1:  # DDP syncs buffers at each forward: make BN statistics identical after the last one
            import torch.distributed as dist

            for buf in acc.unwrap_model(model).buffers():
                dist.broadcast(buf.data, src=0)
        return {"train_loss": (tot[0] / tot[2]).item(), "train_accuracy": (tot[1] / tot[2]).item()}

    @torch.no_grad()
    def evaluate(self, model, data) -> dict:
        """Accuracy and loss of ``model`` on ``data``, the images shared out across ranks and summed back."""
        acc = self.acc
        net = acc.unwrap_model(model)
        was_training = net.training
        net.eval()
        world, rank = acc.num_processes, acc.process_index
        idx = torch.arange(rank, len(data), world)
        tot = torch.zeros(3, dtype=torch.float64, device=self.device)
        bs = self.cfg.train.eval_batch_size
        for start in range(0, len(idx), bs):
            j = idx[start:start + bs]
            x = self._normalize(data.images[j].to(self.device))
            y = data.labels[j].to(self.device)
            with acc.autocast():
                logits = net(x).float()
            tot += torch.stack([F.cross_entropy(logits.double(), y, reduction="sum"),
                                (logits.argmax(1) == y).sum().double(),
                                torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])
        tot = acc.reduce(tot, reduction="sum")
        net.train(was_training)
        return {"accuracy": (tot[1] / tot[2]).item(), "loss": (tot[0] / tot[2]).item()}

    # -- state -----------------------------------------------------------------------------------------------
    def save_state(self, path: Path, model, opt, sched, epoch: int, extra: dict | None = None) -> None:
        if self.acc.is_main_process:
            import random

            import numpy as np

            atomic_torch_save({
                "epoch": epoch, "model": self.acc.unwrap_model(model).state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "recipe_sha256": self.cfg.recipe_hash(), **(extra or {})}, path)
        self.acc.wait_for_everyone()

    def load_state(self, path: Path, model, opt, sched) -> dict:
        import random

        import numpy as np

        st = torch.load(path, map_location="cpu", weights_only=False)
        if st.get("recipe_sha256") not in (None, self.cfg.recipe_hash()):
            raise HfSoupError(f"'{path}' was written with a different training recipe")
        self.acc.unwrap_model(model).load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        rng = st.get("rng") or {}
        if rng.get("torch") is not None:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
        return st

    # -- export ----------------------------------------------------------------------------------------------
    def export(self, model, folder: Path, metadata: dict, results: dict, description: str,
               state_dict: dict | None = None) -> None:
        from hfsoup.hub.format import save_model

        net = self.acc.unwrap_model(model)
        if self.acc.is_main_process:
            import copy

            cpu_model = copy.deepcopy(net).cpu().to(memory_format=torch.contiguous_format)
            if state_dict is not None:
                cpu_model.load_state_dict(state_dict)
            d = self.cfg.data
            meta = {
                "dataset": d.dataset, "dataset_revision": d.revision or "", "architecture": self.cfg.train.architecture,
                "library_versions": library_versions(), "recipe_sha256": self.cfg.recipe_hash(),
                "num_processes": self.acc.num_processes, "precision": self.cfg.train.precision,
                **metadata,
                "val_accuracy": results["val"]["accuracy"], "val_loss": results["val"]["loss"],
                "test_accuracy": results["test"]["accuracy"], "test_loss": results["test"]["loss"],
            }
            rows = [{"dataset": d.dataset, "split": split, "accuracy": r["accuracy"], "loss": r["loss"],
                     "revision": d.revision} for split, r in (("val", results["val"]), ("test", results["test"]))]
            datasets_ = [d.dataset] if "/" in d.dataset and not Path(d.dataset).exists() else None
            save_model(cpu_model, folder, metadata=meta,
                       results=rows, description=description, datasets=datasets_,
                       label_names=self.data.test.class_names, tags=["hfsoup-zoo", metadata.get("kind", "")],
                       force=True)
        self.acc.wait_for_everyone()

    def log(self, name: str, row: dict) -> None:
        if self.acc.is_main_process:
            path = self.out / "logs" / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")

    def print(self, *a):
        if self.acc.is_main_process:
            print(*a, flush=True)


def _base_meta(cfg: ZooConfig, *, lr_scale=1.0, momentum_scale=1.0, wd_scale=1.0) -> dict:
    o = cfg.optim
    return {"lr_scale": lr_scale, "momentum_scale": momentum_scale, "weight_decay_scale": wd_scale,
            "lr": o.lr * lr_scale, "momentum": o.momentum * momentum_scale, "weight_decay": o.weight_decay * wd_scale,
            "nesterov": o.nesterov, "t_max": o.t_max, "eta_min": o.eta_min, "batch_size": cfg.train.batch_size,
            "seed": cfg.train.seed}


# -- trunk ---------------------------------------------------------------------------------------------------
def train_trunk(cfg: ZooConfig, out: str | Path, *, until_epoch: int | None = None,
                stop_after_epoch: int | None = None, cpu: bool | None = None, progress: bool = True,
                trainer: Trainer | None = None) -> dict:
    """Train (or resume) the trunk up to ``until_epoch`` (default: ``train.epochs``).

    Every ``checkpoint_interval`` epochs (and at the last one) the full state goes to ``state/trunk/eNNN`` and
    the weights, evaluated on val and test, to ``trunk/eNNN``. ``stop_after_epoch`` simulates a crash.
    """
    out = Path(out)
    t = trainer or Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=t.acc.is_main_process)
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
    last_hash = None
    bar = _bar(range(start + 1, end + 1), t.progress, "trunk", initial=start, total=end)
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
            prev = max([e for e in range(interval, epoch, interval)], default=None)
            meta = dict(_base_meta(cfg), kind="trunk", epoch=epoch, data_seed=cfg.train.seed,
                        parent=f"trunk/e{prev:03d}" if prev else "scratch", lr_at_epoch=sched.get_last_lr()[0])
            t.export(model, trunk_dir(out, epoch), meta, results,
                     description=f"Trunk checkpoint after {epoch} epochs of the hfsoup zoo recipe.")
            last_hash = state_hash(t.acc.unwrap_model(model))
            row["state_sha256"] = last_hash
        t.log("trunk", row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_accuracy']:.3f}")
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            t.print(f"trunk: stopping after epoch {epoch} (--stop-after-epoch)")
            break
    final = state_hash(t.acc.unwrap_model(model))
    return {"epoch": epoch if end > start else start, "state_sha256": final, "rank": t.acc.process_index,
            "num_processes": t.acc.num_processes}


def _bar(it, enabled, desc, **kw):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="epoch", disable=not enabled, leave=False, **kw)


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
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def train_branch(cfg: ZooConfig, out: str | Path, epoch: int, variant: int, *, cpu: bool | None = None,
                 progress: bool = True, stop_after_epoch: int | None = None, trainer: Trainer | None = None) -> dict:
    """Branch variant ``variant`` from the trunk state of ``epoch``; export the best-validation weights."""
    out = Path(out)
    scales = cfg.variant(variant)
    src = require_trunk_state(out, epoch)
    t = trainer or Trainer(cfg, out, cpu=cpu, progress=progress)
    write_config_copy(cfg, out, is_main=t.acc.is_main_process)
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
    t.optimizer_view = opt  # for tests: the scaled hyperparameters
    model, opt = t.prepare(model, opt)
    b = cfg.branches
    end = epoch + b.max_epochs
    bar = _bar(range(done + 1, end + 1), t.progress, name, initial=done - epoch, total=b.max_epochs)
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
                    "state": {k: v.detach().cpu().clone() for k, v in t.acc.unwrap_model(model).state_dict().items()}}
        history.append(row)
        t.log(name, row)
        if (e - epoch) % cfg.train.checkpoint_interval == 0 and e < end:
            t.save_state(bstate, model, opt, sched, e, extra={"best": best, "history": history})
        if stop_after_epoch is not None and e >= stop_after_epoch:
            t.print(f"{name}: stopping after epoch {e} (--stop-after-epoch)")
            t.save_state(bstate, model, opt, sched, e, extra={"best": best, "history": history})
            return {"stopped": e}
    net = t.acc.unwrap_model(model)
    keep = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best["state"])
    results = {"val": t.evaluate(model, t.data.val), "test": t.evaluate(model, t.data.test)}
    meta = dict(_base_meta(cfg, lr_scale=ls, momentum_scale=ms, wd_scale=ws), kind="branch", branch_epoch=epoch,
                variant=int(variant), data_seed=data_seed, parent=f"trunk/e{epoch:03d}", best_epoch=best["epoch"],
                epochs_trained=len(history), stopped_early=stopped_early, max_epochs=b.max_epochs,
                patience=b.patience)
    t.export(model, branch_dir(out, epoch, variant), meta, results,
             description=f"Variant {variant} of the hfsoup zoo branched from trunk epoch {epoch} "
                         f"(lr x{ls}, momentum x{ms}, weight decay x{ws}); best validation weights.")
    h = state_hash(net)
    net.load_state_dict(keep)
    if t.acc.is_main_process and bstate.exists():
        shutil.rmtree(bstate.parent, ignore_errors=True)
    t.acc.wait_for_everyone()
    return {"branch": name, "best_epoch": best["epoch"], "val": results["val"], "test": results["test"],
            "state_sha256": h}


# -- command line --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hfsoup.train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("trunk", "branch", "swa"):
        s = sub.add_parser(name, help="SWA baseline from a trunk checkpoint" if name == "swa" else f"train the {name}")
        s.add_argument("--config", required=True, help="zoo config (hfsoup zoo init zoo.yaml)")
        s.add_argument("--out", required=True, help="zoo folder (e.g. runs/zoo)")
        s.add_argument("--stop-after-epoch", type=int, default=None,
                       help="stop after this (absolute) epoch, as a crash would; rerun to resume")
        s.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
        s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        s.add_argument("--report", default=None,
                       help="write this process's final state hash to REPORT.rankN.json (multi-process checks)")
    sub.choices["trunk"].add_argument("--until-epoch", type=int, default=None,
                                      help="train up to this epoch (default: train.epochs)")
    sub.choices["branch"].add_argument("--epoch", type=int, required=True, help="trunk epoch to branch from")
    sub.choices["branch"].add_argument("--variant", type=int, required=True, help="variant id (1..4 by default)")
    sub.choices["swa"].add_argument("--epoch", type=int, default=None,
                                    help="trunk epoch to start SWA from (default: swa.start_epoch, 220)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        cpu = True if args.cpu else None
        if args.cmd == "trunk":
            res = train_trunk(cfg, args.out, until_epoch=args.until_epoch, stop_after_epoch=args.stop_after_epoch,
                              cpu=cpu, progress=not args.quiet)
        elif args.cmd == "swa":
            from hfsoup.zoo.swa import train_swa

            res = train_swa(cfg, args.out, args.epoch, cpu=cpu, progress=not args.quiet,
                            stop_after_epoch=args.stop_after_epoch)
        else:
            res = train_branch(cfg, args.out, args.epoch, args.variant, cpu=cpu, progress=not args.quiet,
                               stop_after_epoch=args.stop_after_epoch)
    except HfSoupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.report:
        rank = res.get("rank", int(os.environ.get("RANK", 0)))
        Path(f"{args.report}.rank{rank}.json").write_text(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
