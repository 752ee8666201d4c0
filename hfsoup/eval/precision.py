"""The numerics of evaluation: fp32, or bf16 autocast where the hardware runs it natively and the results hold.

``auto`` (the default of every evaluating command) picks bf16 only on a device with native bf16 arithmetic
(CUDA with bf16 support; a CPU with AMX or AVX-512 BF16) *and* after a check on a few batches shows the results
unchanged within :data:`MIN_AGREEMENT` (identical top-1 predictions), :data:`MAX_ACCURACY_DELTA` and
:data:`MAX_LOSS_RELATIVE`; otherwise fp32. On a CPU without native bf16 (AVX2 only, say) autocast emulates bf16
and is many times slower than fp32, so ``auto`` is fp32 there, without a check.

The choice (:class:`PrecisionChoice`, with its :class:`PrecisionCheck`) is recorded beside the results.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from hfsoup.errors import InvalidParameterError

#: ``--precision`` values: ``auto`` resolves to one of the other two.
PRECISIONS = ("fp32", "bf16", "auto")
#: The check's thresholds: bf16 must give the fp32 top-1 prediction on at least this fraction of the images…
MIN_AGREEMENT = 0.999
#: …an accuracy within 0.1 points (as a fraction: 0.001)…
MAX_ACCURACY_DELTA = 0.001
#: …and a mean loss within 0.5 % (relative) of fp32's.
MAX_LOSS_RELATIVE = 0.005
#: Images of the check: "a few batches" (fewer when the data is smaller).
CHECK_IMAGES = 1000

_AMBIENT: contextvars.ContextVar[str] = contextvars.ContextVar("hfsoup_precision", default="auto")
# Within use_precision: the ambient ``auto`` resolved per device, so a command checks once, not per evaluation.
_RESOLVED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hfsoup_precision_resolved", default=None)


@dataclass(frozen=True)
class PrecisionCheck:
    """A candidate precision against fp32 on the same images (logits of both, labels)."""

    precision: str  # the candidate: "bf16"
    num_samples: int
    agreement: float  # fraction of images whose top-1 prediction is the same as fp32's
    accuracy_fp32: float
    accuracy: float
    loss_fp32: float
    loss: float
    passed: bool

    @property
    def accuracy_delta(self) -> float:
        return abs(self.accuracy - self.accuracy_fp32)

    @property
    def finite(self) -> bool:
        """Whether both losses are finite (a check whose losses are not never passes)."""
        return math.isfinite(self.loss) and math.isfinite(self.loss_fp32)

    @property
    def loss_relative(self) -> float:
        return abs(self.loss - self.loss_fp32) / max(abs(self.loss_fp32), 1e-12)

    def to_dict(self) -> dict:
        return dict(asdict(self), thresholds={"min_agreement": MIN_AGREEMENT, "max_accuracy_delta": MAX_ACCURACY_DELTA,
                                              "max_loss_relative": MAX_LOSS_RELATIVE})


@dataclass(frozen=True)
class PrecisionChoice:
    """What evaluation runs in: ``precision`` (fp32 or bf16) for the ``requested`` value, why, and the check."""

    requested: str
    precision: str
    reason: str
    check: PrecisionCheck | None = None

    def to_dict(self) -> dict:
        return {"requested": self.requested, "precision": self.precision, "reason": self.reason,
                "check": self.check.to_dict() if self.check else None}

    @classmethod
    def from_dict(cls, doc: dict) -> "PrecisionChoice":
        """The choice :meth:`to_dict` wrote (a loss written as null, not finite, reads back as NaN)."""
        check = doc.get("check")
        if isinstance(check, dict):
            names = [f for f in PrecisionCheck.__dataclass_fields__ if f in check]
            check = PrecisionCheck(**{f: (math.nan if check[f] is None and f != "precision" else check[f])
                                      for f in names})
        else:
            check = None
        return cls(str(doc.get("requested", "auto")), str(doc["precision"]), str(doc.get("reason", "")), check)


def check_precision_name(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else :class:`InvalidParameterError`."""
    if precision not in PRECISIONS:
        raise InvalidParameterError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}",
                                    parameter="precision")
    return precision


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA with bf16 support; a CPU with AMX (``amx_bf16``) or
    AVX-512 BF16 (``avx512_bf16``); never MPS or other devices (bf16 is emulated or unsupported there)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "AMX" in capability or "BF16" in capability or bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def autocast(precision: str, device: str | torch.device):
    """The context evaluation runs in: bf16 autocast on ``device`` for ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise InvalidParameterError(f"resolve precision '{precision}' first (fp32 or bf16 here)",
                                    parameter="precision")
    return contextlib.nullcontext()


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor, labels: torch.Tensor,
                   precision: str = "bf16") -> PrecisionCheck:
    """The check of ``candidate`` logits against fp32 ``reference`` logits on the same images (float64 metrics)."""
    labels = labels.to(reference.device)
    ref, cand = reference.double(), candidate.double().to(reference.device)
    pred_ref, pred = ref.argmax(dim=1), cand.argmax(dim=1)
    n = int(labels.shape[0])
    agreement = (pred_ref == pred).double().mean().item() if n else 1.0
    acc_ref = (pred_ref == labels).double().mean().item() if n else 0.0
    acc = (pred == labels).double().mean().item() if n else 0.0
    loss_ref = F.cross_entropy(ref, labels).item() if n else 0.0
    loss = F.cross_entropy(cand, labels).item() if n else 0.0
    rel = abs(loss - loss_ref) / max(abs(loss_ref), 1e-12)
    # A loss that is not finite (overflowing logits) cannot be "within 0.5 %": such a check never passes (said
    # outright, not left to NaN comparisons being False).
    finite = math.isfinite(loss) and math.isfinite(loss_ref)
    passed = (n > 0 and finite and agreement >= MIN_AGREEMENT and abs(acc - acc_ref) <= MAX_ACCURACY_DELTA + 1e-12
              and rel <= MAX_LOSS_RELATIVE)
    return PrecisionCheck(precision=precision, num_samples=n, agreement=agreement, accuracy_fp32=acc_ref,
                          accuracy=acc, loss_fp32=loss_ref, loss=loss, passed=passed)


def check_precision(logits_fn: Callable[[str], torch.Tensor], labels: torch.Tensor,
                    precision: str = "bf16") -> PrecisionCheck:
    """Run ``logits_fn("fp32")`` and ``logits_fn(precision)`` (logits of the same few batches) and compare them
    (:func:`compare_logits`). :func:`hfsoup.eval.metrics.choose_eval_precision` builds ``logits_fn`` for a model.

    On CUDA both passes use cuDNN's deterministic kernels and no autotuning: the same model on the same images
    gives the same decision in every process (the shards of a study decide independently), even near a threshold.
    """
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True  # only these two: TF32 and the rest stay as the user set
    try:
        return compare_logits(logits_fn("fp32"), logits_fn(precision), labels, precision)
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def choose_precision(requested: str, device: str | torch.device, *,
                     logits_fn: Callable[[str], torch.Tensor] | None = None,
                     labels: torch.Tensor | None = None) -> PrecisionChoice:
    """Resolve ``requested`` (:data:`PRECISIONS`) for ``device``; ``logits_fn``/``labels``: what to check on (see
    :func:`check_precision`; ``None``: nothing to check on).

    ``fp32``: fp32. ``bf16``: bf16, forced (the check is run and recorded when there is something to check on, but
    does not decide). ``auto``: fp32 unless :func:`native_bf16`; there, bf16 if the check passes (fp32 if it fails
    or there is nothing to check on).
    """
    check_precision_name(requested)
    device = torch.device(device)
    can_check = logits_fn is not None and labels is not None and len(labels) > 0
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", "requested")
    if requested == "bf16":
        check = check_precision(logits_fn, labels) if can_check else None
        emulated = "" if native_bf16(device) else f" (no native bf16 on this {device.type}: emulated, slow)"
        return PrecisionChoice("bf16", "bf16", "requested" + emulated, check)
    if not native_bf16(device):
        return PrecisionChoice("auto", "fp32", f"no native bf16 on this {device.type}")
    if not can_check:
        return PrecisionChoice("auto", "fp32", "native bf16, but no data to check it on")
    check = check_precision(logits_fn, labels)
    if check.passed:
        return PrecisionChoice("auto", "bf16", f"native bf16 on this {device.type}; results hold", check)
    if not check.finite:
        return PrecisionChoice("auto", "fp32", f"native bf16 on this {device.type}, but the check's loss is not "
                                               f"finite (the logits overflow): nothing to compare", check)
    return PrecisionChoice("auto", "fp32", f"native bf16 on this {device.type}, but results differ", check)


def ambient_precision() -> str:
    """The precision evaluation uses when a caller gives none: ``auto`` unless set by :func:`use_precision`."""
    return _AMBIENT.get()


@contextlib.contextmanager
def use_precision(precision: str) -> Iterator[str]:
    """Within the block, evaluations that are not told a precision use ``precision`` (a command's
    ``--precision``, reaching the recipes' own evaluations: greedy, RADIN, learned)."""
    token = _AMBIENT.set(check_precision_name(precision))
    memo = _RESOLVED.set({})
    try:
        yield precision
    finally:
        _RESOLVED.reset(memo)
        _AMBIENT.reset(token)


def resolve_ambient(device: str | torch.device, choose: Callable[[], PrecisionChoice]) -> PrecisionChoice:
    """``choose()`` (the ambient precision's choice on ``device``), remembered per device within
    :func:`use_precision`: greedy or RADIN evaluate hundreds of candidates, and ``auto`` is checked once."""
    memo = _RESOLVED.get()
    if memo is None:
        return choose()
    key = str(torch.device(device))
    if key not in memo:
        memo[key] = choose()
    return memo[key]


__all__ = ["PRECISIONS", "MIN_AGREEMENT", "MAX_ACCURACY_DELTA", "MAX_LOSS_RELATIVE", "CHECK_IMAGES",
           "PrecisionCheck", "PrecisionChoice", "check_precision_name", "cpu_flags", "native_bf16", "autocast",
           "compare_logits", "check_precision", "choose_precision", "ambient_precision", "use_precision",
           "resolve_ambient"]
