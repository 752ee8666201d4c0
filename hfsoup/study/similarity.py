"""Similarity of a pair of models, for the pair study ("When is model souping tasty?", SPEC §5).

Two families of metrics:

- weight space: L2 distance and cosine similarity of the flattened parameter vectors, streamed key by key in
  float64 so the flattened vector of a model never exists in memory;
- output space, from logits (and optionally pooled features) cached once per model: symmetrised KL divergence of
  the softmax outputs, logit MSE, linear CKA, top-1 disagreement and the accuracy of the two-model logit ensemble.

Every reduction runs in float64 on the tensors' own device (CPU or CUDA); only Python scalars come back. No function
modifies its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "OutputSimilarity",
    "WeightSimilarity",
    "disagreement",
    "ensemble_accuracy",
    "is_parameter_key",
    "linear_cka",
    "logit_mse",
    "output_similarity",
    "symmetric_kl",
    "weight_similarity",
]

# BN running statistics are data statistics, not learned weights: SPEC §5 excludes them (and integer buffers such as
# num_batches_tracked, which the dtype test removes) from the weight-space distance.
_EXCLUDED_SUFFIXES = ("running_mean", "running_var")


def is_parameter_key(key: str, dtype: torch.dtype) -> bool:
    """Whether the state-dict entry ``key`` of dtype ``dtype`` counts as a parameter for weight-space similarity.

    True for floating-point tensors whose key does not end with ``running_mean`` or ``running_var``. This follows
    SPEC §5: "BN running statistics and integer buffers excluded" -- integer buffers (``num_batches_tracked``) are
    excluded by their dtype, the float BN running statistics by their key.
    """
    return dtype.is_floating_point and not key.endswith(_EXCLUDED_SUFFIXES)


# ----------------------------------------------------------------------------------------------------- weight space


@dataclass(frozen=True)
class WeightSimilarity:
    """Weight-space similarity of two models.

    Attributes:
        l2: Euclidean distance ``||a - b||`` of the flattened parameter vectors.
        cosine: cosine similarity ``<a, b> / (||a|| ||b||)``; 1.0 when both vectors are zero, 0.0 when exactly one is.
        num_parameters: number of scalar parameters compared.
    """

    l2: float
    cosine: float
    num_parameters: int


def weight_similarity(pairs: Iterable[Tuple[str, torch.Tensor, torch.Tensor]]) -> WeightSimilarity:
    """L2 distance and cosine similarity of two models' flattened parameters, streamed key by key.

    Args:
        pairs: ``(key, tensor_a, tensor_b)`` triples, typically ``(k, sd_a[k], sd_b[k])`` over the shared keys. Keys
            for which :func:`is_parameter_key` is False are skipped, even if the caller did not filter them.

    Returns:
        A :class:`WeightSimilarity`. The dot product, squared norms and squared difference are accumulated as one
        4-element float64 tensor on the tensors' device, so only one key is ever converted at a time and only four
        scalars leave the device, once. Cosine is defined as 1.0 when both vectors are zero (identical models) and
        0.0 when exactly one is (no direction to compare). An empty stream gives ``l2=0.0, cosine=1.0,
        num_parameters=0``.

    Raises:
        ValueError: if the two tensors of a key differ in shape.
    """
    # [<a, b>, ||a||^2, ||b||^2, ||a - b||^2] as float64 on the first tensor's device; None until a key counts.
    acc: Optional[torch.Tensor] = None
    count = 0
    for key, a, b in pairs:
        if not is_parameter_key(key, a.dtype) or not is_parameter_key(key, b.dtype):
            continue
        if a.shape != b.shape:
            raise ValueError(f"{key}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        # Out-of-place conversions: the caller's tensors are never touched.
        a64 = a.detach().reshape(-1).to(torch.float64)
        b64 = b.detach().reshape(-1).to(device=a64.device, dtype=torch.float64)
        # The difference is reduced directly rather than derived from the norms and the dot product: for nearby
        # models ||a||^2 + ||b||^2 - 2<a, b> loses every significant digit to cancellation.
        terms = torch.stack([a64 @ b64, a64 @ a64, b64 @ b64, (a64 - b64).square().sum()])
        acc = terms if acc is None else acc + terms.to(acc.device)
        count += a64.numel()
    if acc is None:
        return WeightSimilarity(l2=0.0, cosine=1.0, num_parameters=0)
    dot_v, na2, nb2, d2 = (float(v) for v in acc.tolist())
    if na2 == 0.0 and nb2 == 0.0:
        cosine = 1.0
    elif na2 == 0.0 or nb2 == 0.0:
        cosine = 0.0
    else:
        # sqrt(na2 * nb2) (not sqrt(na2) * sqrt(nb2)) gives exactly 1.0 for a model with itself; clamp the rounding.
        cosine = max(-1.0, min(1.0, dot_v / math.sqrt(na2 * nb2)))
    return WeightSimilarity(l2=math.sqrt(d2), cosine=cosine, num_parameters=count)


# ----------------------------------------------------------------------------------------------------- output space


def _pair64(a: torch.Tensor, b: torch.Tensor, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both matrices as float64 on ``a``'s device, after checking they are non-empty (S, K) matrices alike in shape."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{what} must be 2-D (S, K), got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{what} shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{what} have no rows")
    return a.detach().to(torch.float64), b.detach().to(device=a.device, dtype=torch.float64)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean over the S rows of ½·(KL(p_a‖p_b) + KL(p_b‖p_a)), p = softmax of each row of logits, in float64.

    Uses log_softmax for stability and the identity ½·(KL(p‖q) + KL(q‖p)) = ½·Σ (p − q)(log p − log q), whose every
    term is non-negative: the result is exactly 0 for identical inputs and never negative through rounding.
    """
    a, b = _pair64(logits_a, logits_b, "logits")
    log_pa = torch.log_softmax(a, dim=1)
    log_pb = torch.log_softmax(b, dim=1)
    terms = (log_pa.exp() - log_pb.exp()) * (log_pa - log_pb)
    # A class both models give probability 0 (both logits -inf) contributes 0, not 0·(-inf + inf) = nan.
    terms = torch.where(log_pa == log_pb, torch.zeros_like(terms), terms)
    return float((0.5 * terms.sum(dim=1)).mean().item())


def logit_mse(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Mean over all S·K elements of (logits_a − logits_b)², in float64."""
    a, b = _pair64(logits_a, logits_b, "logits")
    return float((a - b).square().mean().item())


def disagreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of the S rows whose top-1 class (argmax) differs between the two models."""
    a, b = _pair64(logits_a, logits_b, "logits")
    return float((a.argmax(dim=1) != b.argmax(dim=1)).to(torch.float64).mean().item())


LabelsLike = Union[torch.Tensor, np.ndarray, Sequence[int]]


def ensemble_accuracy(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: LabelsLike) -> float:
    """Top-1 accuracy of the logit ensemble (mean of the two logit matrices) against integer ``labels`` (S,)."""
    a, b = _pair64(logits_a, logits_b, "logits")
    target = torch.as_tensor(labels, device=a.device).reshape(-1)
    if target.numel() != a.shape[0]:
        raise ValueError(f"{target.numel()} labels for {a.shape[0]} rows of logits")
    pred = ((a + b) * 0.5).argmax(dim=1)
    return float((pred == target.to(pred.dtype)).to(torch.float64).mean().item())


def _centre_columns(x: torch.Tensor) -> torch.Tensor:
    """Columns of ``x`` minus their means; constant columns become exactly 0.

    A float mean of identical values is not always that value (rounding of the sum), which would leave ~1e-17
    residues that make a constant representation look informative; zeroing constant columns keeps the CKA of a
    constant representation exactly at its documented value 0.0.
    """
    centred = x - x.mean(dim=0, keepdim=True)
    constant = (x == x[:1]).all(dim=0, keepdim=True)
    return torch.where(constant, torch.zeros_like(centred), centred)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between representations ``x`` (S, D1) and ``y`` (S, D2), in float64.

    With column-centred xᶜ, yᶜ: CKA = ||yᶜᵀxᶜ||²_F / (||xᶜᵀxᶜ||_F · ||yᶜᵀyᶜ||_F). The same quantity is computed in
    feature space (D×D products, cost ~S·(D1+D2)²) or in sample space with the S×S Gram matrices K = xᶜxᶜᵀ,
    L = yᶜyᶜᵀ (⟨K, L⟩_F / (||K||_F ||L||_F), cost ~S²·(D1+D2)), whichever is cheaper for the shapes: 10,000 images
    of 2048-d features stay in feature space, a few samples of wide features use the Gram form.

    CKA is defined as 0.0 when either representation is constant over the samples (a zero denominator): a constant
    representation carries no information to share with the other.
    """
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"representations must be 2-D (S, D), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"representations have {x.shape[0]} and {y.shape[0]} samples")
    if x.shape[0] == 0:
        raise ValueError("representations have no samples")
    xc = _centre_columns(x.detach().to(torch.float64))
    yc = _centre_columns(y.detach().to(device=xc.device, dtype=torch.float64))
    s, d1, d2 = xc.shape[0], xc.shape[1], yc.shape[1]
    if s < d1 + d2:
        k = xc @ xc.T
        l_ = yc @ yc.T
        numerator = (k * l_).sum()
        denominator = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_)
    else:
        numerator = (yc.T @ xc).square().sum()
        denominator = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    num_v, den_v = (float(v) for v in torch.stack([numerator, denominator]).tolist())
    if den_v == 0.0:
        return 0.0
    return num_v / den_v


@dataclass(frozen=True)
class OutputSimilarity:
    """Output-space similarity of two models on the same S images.

    Attributes:
        kl: mean symmetrised KL divergence of the softmax outputs (:func:`symmetric_kl`).
        mse: mean squared difference of the logits (:func:`logit_mse`).
        cka_logits: linear CKA of the logits (:func:`linear_cka`).
        cka_features: linear CKA of the penultimate (pooled) features, None when features were not given.
        disagreement: fraction of images with different top-1 predictions (:func:`disagreement`).
        ensemble_accuracy: top-1 accuracy of the logit ensemble, None when labels were not given.
    """

    kl: float
    mse: float
    cka_logits: float
    cka_features: Optional[float]
    disagreement: float
    ensemble_accuracy: Optional[float]


def output_similarity(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    *,
    features_a: Optional[torch.Tensor] = None,
    features_b: Optional[torch.Tensor] = None,
    labels: Optional[LabelsLike] = None,
) -> OutputSimilarity:
    """All output-space metrics of a pair from their cached logits (S, K), optional features (S, D) and labels (S,).

    Raises:
        ValueError: on mismatched shapes, or when only one of ``features_a`` / ``features_b`` is given.
    """
    if (features_a is None) != (features_b is None):
        raise ValueError("give both features_a and features_b, or neither")
    return OutputSimilarity(
        kl=symmetric_kl(logits_a, logits_b),
        mse=logit_mse(logits_a, logits_b),
        cka_logits=linear_cka(logits_a, logits_b),
        cka_features=None if features_a is None else linear_cka(features_a, features_b),
        disagreement=disagreement(logits_a, logits_b),
        ensemble_accuracy=None if labels is None else ensemble_accuracy(logits_a, logits_b, labels),
    )
