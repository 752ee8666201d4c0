"""One process of a zoo training run (🤗 Accelerate): data on the device, one epoch of SGD, evaluation, resumable
state and export in hfsoup's Hub format. The loops that use it are in :mod:`hfsoup.zoo.loops` (trunk, branches)
and :mod:`hfsoup.zoo.swa`.

Several processes form one run: the global batch is split across ranks, DDP averages gradients, metrics are
reduced across ranks and only the main process writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hfsoup.core.files import atomic_save, atomic_write_text
from hfsoup.zoo.augment import epoch_plan, plan_batch
from hfsoup.zoo.config import ConfigError, ZooConfig, dump_config, load_config
from hfsoup.zoo.layout import config_copy_path, log_path


# -- results and helpers ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What one training run (trunk, branch or SWA) did, as seen by one process."""

    kind: str  # trunk | branch | swa
    name: str  # "trunk", "b200-v2", "swa-e220"
    epoch: int  # the last epoch trained (absolute)
    stopped: bool = False  # stopped early by ``stop_after_epoch``: rerun to resume
    state_sha256: str | None = None  # hash of the final (or exported) weights: the same on every rank
    val: dict | None = None  # {"accuracy", "loss"} of the exported model
    test: dict | None = None
    best_epoch: int | None = None  # branches: the epoch of the exported best-validation weights
    epochs_averaged: int | None = None  # SWA
    rank: int = 0
    num_processes: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def library_versions() -> dict:
    """Versions of the libraries that shape the trained weights (recorded in every export's metadata)."""
    import accelerate
    import datasets
    import timm

    from hfsoup import __version__

    return {"hfsoup": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__}


def state_hash(model) -> str:
    """SHA-256 of a model's state dict (names, dtypes, bytes): the same on every rank of a coherent run.
    ``model`` may also be a state dict (e.g. ``safetensors.torch.load_file`` of an exported folder)."""
    sd = model if isinstance(model, dict) else model.state_dict()
    h = hashlib.sha256()
    for k, v in sorted(sd.items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def base_metadata(cfg: ZooConfig, *, lr_scale: float = 1.0, momentum_scale: float = 1.0,
                  wd_scale: float = 1.0) -> dict:
    """The optimiser and seed fields every exported model carries: the scales and the absolute values they give."""
    o = cfg.optim
    return {"lr_scale": lr_scale, "momentum_scale": momentum_scale, "weight_decay_scale": wd_scale,
            "lr": o.lr * lr_scale, "momentum": o.momentum * momentum_scale, "weight_decay": o.weight_decay * wd_scale,
            "nesterov": o.nesterov, "t_max": o.t_max, "eta_min": o.eta_min, "batch_size": cfg.train.batch_size,
            "seed": cfg.train.seed}


def write_config_copy(cfg: ZooConfig, out: str | Path, *, is_main: bool) -> None:
    """Copy the config into ``out/zoo.yaml``; refuse a zoo folder trained with another recipe."""
    path = config_copy_path(out)
    if path.exists():
        old = load_config(path)
        if old.recipe_hash() != cfg.recipe_hash():
            raise ConfigError(f"'{out}' holds a zoo trained with a different recipe ({path}): use another --out",
                              path=path)
        if old.to_dict() == cfg.to_dict() or not is_main:
            return
    if is_main:
        atomic_write_text(path, f"# recipe sha256: {cfg.recipe_hash()}\n" + dump_config(cfg))


def epoch_bar(it, enabled: bool, desc: str, **kw):
    """A progress bar over epochs (disabled on non-main ranks and with ``-q``)."""
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="epoch", disable=not enabled, leave=False, **kw)


@dataclass
class Data:
    """The three splits of a zoo run (``hfsoup.data.images.ImageData``)."""

    train: object
    val: object
    test: object


def load_data(cfg: ZooConfig, progress: bool = False) -> Data:
    """Load the config's train / val / test splits (uint8 images, labels)."""
    from hfsoup.data.images import load_image_data

    d = cfg.data
    kw = dict(revision=d.revision, image_column=d.image_column, label_column=d.label_column, progress=progress)
    return Data(train=load_image_data(d.dataset, d.train_split, limit=d.limit, **kw),
                val=load_image_data(d.dataset, d.val_split, **kw),
                test=load_image_data(d.dataset, d.test_split, **kw))


def check_labels(data: Data, num_classes: int) -> None:
    """Refuse, before any epoch, a label outside the model's ``[0, num_classes)`` in any split of the run: the
    :class:`~hfsoup.errors.DatasetError` of evaluation (:meth:`hfsoup.data.images.ImageData.check_labels`), naming
    the column, the value and its row. Training would otherwise fail mid-run (a CUDA assert, an index error) or,
    for -100, silently skip the row in the loss."""
    for split in (data.train, data.val, data.test):
        split.check_labels(num_classes, fix="set data.label_column in the zoo config to the label column, or "
                                            "data.num_classes to the dataset's number of classes")


# -- the trainer ---------------------------------------------------------------------------------------------------
class Trainer:
    """One process of a (possibly multi-process) training run: owns the Accelerator, the data on the device and
    the model's normalisation; builds models and optimisers, trains and evaluates epochs, saves and loads states,
    exports models. Several runs (the trunk, then branches) can share one Trainer (data decoded once)."""

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
        check_labels(self.data, cfg.data.num_classes)
        mean, std = self._norm_stats()
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        # uint8 images live on the device: augmentation and normalisation happen there, in batches
        self.train_x = self.data.train.images.to(self.device)
        self.train_y = self.data.train.labels.to(self.device)
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        self.optimizer_view = None  # the last optimiser a branch scaled (tests read its hyperparameters)

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    # -- model / optimiser ---------------------------------------------------------------------------------
    def _norm_stats(self):
        import timm

        from hfsoup.core import models  # noqa: F401  (registers the CIFAR ResNets with timm)

        cfg = timm.models.get_pretrained_cfg(self.cfg.train.architecture)
        cfg = cfg.to_dict() if cfg is not None else {}
        return cfg.get("mean", (0.5071, 0.4867, 0.4408)), cfg.get("std", (0.2675, 0.2565, 0.2761))

    def build(self, *, lr_scale: float = 1.0, momentum_scale: float = 1.0, wd_scale: float = 1.0):
        """A freshly initialised model (seed ``train.seed``), its SGD optimiser and cosine scheduler."""
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

    def unwrap(self, model):
        return self.acc.unwrap_model(model)

    # -- one epoch -------------------------------------------------------------------------------------------
    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device -> normalised float input of the model."""
        x = (x_uint8.float().div_(255.0) - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_epoch(self, model, opt, epoch_seed: int) -> dict:
        """One epoch of SGD over the training split in the order of ``epoch_plan(epoch_seed)``; returns the mean
        training loss and accuracy (over all ranks)."""
        acc, B = self.acc, self.cfg.train.batch_size
        n = len(self.data.train)
        plan = epoch_plan(n, epoch_seed, self.cfg)
        world, rank = acc.num_processes, acc.process_index
        model.train()
        tot = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        for start in range(0, n, B):
            idx = plan.perm[start:start + B]
            if len(idx) < world:  # a last batch too small to give every rank an image
                break
            mine = idx[rank::world]
            x = self.normalize(plan_batch(plan, self.train_x, mine, self.device))
            y = self.train_y[mine.to(self.device)]
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
            self.broadcast_buffers(acc.unwrap_model(model))
        return {"train_loss": (tot[0] / tot[2]).item(), "train_accuracy": (tot[1] / tot[2]).item()}

    def broadcast_buffers(self, net) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
        if self.acc.num_processes > 1:
            import torch.distributed as dist

            for buf in net.buffers():
                dist.broadcast(buf.data, src=0)

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
            x = self.normalize(data.images[j].to(self.device))
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
        """Write the full training state (model, optimiser, scheduler, RNG states, ``extra``) atomically; main
        process only, then every rank waits."""
        if self.acc.is_main_process:
            import numpy as np

            state = {
                "epoch": epoch, "model": self.acc.unwrap_model(model).state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "recipe_sha256": self.cfg.recipe_hash(), **(extra or {})}
            atomic_save(path, lambda tmp: torch.save(state, tmp))
        self.acc.wait_for_everyone()

    def load_state(self, path: Path, model, opt, sched) -> dict:
        """Restore a state written by :meth:`save_state` into ``model``, ``opt`` and ``sched`` (and the RNGs)."""
        import numpy as np

        st = torch.load(path, map_location="cpu", weights_only=False)
        if st.get("recipe_sha256") not in (None, self.cfg.recipe_hash()):
            raise ConfigError(f"'{path}' was written with a different training recipe", path=path)
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
        """Export ``model`` (or ``state_dict`` loaded into a copy of it) to ``folder`` in hfsoup's Hub format with
        the run's metadata and its val/test ``results``; main process only, then every rank waits."""
        from hfsoup.hub.format import save_model

        net = self.acc.unwrap_model(model)
        if self.acc.is_main_process:
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
            save_model(cpu_model, folder, metadata=meta, results=rows, description=description, datasets=datasets_,
                       label_names=self.data.test.class_names, tags=["hfsoup-zoo", metadata.get("kind", "")],
                       force=True)
        self.acc.wait_for_everyone()

    def log(self, name: str, row: dict) -> None:
        """Append one line to ``logs/{name}.jsonl`` (main process only). One ``write`` of one line in append
        mode: a crash never leaves half a line before the next."""
        if self.acc.is_main_process:
            path = log_path(self.out, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")

    def print(self, *a) -> None:
        if self.acc.is_main_process:
            print(*a, flush=True)

    def result(self, kind: str, name: str, epoch: int, **fields) -> RunResult:
        """A :class:`RunResult` stamped with this process's rank and the number of processes."""
        return RunResult(kind=kind, name=name, epoch=int(epoch), rank=self.acc.process_index,
                         num_processes=self.acc.num_processes, **fields)
