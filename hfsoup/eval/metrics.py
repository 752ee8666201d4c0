"""Evaluation: top-1 accuracy and mean cross-entropy of models on an :class:`~hfsoup.data.images.ImageData`, and the soup
gain of a soup against its ingredients."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hfsoup.core.results import EvalResult, soup_gain  # noqa: F401 - re-exported: evaluation's vocabulary
from hfsoup.data.images import ImageData


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
                   features: bool = False) -> torch.Tensor:
    """Logits (float32, on CPU, N x num_classes) of ``model`` on every image of ``data``.

    The images are normalised once per (mean, std) and kept by ``data``; batches are moved to the device as
    they go. With ``features=True`` the penultimate (pooled) features are returned instead.
    """
    device = torch.device(device) if device is not None else default_device()
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
        if features:
            y = model.forward_head(model.forward_features(x), pre_logits=True)
        else:
            y = model(x)
        outs.append(y.float().cpu())
    return torch.cat(outs)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy (float64 reduction) from logits."""
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
