"""The study's per-model cache: each model is evaluated once (O(N) forward passes), whatever the number of pairs.

For every model the cache holds, on one evaluation split:

* ``test``: the logits (float32, S x K) and the penultimate (pooled) features (float32, S x D) on the test split,
  with the model's accuracy and loss in the file's metadata;
* ``c-<corruption>``: the logits on one CIFAR-100-C corruption at the study's severity, with accuracy and loss.

Pairwise output-space metrics (KL, MSE, CKA, disagreement, ensemble accuracy) are computed from these tensors, never
from a new forward pass. Entries live under the hfsoup cache (``$HFSOUP_CACHE`` or ``$HF_HOME/hfsoup``, see
:func:`hfsoup.eval.logit_cache.cache_root`) so that every study folder reuses them::

    <root>/study/<weights sha256>/<part>-<key>.safetensors

where ``key`` hashes what changes the outputs without changing the weights: the split's content fingerprint, the
model config (normalisation mean/std), the numerics (``fp32`` or ``bf16`` autocast) and the cache format. Entries are
written atomically (:func:`hfsoup.core.files.atomic_save`); concurrent writers of the same entry (several
processes, ``--shard`` jobs) are harmless. A missing, truncated or foreign file is a miss.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from hfsoup.core.files import atomic_save

__all__ = ["CACHE_FORMAT", "CachedOutputs", "ModelCache", "default_cache_dir"]

#: Bumped when what an entry holds (or how it is computed) changes: old entries are then never read.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``cache_root() / "study"`` (``$HFSOUP_CACHE/study``, by default ``~/.cache/huggingface/hfsoup/study``)."""
    from hfsoup.eval.logit_cache import cache_root

    return cache_root() / "study"


@dataclass
class CachedOutputs:
    """One model's outputs on one split: logits, optional features, accuracy and loss."""

    logits: torch.Tensor
    features: torch.Tensor | None
    accuracy: float
    loss: float


def _float(text: str | None) -> float:
    try:
        return float(text)  # "nan" for a model whose loss is NaN
    except (TypeError, ValueError):
        return math.nan


class ModelCache:
    """Per-model outputs on disk, keyed by weights sha + split fingerprint + config + numerics (module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fingerprint: str, config: dict, precision: str) -> str:
        """24 hex digits identifying (split content, model config, numerics, cache format)."""
        text = json.dumps({"fingerprint": fingerprint, "config": config, "precision": precision,
                           "format": CACHE_FORMAT}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

    def path(self, sha: str, part: str, fingerprint: str, config: dict, precision: str) -> Path:
        """Where the outputs of the model ``sha`` on ``part`` (``test`` or ``c-<corruption>``) are cached."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", part):
            raise ValueError(f"bad cache part name {part!r}")
        return self.root / sha / f"{part}-{self.key(fingerprint, config, precision)}.safetensors"

    def load(self, path: Path, num_samples: int, *, features: bool) -> CachedOutputs | None:
        """The entry at ``path``, or None (a miss) when it is missing, unreadable or not of the expected shape."""
        from safetensors import safe_open

        if not path.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                logits = f.get_tensor("logits")
                feats = f.get_tensor("features") if features else None
        except Exception:  # noqa: BLE001 - truncated or foreign file: recompute and overwrite
            self.misses += 1
            return None
        if logits.ndim != 2 or logits.shape[0] != num_samples or (
                feats is not None and (feats.ndim != 2 or feats.shape[0] != num_samples)):
            self.misses += 1
            return None
        self.hits += 1
        return CachedOutputs(logits, feats, _float(meta.get("accuracy")), _float(meta.get("loss")))

    def save(self, path: Path, outputs: CachedOutputs, metadata: dict[str, str]) -> None:
        """Write an entry atomically; a read-only or full cache only costs recomputation next time."""
        from safetensors.torch import save_file

        tensors = {"logits": outputs.logits.detach().float().cpu().contiguous()}
        if outputs.features is not None:
            tensors["features"] = outputs.features.detach().float().cpu().contiguous()
        meta = {**{k: str(v) for k, v in metadata.items()}, "accuracy": repr(float(outputs.accuracy)),
                "loss": repr(float(outputs.loss)), "format": "pt", "cache_format": str(CACHE_FORMAT)}
        try:
            atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        except OSError:
            pass
