"""The zoo config: the paper's recipe (Tables 2 and 3) as one editable YAML file.

``hfsoup zoo init zoo.yaml`` writes :data:`DEFAULT_YAML` (the defaults below, with comments); ``hfsoup.train`` and
``hfsoup zoo build`` read it with :func:`load_config`. Every run copies the config it used into its out folder
(``runs/zoo/zoo.yaml``) and refuses to continue a zoo built with a different training recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hfsoup.errors import HfSoupError

#: Paper Table 2: multiplicative scales of (lr, momentum, weight decay) per variant.
PAPER_VARIANTS = {
    1: {"lr_scale": 0.7073, "momentum_scale": 1.1009, "weight_decay_scale": 0.8284},
    2: {"lr_scale": 1.2244, "momentum_scale": 0.9247, "weight_decay_scale": 1.1150},
    3: {"lr_scale": 0.5112, "momentum_scale": 1.0695, "weight_decay_scale": 1.1099},
    4: {"lr_scale": 0.5373, "momentum_scale": 0.8594, "weight_decay_scale": 0.9078},
}


class ConfigError(HfSoupError):
    """The zoo config is invalid."""


def repo_prefix(architecture: str, dataset: str) -> str:
    """The name prefix of a zoo's repos: ``{architecture}-{dataset}`` in Hub-friendly form, the architecture
    without hfsoup's ``_cifar`` tag (the CIFAR stem) and the dataset as its last path part:
    ``resnet50_cifar`` + ``uoft-cs/cifar100`` -> ``resnet50-cifar100``; ``resnet18_cifar`` + ``sklearn:digits``
    -> ``resnet18-digits``."""
    import re

    arch = re.sub(r"_cifar(?=_|$)", "", str(architecture).split("/")[-1].split(":")[-1])
    data = re.split(r"[/:\\]", str(dataset).rstrip("/\\"))[-1] or "data"
    text = f"{arch}-{data}".lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.\-]+", "-", text)).strip("-.")[:64] or "zoo"


@dataclass
class DataConfig:
    dataset: str = "uoft-cs/cifar100"  # Hub id, local parquet folder, save_to_disk folder, or "sklearn:digits"
    revision: str | None = None
    image_column: str = "img"
    label_column: str = "fine_label"
    num_classes: int = 100
    train_split: str = "train-main"  # 95 % of train (split seed 42)
    val_split: str = "val"  # the held-out 5 %: early stopping of branches, greedy/RADIN
    test_split: str = "test"
    limit: int | None = None  # keep the first N training images (quick runs)


@dataclass
class AugmentConfig:
    random_crop: bool = True  # random 32x32 crop of the image zero-padded by `padding` pixels
    padding: int = 4
    hflip: bool = True  # horizontal flip with probability 0.5


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    t_max: int = 280  # CosineAnnealingLR, stepped once per epoch (PyTorch semantics, also past T_max)
    eta_min: float = 0.0


@dataclass
class TrainConfig:
    architecture: str = "resnet50_cifar"
    epochs: int = 300
    batch_size: int = 128  # global batch (split across processes)
    seed: int = 42  # model init and data order (data seed of trunk epoch e: seed + e)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the model
    channels_last: bool = True  # on GPU
    checkpoint_interval: int = 10  # full training state + exported weights every N epochs
    eval_batch_size: int = 1000


@dataclass
class BranchConfig:
    epochs: list = field(default_factory=lambda: list(range(50, 301, 10)))  # trunk epochs to branch from
    variants: dict = field(default_factory=lambda: copy.deepcopy(PAPER_VARIANTS))
    max_epochs: int = 60  # convergence rule: at most this many epochs after the branch point...
    patience: int = 10  # ...stopping once val accuracy has not improved for this many epochs
    seed_stride: int = 1000  # data seed of branch (E, k): seed + seed_stride * k + E (then + epoch)


@dataclass
class SwaConfig:
    """The optional SWA baseline (paper A.4 / Table 6: "SWA starting at epoch 220 from the same base model"; the
    paper gives no SWA lr, annealing or length, so those defaults are hfsoup's choices, see docs/zoo.md)."""
    start_epoch: int = 220  # paper: the trunk checkpoint SWA starts from (`--epoch` overrides it)
    epochs: int = 80  # SWA epochs, weights averaged once after each (220 + 80 = the baseline's 300 epochs)
    lr: float | None = 0.05  # SWALR's swa_lr (Izmailov et al.'s CIFAR-100 value); null: the trunk's lr at the start
    anneal_epochs: int = 10  # SWALR: epochs to go from the trunk's lr at the start epoch to `lr`
    anneal_strategy: str = "cos"  # cos | linear
    bn_augment: bool = True  # BN statistics recomputed on train-main with the training augmentation (update_bn)


@dataclass
class ZooConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    branches: BranchConfig = field(default_factory=BranchConfig)
    swa: SwaConfig = field(default_factory=SwaConfig)

    # -- derived ---------------------------------------------------------------------------------------------
    def variant(self, k: int) -> dict:
        try:
            return dict(self.branches.variants[int(k)])
        except KeyError:
            raise ConfigError(f"unknown variant {k}: the config defines {sorted(self.branches.variants)}") from None

    @property
    def repo_prefix(self) -> str:
        """The name prefix of this zoo's repos (:func:`repo_prefix` of the architecture and the dataset)."""
        return repo_prefix(self.train.architecture, self.data.dataset)

    def branch_data_seed(self, epoch: int, variant: int) -> int:
        return self.train.seed + self.branches.seed_stride * int(variant) + int(epoch)

    @property
    def last_branch_epoch(self) -> int:
        return max(self.branches.epochs) if self.branches.epochs else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recipe_hash(self) -> str:
        """SHA-256 of everything that changes trunk weights (not the branch list): a zoo folder keeps one."""
        d = self.to_dict()
        d.pop("branches")
        d.pop("swa")
        d["train"].pop("checkpoint_interval")
        d["train"].pop("eval_batch_size")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def validate(self) -> "ZooConfig":
        t, b = self.train, self.branches
        if t.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be fp32 or bf16, got {t.precision!r}")
        for name in ("epochs", "batch_size", "checkpoint_interval"):
            if int(getattr(t, name)) <= 0:
                raise ConfigError(f"train.{name} must be positive")
        if self.optim.t_max <= 0:
            raise ConfigError("optim.t_max must be positive")
        bad = [e for e in b.epochs if e <= 0 or e > t.epochs or e % t.checkpoint_interval]
        if bad:
            raise ConfigError(f"branch epoch {bad[0]} must be a trunk checkpoint: a multiple of "
                              f"train.checkpoint_interval ({t.checkpoint_interval}) in 1..{t.epochs}")
        for k, v in b.variants.items():
            missing = {"lr_scale", "momentum_scale", "weight_decay_scale"} - set(v)
            if missing:
                raise ConfigError(f"variant {k} lacks {', '.join(sorted(missing))}")
        if b.max_epochs <= 0 or b.patience <= 0:
            raise ConfigError("branches.max_epochs and branches.patience must be positive")
        w = self.swa
        if w.start_epoch <= 0 or w.epochs <= 0 or w.anneal_epochs < 0 or (w.lr is not None and w.lr < 0):
            raise ConfigError("swa.start_epoch and swa.epochs must be positive, swa.anneal_epochs and swa.lr >= 0")
        if w.anneal_strategy not in ("cos", "linear"):
            raise ConfigError(f"swa.anneal_strategy must be cos or linear, got {w.anneal_strategy!r}")
        return self


#: Most branch epochs a config may list: each is a trunk checkpoint to train branches from.
MAX_BRANCH_EPOCHS = 10_000


def _typed(value, hint, where: str):
    """``value`` checked against a field's type hint (int, float, bool, str, or one of them ``| None``), with an
    actionable :class:`ConfigError`; YAML ints are accepted for floats."""
    import types
    import typing

    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where} must not be empty (null)")
    for t in options:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
        if t in (list, dict) and isinstance(value, t):
            return value
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a mapping"}
    want = " or ".join(names.get(t, "null" if t is type(None) else getattr(t, "__name__", str(t))) for t in options)
    raise ConfigError(f"{where} must be {want}, got {value!r}: fix it in the zoo config")


def _from_dict(cls, d: dict | None, where: str):
    import typing

    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"section '{where}' must be a mapping of keys to values, got {d!r}")
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(map(str, unknown)))} (known: "
                          f"{', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(v, hints[k], f"{where}.{k}") for k, v in d.items()})


def _int(value, where: str) -> int:
    return _typed(value, int, where)


def _branch_epochs(e) -> list[int]:
    """``branches.epochs``: a list of epochs or ``{start, stop, step}`` (stop inclusive), checked and bounded
    before anything is expanded."""
    if isinstance(e, dict):
        unknown = set(e) - {"start", "stop", "step"}
        if unknown or "start" not in e or "stop" not in e:
            raise ConfigError(f"branches.epochs as a mapping takes start, stop and optionally step (e.g. {{start: 50, "
                              f"stop: 300, step: 10}}), got {e!r}")
        start, stop = _int(e["start"], "branches.epochs.start"), _int(e["stop"], "branches.epochs.stop")
        step = _int(e.get("step", 1), "branches.epochs.step")
        if step <= 0:
            raise ConfigError(f"branches.epochs.step must be positive, got {step}")
        epochs = range(start, stop + 1, step)  # a range object: its length costs nothing
    elif isinstance(e, list):
        epochs = [_int(x, f"branches.epochs[{i}]") for i, x in enumerate(e)]
    else:
        raise ConfigError(f"branches.epochs must be a list of epochs or {{start, stop, step}}, got {e!r}")
    if len(epochs) > MAX_BRANCH_EPOCHS:
        raise ConfigError(f"branches.epochs lists {len(epochs)} epochs (at most {MAX_BRANCH_EPOCHS}): use a larger "
                          f"step or a shorter range")
    return sorted(set(epochs))


def _variants(v) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"branches.variants must map variant numbers to scales, e.g. 1: {{lr_scale: 0.7, "
                          f"momentum_scale: 1.1, weight_decay_scale: 0.8}}, got {v!r}")
    out = {}
    for k, scales in v.items():
        try:
            key = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"branches.variants: {k!r} is not a variant number") from None
        if not isinstance(scales, dict):
            raise ConfigError(f"branches.variants.{k} must map lr_scale, momentum_scale, weight_decay_scale to "
                              f"numbers, got {scales!r}")
        out[key] = {str(name): _typed(x, float, f"branches.variants.{k}.{name}") for name, x in scales.items()}
    return out


def config_from_dict(d: dict) -> ZooConfig:
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"the zoo config must be a mapping of sections (data, train, …), got {d!r}")
    d = dict(d or {})
    unknown = set(d) - {"data", "augment", "optim", "train", "branches", "swa"}
    if unknown:
        raise ConfigError(f"unknown section(s) in the zoo config: {', '.join(sorted(map(str, unknown)))}")
    if d.get("branches") is not None and not isinstance(d["branches"], dict):
        raise ConfigError(f"section 'branches' must be a mapping of keys to values, got {d['branches']!r}")
    branches = dict(d.get("branches") or {})
    if "variants" in branches:
        branches["variants"] = _variants(branches["variants"] or {})
    if "epochs" in branches:
        branches["epochs"] = _branch_epochs(branches["epochs"])
    return ZooConfig(data=_from_dict(DataConfig, d.get("data"), "data"),
                     augment=_from_dict(AugmentConfig, d.get("augment"), "augment"),
                     optim=_from_dict(OptimConfig, d.get("optim"), "optim"),
                     train=_from_dict(TrainConfig, d.get("train"), "train"),
                     branches=_from_dict(BranchConfig, branches, "branches"),
                     swa=_from_dict(SwaConfig, d.get("swa"), "swa")).validate()


def load_config(path: str | Path) -> ZooConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no zoo config at '{path}': write one with `hfsoup zoo init {path}`")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"'{path}' is not valid YAML: {e}") from None
    return config_from_dict(d)


def dump_config(cfg: ZooConfig) -> str:
    import yaml

    d = cfg.to_dict()
    d["branches"]["variants"] = {int(k): v for k, v in d["branches"]["variants"].items()}
    return yaml.safe_dump(d, sort_keys=False)


DEFAULT_YAML = """\
# hfsoup zoo config: the recipe of the paper (Tables 2 and 3) for a ResNet-50 zoo on CIFAR-100.
# Edit freely; `hfsoup zoo build --config zoo.yaml --out runs/zoo` trains every missing step.
data:
  dataset: uoft-cs/cifar100     # Hub id, local parquet folder/file, save_to_disk folder, or sklearn:digits
  revision: null                # dataset revision (branch, tag, commit)
  image_column: img
  label_column: fine_label
  num_classes: 100
  train_split: train-main       # the 95 % of train kept for training (train_test_split(0.05, seed=42))
  val_split: val                # the held-out 5 %: early stopping of branches; greedy soup / RADIN
  test_split: test
  limit: null                   # train on the first N images only (quick runs)
augment:                        # on the device, in batches
  random_crop: true             # random 32x32 crop of the image zero-padded by `padding`
  padding: 4
  hflip: true
optim:                          # SGD (Nesterov) + CosineAnnealingLR stepped once per epoch
  lr: 0.1
  momentum: 0.9
  weight_decay: 0.0005
  nesterov: true
  t_max: 280                    # PyTorch semantics, also past T_max (the lr rises again after epoch 280)
  eta_min: 0.0
train:
  architecture: resnet50_cifar  # any timm name; hfsoup registers resnet50_cifar, resnet18_cifar, resnet10_cifar_*
  epochs: 300
  batch_size: 128               # global batch, split across processes
  seed: 42                      # init and data order (trunk epoch e uses seed + e)
  precision: fp32               # fp32 | bf16 (autocast)
  compile: false                # torch.compile
  channels_last: true           # GPU only
  checkpoint_interval: 10       # full training state (resumable) + exported weights every N epochs
  eval_batch_size: 1000
branches:
  epochs: [50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220, 230, 240, 250,
           260, 270, 280, 290, 300]  # or {start: 50, stop: 300, step: 10}
  variants:                     # paper Table 2: multiplicative scales of the trunk's lr, momentum, weight decay
    1: {lr_scale: 0.7073, momentum_scale: 1.1009, weight_decay_scale: 0.8284}
    2: {lr_scale: 1.2244, momentum_scale: 0.9247, weight_decay_scale: 1.1150}
    3: {lr_scale: 0.5112, momentum_scale: 1.0695, weight_decay_scale: 1.1099}
    4: {lr_scale: 0.5373, momentum_scale: 0.8594, weight_decay_scale: 0.9078}
  max_epochs: 60                # convergence: at most this many epochs after the branch point,
  patience: 10                  # stopping when val accuracy has not improved for this many epochs
  seed_stride: 1000             # data seed of branch (E, k) = seed + seed_stride*k + E
swa:                            # optional SWA baseline (paper A.4, Table 6): python -m hfsoup.train swa
  start_epoch: 220              # paper: SWA from the trunk state of epoch 220 (--epoch overrides)
  epochs: 80                    # not in the paper: SWA epochs averaged, one snapshot per epoch (220 + 80 = 300)
  lr: 0.05                      # not in the paper: SWALR swa_lr (Izmailov et al., CIFAR-100); null = trunk lr at start
  anneal_epochs: 10             # not in the paper: SWALR annealing from the trunk's lr to `lr` (PyTorch default)
  anneal_strategy: cos          # cos | linear
  bn_augment: true              # update_bn on train-main with the training augmentation (Izmailov et al.)
"""


def init_config(path: str | Path, *, force: bool = False) -> Path:
    """Write the default config (with comments) to ``path``; refuses to overwrite without ``force``."""
    from hfsoup.errors import OutputExistsError

    from hfsoup.core.files import atomic_write_text

    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"'{path}' already exists: pass --force to overwrite it", path=path)
    return atomic_write_text(path, DEFAULT_YAML)
