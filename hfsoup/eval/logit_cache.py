"""On-disk cache of per-ingredient logits, shared by the greedy, RADIN and ensemble recipes.

Every ingredient is run once per split; its logits (float32, num_samples x num_classes) are stored as a safetensors
file keyed by the ingredient's content hash (:attr:`Ingredient.sha256`), the split's content fingerprint
(:attr:`ImageData.fingerprint`) and a short hash of the model config (the config holds the normalisation mean/std,
which changes the logits without changing the weights)::

    <cache root>/logits/<ingredient sha256>/<split fingerprint>-<config hash, 12 hex>[-bf16].safetensors

Logits computed under bf16 autocast (``--precision bf16``, or ``auto`` on a device with native bf16) are cached
under their own key (the ``-bf16`` suffix), so fp32 and bf16 logits are never mixed.

The cache root follows the Hugging Face conventions: ``$HFSOUP_CACHE`` when set, else ``$HF_HOME/hfsoup``
(``~/.cache/huggingface/hfsoup`` by default). Entries are written atomically (:func:`hfsoup.core.files.atomic_save`),
so a crash never leaves a partial entry, and concurrent writers of the same entry are harmless (same content, last
rename wins). Changing the weights (new sha256) or the split (new fingerprint) gives a new key: stale entries are
never read. Logits are cached as the model gives them, NaN included (the recipes refuse non-finite logits, with
a message naming the model). Delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hfsoup.core.files import atomic_save
from hfsoup.core.ingredients import Ingredient
from hfsoup.data.images import ImageData
from hfsoup.eval.metrics import default_device, predict_logits, resolve_precision
from hfsoup.eval.precision import ambient_precision, check_precision_name, native_bf16

LOGITS_KEY = "logits"


@dataclass
class CacheStats:
    """Counts of cache hits and misses (forward passes) of one recipe run."""

    hits: int = 0
    misses: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def cache_root() -> Path:
    """``$HFSOUP_CACHE`` if set, else ``huggingface_hub.constants.HF_HOME/hfsoup``."""
    env = os.environ.get("HFSOUP_CACHE")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "hfsoup"


def logits_dir() -> Path:
    """Folder of the logit cache: ``cache_root() / "logits"``."""
    return cache_root() / "logits"


def config_hash(config: dict) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of a timm config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_path(ingredient: Ingredient, data: ImageData, precision: str = "fp32") -> Path:
    """Where the logits of ``ingredient`` on ``data`` computed in ``precision`` (``fp32`` or ``bf16``) are (or
    would be) cached."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    return logits_dir() / ingredient.sha256 / f"{data.fingerprint}-{config_hash(ingredient.config)}{suffix}.safetensors"


def _read(path: Path, num_samples: int) -> torch.Tensor | None:
    from safetensors.torch import load_file

    try:
        logits = load_file(str(path))[LOGITS_KEY]
    except Exception:  # noqa: BLE001 - a missing, truncated or foreign file is a miss: recompute and overwrite
        return None
    if logits.ndim != 2 or logits.shape[0] != num_samples:
        return None
    return logits


def _write(path: Path, logits: torch.Tensor, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    try:
        atomic_save(path, lambda tmp: save_file({LOGITS_KEY: logits.contiguous()}, str(tmp), metadata=metadata))
    except OSError:
        pass  # a read-only or full cache only costs recomputation next time


def ingredient_logits(ingredient: Ingredient, data: ImageData, *, cache: bool = True, batch_size: int = 500,
                      device=None, progress: bool = True, stats: CacheStats | None = None,
                      precision: str | None = None) -> torch.Tensor:
    """Logits (float32, CPU, ``len(data)`` x num_classes) of one ingredient on ``data``, from the cache if present.

    With ``cache=False`` the model is always run and nothing is read or written. ``stats``, when given, counts
    hits and misses. ``precision``: as in :func:`~hfsoup.eval.metrics.predict_logits` (``None``: the command's);
    it is resolved before the cache is read, so the entry matches the numerics asked for.
    """
    device = torch.device(device) if device is not None else default_device()
    requested = ambient_precision() if precision is None else check_precision_name(precision)
    model = None
    if requested == "auto" and native_bf16(device):  # auto's check needs the model
        model = ingredient.create_model()
        resolved = resolve_precision(precision, model, data, device=device, batch_size=batch_size)
    else:
        resolved = "fp32" if requested == "auto" else requested
    path = cache_path(ingredient, data, resolved) if cache else None
    if path is not None and path.is_file():
        logits = _read(path, len(data))
        if logits is not None:
            if stats is not None:
                stats.hits += 1
            return logits
    logits = predict_logits(model if model is not None else ingredient.create_model(), data, batch_size=batch_size,
                            device=device, progress=progress, desc=f"logits {ingredient.name}"[:40],
                            precision=resolved)
    if stats is not None:
        stats.misses += 1
    if path is not None:
        _write(path, logits.float(), {"reference": ingredient.reference, "sha256": ingredient.sha256,
                                      "dataset": str(data.dataset), "split": str(data.split),
                                      "fingerprint": data.fingerprint, "num_samples": str(len(data)),
                                      "precision": resolved})
    return logits


def all_logits(ingredients, data: ImageData, *, cache: bool = True, stats: CacheStats | None = None,
               **eval_kwargs) -> torch.Tensor:
    """Stacked logits (float32, N x num_samples x num_classes) of every ingredient on ``data``."""
    return torch.stack([ingredient_logits(ing, data, cache=cache, stats=stats, **eval_kwargs) for ing in ingredients])
