"""The folder layout of a zoo: where training writes exported models and resumable states, and what a built zoo
holds.

Layout of a zoo folder (a contract between ``python -m hfsoup.train``, ``hfsoup zoo build`` and
``hfsoup zoo push``)::

    runs/zoo/zoo.yaml                          the config used (copied on the first run)
    runs/zoo/trunk/eNNN/                       trunk weights after NNN epochs, hfsoup Hub format + metadata
    runs/zoo/branches/bNNN-vK/                 best-validation weights of variant K branched at trunk epoch NNN
    runs/zoo/swa/eNNN/                         the SWA baseline started at trunk epoch NNN (never published)
    runs/zoo/state/trunk/eNNN/state.pt         full training state (model, optimiser, scheduler, RNG, epoch)
    runs/zoo/state/branches/bNNN-vK/state.pt   the latest state of a running branch (removed when it is done)
    runs/zoo/state/swa/eNNN/state.pt           the latest state of a running SWA run (removed when it is done)
    runs/zoo/logs/*.jsonl                      one line per epoch

Torch-free: ``hfsoup zoo list`` of a zoo folder reads the exported models' metadata from the safetensors header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hfsoup.errors import HfSoupError, first_line

STATE_NAME = "state.pt"
CONFIG_COPY_NAME = "zoo.yaml"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
#: The files of an exported model folder that are hashed and published.
MODEL_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
#: Metadata keys holding an exported model's scores.
SCORE_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
#: Repo name prefix of published models of the default config (:func:`zoo_prefix` derives a zoo's own).
DEFAULT_PREFIX = "resnet50-cifar100"


class ZooError(HfSoupError):
    """A zoo folder, manifest or selection is unusable (one line, says what to do)."""


# -- names and paths ---------------------------------------------------------------------------------------------
def trunk_name(epoch: int) -> str:
    return f"e{int(epoch):03d}"


def branch_name(epoch: int, variant: int) -> str:
    return f"b{int(epoch):03d}-v{int(variant)}"


def swa_name(epoch: int) -> str:
    return f"e{int(epoch):03d}"


def trunk_dir(out: str | Path, epoch: int) -> Path:
    """Exported trunk weights after ``epoch`` epochs."""
    return Path(out) / "trunk" / trunk_name(epoch)


def branch_dir(out: str | Path, epoch: int, variant: int) -> Path:
    """Exported best-validation weights of ``variant`` branched at trunk epoch ``epoch``."""
    return Path(out) / "branches" / branch_name(epoch, variant)


def swa_dir(out: str | Path, epoch: int) -> Path:
    """Exported SWA model started at trunk epoch ``epoch``."""
    return Path(out) / "swa" / swa_name(epoch)


def trunk_state_path(out: str | Path, epoch: int) -> Path:
    return Path(out) / "state" / "trunk" / trunk_name(epoch) / STATE_NAME


def branch_state_path(out: str | Path, epoch: int, variant: int) -> Path:
    return Path(out) / "state" / "branches" / branch_name(epoch, variant) / STATE_NAME


def swa_state_path(out: str | Path, epoch: int) -> Path:
    return Path(out) / "state" / "swa" / swa_name(epoch) / STATE_NAME


def log_path(out: str | Path, name: str) -> Path:
    """The per-epoch log of a run (``trunk``, ``bNNN-vK``, ``swa-eNNN``)."""
    return Path(out) / "logs" / f"{name}.jsonl"


def config_copy_path(out: str | Path) -> Path:
    return Path(out) / CONFIG_COPY_NAME


def trunk_state_epochs(out: str | Path) -> list[int]:
    """Epochs with a saved full trunk state, ascending."""
    root = Path(out) / "state" / "trunk"
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir()
                  if p.name.startswith("e") and p.name[1:].isdigit() and (p / STATE_NAME).is_file())


def require_trunk_state(out: str | Path, epoch: int) -> Path:
    """The trunk's full state at ``epoch`` (what branches and SWA start from), or a one-line error."""
    src = trunk_state_path(out, epoch)
    if not src.is_file():
        raise ZooError(f"no trunk state for epoch {epoch} at '{src}': train the trunk first "
                       f"(python -m hfsoup.train trunk --until-epoch {epoch})", path=src)
    return src


def is_exported(folder: str | Path) -> bool:
    """Whether ``folder`` holds an exported model (weights and config)."""
    return (Path(folder) / WEIGHTS_NAME).is_file() and (Path(folder) / CONFIG_NAME).is_file()


def repo_name(kind: str, epoch: int, variant: int | None, prefix: str = DEFAULT_PREFIX) -> str:
    """The published repo name of a model: ``{prefix}-trunk-e{epoch:03d}`` or ``{prefix}-b{epoch:03d}-v{variant}``."""
    return f"{prefix}-trunk-e{int(epoch):03d}" if kind == "trunk" else f"{prefix}-{branch_name(epoch, variant)}"


def zoo_prefix(root: str | Path) -> str:
    """The repo name prefix of the zoo folder ``root``: ``{architecture}-{dataset}`` of the config it was built
    with (``root/zoo.yaml``, see :func:`hfsoup.zoo.config.repo_prefix`), the default config's values standing in
    for what it does not set (so the default zoo keeps ``resnet50-cifar100``). Lenient: the config is only read
    for these two names, a missing or unreadable one gives :data:`DEFAULT_PREFIX`."""
    import yaml

    from hfsoup.zoo.config import DataConfig, TrainConfig, repo_prefix

    try:
        d = yaml.safe_load(config_copy_path(root).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return DEFAULT_PREFIX
    d = d if isinstance(d, dict) else {}
    train = d.get("train") if isinstance(d.get("train"), dict) else {}
    data = d.get("data") if isinstance(d.get("data"), dict) else {}
    arch, dataset = train.get("architecture"), data.get("dataset")
    return repo_prefix(arch if isinstance(arch, str) else TrainConfig.architecture,
                       dataset if isinstance(dataset, str) else DataConfig.dataset)


# -- scanning a built zoo ----------------------------------------------------------------------------------------
@dataclass
class ZooModel:
    """One exported model folder of a built zoo, with the repo name it is published under."""

    folder: Path
    name: str
    kind: str  # trunk | branch
    epoch: int  # the trunk checkpoint's epoch, or the branch epoch
    variant: int | None
    metadata: dict
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def entry(self, org: str, commit: str | None) -> dict:
        """This model's entry in a zoo manifest (``zoo.json``)."""
        e = {"repo_id": f"{org}/{self.name}", "commit": commit, "kind": self.kind}
        if self.kind == "trunk":
            e["epoch"] = self.epoch
        else:
            e["branch_epoch"] = self.epoch
            e["variant"] = self.variant
        e["metadata"] = self.metadata
        e["scores"] = {k: self.metadata[k] for k in SCORE_KEYS if k in self.metadata}
        e["files"] = dict(self.files)
        return e


def read_model_metadata(weights: Path) -> dict:
    """The decoded ``__metadata__`` of an exported ``model.safetensors``, keys sorted (safetensors does not keep
    their order: sorted keys keep manifests byte-stable). Reads the header only."""
    from safetensors import safe_open

    from hfsoup.core.safetensors_io import decode_metadata

    try:
        # framework="numpy": the header's metadata needs no torch (`hfsoup zoo list` of a zoo folder stays light)
        with safe_open(str(weights), framework="numpy") as f:
            meta = decode_metadata(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file
        raise ZooError(f"cannot read '{weights}': {type(e).__name__}: {first_line(e)}", path=weights) from None
    return dict(sorted(meta.items()))


def _int(meta: dict, key: str, where: Path) -> int:
    try:
        return int(meta[key])
    except (KeyError, TypeError, ValueError):
        raise ZooError(f"'{where}' has no integer '{key}' in its safetensors metadata: is it a zoo model folder "
                       f"written by hfsoup's training?", path=where) from None


def scan_zoo(root: str | Path, prefix: str | None = None) -> list[ZooModel]:
    """The exported model folders of a built zoo (``trunk/*``, ``branches/*``) with their metadata and file hashes,
    sorted trunk first, then by epoch and variant; repo names start with ``prefix`` (default: :func:`zoo_prefix`)."""
    from hfsoup.core.safetensors_io import sha256_file

    root = Path(root)
    prefix = prefix or zoo_prefix(root)
    if not root.is_dir():
        raise ZooError(f"zoo folder '{root}' does not exist: build one with `hfsoup zoo build` first", path=root)
    models: dict[str, ZooModel] = {}
    for sub in ("trunk", "branches"):
        base = root / sub
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not is_exported(folder):
                continue
            meta = read_model_metadata(folder / WEIGHTS_NAME)
            kind = meta.get("kind") or ("trunk" if sub == "trunk" else "branch")
            if kind not in ("trunk", "branch"):
                raise ZooError(f"'{folder}': metadata kind must be 'trunk' or 'branch', not {kind!r}", path=folder)
            if kind == "trunk":
                epoch, variant = _int(meta, "epoch", folder), None
            else:
                epoch, variant = _int(meta, "branch_epoch", folder), _int(meta, "variant", folder)
            name = repo_name(kind, epoch, variant, prefix)
            if name in models:
                raise ZooError(f"'{folder}' and '{models[name].folder}' would both be published as '{name}'",
                               path=folder)
            files = {f: sha256_file(folder / f) for f in MODEL_FILES if (folder / f).is_file()}
            models[name] = ZooModel(folder, name, kind, epoch, variant, meta, files)
    if not models:
        raise ZooError(f"no model folders under '{root}/trunk' or '{root}/branches': is this a built zoo?", path=root)
    return sorted(models.values(), key=lambda m: (m.kind != "trunk", m.epoch, m.variant or 0))
