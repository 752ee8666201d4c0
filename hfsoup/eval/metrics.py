"""Evaluation: top-1 accuracy and mean cross-entropy of models on an :class:`~hfsoup.data.images.ImageData`, and the soup
gain of a soup against its ingredients."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hfsoup.core.results import EvalResult, soup_gain  # noqa: F401 - re-exported: evaluation's vocabulary
from hfsoup.data.images import ImageData, check_label_values
from hfsoup.eval.precision import (CHECK_IMAGES, PrecisionChoice, ambient_precision, autocast,
                                   check_precision_name, choose_precision, resolve_ambient)


def default_device() -> torch.device:
    """CUDA when present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def norm_stats(model) -> tuple:
    """The (mean, std) a model's inputs are normalised with: its ``pretrained_cfg``, else CIFAR-100's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.5071, 0.4867, 0.4408))), tuple(cfg.get("std", (0.2675, 0.2565, 0.2761)))




@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data: ImageData, *, batch_size: int = 500,
                   device: str | torch.device | None = None, progress: bool = True, desc: str = "eval",
                   features: bool = False, precision: "str | PrecisionChoice | None" = None) -> torch.Tensor:
    """Logits (float32, on CPU, N x num_classes) of ``model`` on every image of ``data``.

    The images are normalised once per (mean, std) and kept by ``data``; batches are moved to the device as
    they go. With ``features=True`` the penultimate (pooled) features are returned instead.

    ``precision``: ``fp32``, ``bf16`` (autocast), ``auto`` (bf16 only with native bf16 and results that hold, see
    :func:`hfsoup.eval.precision.choose_precision`; fp32 on a CPU without AMX/AVX-512 BF16) or a resolved
    :class:`~hfsoup.eval.precision.PrecisionChoice`; ``None``: the ambient one (``--precision``, default ``auto``).
    """
    if not features:  # labels outside the model's classes: a clear error now, not a wrong loss later
        data.check_labels(getattr(model, "num_classes", None))
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(precision, model, data, device=device, batch_size=batch_size)
    model = model.to(device).eval()
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_all = data.normalized(*norm_stats(model))
    outs = []
    for start in tqdm(range(0, len(data), batch_size), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        x = x_all[start:start + batch_size].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            if features:
                y = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                y = model(x)
        outs.append(y.float().cpu())
    return torch.cat(outs)


def choose_eval_precision(requested: str, model: torch.nn.Module, data: ImageData, *,
                          device: str | torch.device | None = None, batch_size: int = 500,
                          images: int = CHECK_IMAGES) -> PrecisionChoice:
    """:func:`~hfsoup.eval.precision.choose_precision` for ``model`` on ``data``: the check (where one runs) compares
    fp32 and bf16 logits on the first ``images`` images."""
    device = torch.device(device) if device is not None else default_device()
    head = data.subset(images) if len(data) > images else data

    def logits(precision: str) -> torch.Tensor:
        return predict_logits(model, head, batch_size=batch_size, device=device, progress=False, precision=precision)

    return choose_precision(requested, device, logits_fn=logits, labels=head.labels)


def resolve_precision(precision: "str | PrecisionChoice | None", model: torch.nn.Module, data: ImageData, *,
                      device: str | torch.device, batch_size: int = 500) -> str:
    """``fp32`` or ``bf16`` for ``precision`` (see :func:`predict_logits`); ``auto`` may check ``model`` on the first
    images of ``data`` (only on a device with native bf16)."""
    if isinstance(precision, PrecisionChoice):
        return precision.precision
    if precision is None and ambient_precision() == "auto":  # a command's --precision auto: checked once
        return resolve_ambient(device, lambda: choose_eval_precision("auto", model, data, device=device,
                                                                     batch_size=batch_size)).precision
    precision = ambient_precision() if precision is None else check_precision_name(precision)
    if precision == "auto":
        return choose_eval_precision("auto", model, data, device=device, batch_size=batch_size).precision
    return precision


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy (float64 reduction) from logits. A label outside
    ``[0, num_classes)`` raises :class:`~hfsoup.errors.DatasetError` (cross-entropy would skip -100 silently)."""
    check_label_values(labels, int(logits.shape[1]) if logits.ndim == 2 else None)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits.double(), labels, reduction="mean").item()
    acc = (logits.argmax(dim=1) == labels).double().mean().item()
    return EvalResult(accuracy=acc, loss=loss, num_samples=int(labels.shape[0]))


def evaluate_model(model: torch.nn.Module, data: ImageData, **kwargs) -> EvalResult:
    """Evaluate one model (see :func:`predict_logits` for options)."""
    return metrics_from_logits(predict_logits(model, data, **kwargs), data.labels)


def evaluate(models: Mapping[str, object], data: ImageData, **kwargs) -> dict[str, EvalResult]:
    """Evaluate several models on the same data (decoded and normalised once).

    ``models`` maps display names to ``torch.nn.Module`` s, :class:`~hfsoup.core.ingredients.Ingredient` s or
    :class:`~hfsoup.core.soup.Soup` s (anything with ``create_model()``); models are built one at a time.
    """
    results = {}
    for name, m in models.items():
        module = m if isinstance(m, torch.nn.Module) else m.create_model()
        results[name] = evaluate_model(module, data, desc=f"eval {name}"[:40], **kwargs)
        del module
    return results
