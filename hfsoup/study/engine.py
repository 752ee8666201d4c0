"""The pair engine: every model's weights on the device, each soup built on the device into one preallocated model,
evaluated on data that lives on the device; only scalars come back to the host.

Pieces:

* :class:`WeightBank` — every model's tensors, loaded once, as one flat buffer per dtype per model (parameters
  first, then BN running statistics, integer buffers in their own buffer), kept on the device (104 ResNet-50s are
  about 10 GB);
* :class:`SoupBuilder` — ``(1 − α)·θ_a + α·θ_b`` computed with torch ops on the device, exactly as
  :func:`hfsoup.core.averaging.average` does (float64 accumulation, cast back to each tensor's dtype, integer buffers
  by the same policy), then copied into the preallocated model's tensors (``load_state_dict`` semantics, no
  re-creation). On the CPU the arithmetic runs tensor by tensor, so the soup equals ``average`` bit for bit; on
  CUDA it runs on whole flat buffers (a handful of kernels per soup);
* :class:`EvalSet` / :class:`Runner` — uint8 images and labels on the device, normalised batch by batch there;
  bf16 autocast and channels-last on CUDA only; logits written into a preallocated buffer;
* :class:`PairEngine` — the per-model pass (cached on disk, :mod:`hfsoup.study.cache`), the pair similarity and
  the soup scores.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from hfsoup.core.averaging import INTEGER_POLICIES
from hfsoup.errors import InvalidWeightsError
from hfsoup.eval.precision import check_precision_name, native_bf16
from hfsoup.study.similarity import is_parameter_key, output_similarity, weight_similarity

__all__ = ["EvalSet", "FeaturesAndLogits", "Runner", "WeightBank", "SoupBuilder", "PairEngine", "ModelOutputs",
           "SoupScores", "PairSimilarity", "device_metrics", "canonical_device", "precision_name", "single_thread"]


def canonical_device(device: str | torch.device) -> torch.device:
    """``device`` with its index: ``cuda`` is ``cuda:<current>``, so the weights and the model, moved to the same
    device under two spellings, compare equal (``torch.device("cuda") != torch.device("cuda:0")``)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def precision_name(device: torch.device, compile: bool = False, precision: str = "auto") -> str:
    """The numerics of evaluation on ``device``: ``precision`` (``fp32``/``bf16``; ``auto``: ``bf16`` autocast where
    the device has native bf16, see :func:`hfsoup.eval.precision.native_bf16`, else ``fp32``), with ``+compile``
    when the forward is compiled (fused kernels round differently). Part of the cache key and of the study's
    identity. (``auto`` before its check: :func:`hfsoup.study.run.run_study` falls back to fp32 if it fails.)"""
    check_precision_name(precision)
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    return precision + ("+compile" if compile else "")


def device_metrics(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[accuracy, loss]`` (float64, on the logits' device): the operations of
    :func:`hfsoup.eval.metrics.metrics_from_logits`, without the two host synchronisations."""
    loss = F.cross_entropy(logits.double(), labels, reduction="mean")
    acc = (logits.argmax(dim=1) == labels).double().mean()
    return torch.stack([acc, loss])


@contextlib.contextmanager
def single_thread(device: torch.device):
    """On the CPU, run the block with one intra-op thread (thread-count independent sums); elsewhere a no-op."""
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class EvalSet:
    """One evaluation split on the device: uint8 images (N x C x H x W), int64 labels, the content fingerprint."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    fingerprint: str

    @classmethod
    def from_image_data(cls, data, name: str, device: torch.device) -> "EvalSet":
        """Move an :class:`~hfsoup.data.images.ImageData` to ``device`` (uint8: 4x less memory than float)."""
        images = data.images
        if images.dtype != torch.uint8:
            raise InvalidWeightsError(f"{name}: images must be uint8, got {images.dtype}")
        return cls(name, images.to(device).contiguous(), data.labels.to(device=device, dtype=torch.int64),
                   data.fingerprint)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class FeaturesAndLogits(torch.nn.Module):
    """``x -> (pooled features, logits)`` of a timm model in one pass (one graph for ``torch.compile``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.model.forward_features(x)
        return self.model.forward_head(fmap, pre_logits=True), self.model.forward_head(fmap)


class Runner:
    """Forward passes of a model over an :class:`EvalSet`, batch by batch, on one device.

    The batch is normalised on the device from uint8 with the same operations as
    :func:`hfsoup.eval.metrics.predict_logits` (``(x / 255 − mean) / std``), so on the CPU the logits are the same
    bits; on CUDA the forward runs under bf16 autocast with channels-last tensors.
    """

    def __init__(self, device: torch.device, batch_size: int = 500, *, autocast: bool | None = None,
                 channels_last: bool | None = None) -> None:
        if batch_size < 1:
            raise InvalidWeightsError(f"--batch-size must be positive, got {batch_size}")
        self.device = canonical_device(device)
        self.batch_size = int(batch_size)
        cuda = self.device.type == "cuda"
        self.autocast = cuda if autocast is None else bool(autocast)
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        self._stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast else "fp32"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _norm(self, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        if key not in self._stats:
            self._stats[key] = (torch.tensor(key[0], device=self.device).view(1, -1, 1, 1),
                                torch.tensor(key[1], device=self.device).view(1, -1, 1, 1))
        return self._stats[key]

    def _autocast(self):
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def forward(self, model, data: EvalSet, mean: Sequence[float], std: Sequence[float], *,
                features: bool = False, out: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (float32, N x K, on the device; written into ``out`` when given) and, with ``features=True``,
        the penultimate pooled features (float32, N x D) of ``model`` on ``data``.

        ``model`` is a timm model or a :class:`FeaturesAndLogits` (possibly compiled): the logits are
        ``forward_head(forward_features(x))``, which is what ``model(x)`` computes, bit for bit.
        """
        m, s = self._norm(mean, std)
        logits, feats = out, None
        both = FeaturesAndLogits(model) if hasattr(model, "forward_features") else model  # a timm model: wrap
        for start in range(0, len(data), self.batch_size):
            x = data.images[start:start + self.batch_size].float().div_(255.0).sub_(m).div_(s)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                pooled, y = both(x)
            if logits is None:
                logits = torch.empty(len(data), y.shape[1], dtype=torch.float32, device=self.device)
            logits[start:start + y.shape[0]].copy_(y)
            if features:
                if feats is None:
                    feats = torch.empty(len(data), pooled.shape[1], dtype=torch.float32, device=self.device)
                feats[start:start + pooled.shape[0]].copy_(pooled)
        return logits, feats


# ------------------------------------------------------------------------------------------------- weights
@dataclass
class _Group:
    """Keys of one dtype laid out in one flat buffer: ``keys[i]`` is ``flat[offsets[i]:offsets[i] + numels[i]]``."""

    dtype: torch.dtype
    keys: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    numels: list[int] = field(default_factory=list)
    num_parameters: int = 0  # elements of the leading parameter keys (weight-space similarity)
    size: int = 0

    def add(self, key: str, shape: tuple[int, ...]) -> None:
        n = math.prod(shape)
        self.keys.append(key)
        self.shapes.append(tuple(shape))
        self.offsets.append(self.size)
        self.numels.append(n)
        self.size += n

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[o:o + n].view(shape) for o, n, shape in zip(self.offsets, self.numels, self.shapes)]

    @property
    def floating(self) -> bool:
        return self.dtype.is_floating_point


def _layout(tensors: dict) -> list[_Group]:
    """Groups by dtype, keys in state-dict order within the group, parameter keys first (a contiguous prefix)."""
    groups: dict[torch.dtype, _Group] = {}
    ordered = sorted(tensors.items(), key=lambda kv: not is_parameter_key(kv[0], kv[1].dtype))  # stable
    for key, info in ordered:
        group = groups.setdefault(info.dtype, _Group(info.dtype))
        group.add(key, tuple(info.shape))
        if is_parameter_key(key, info.dtype):
            group.num_parameters = group.size
    return list(groups.values())


class WeightBank:
    """Every model's tensors on the device, loaded once: one flat buffer per dtype group per model."""

    def __init__(self, ingredients: Sequence, device: torch.device, *, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        self.device = canonical_device(device)
        self.groups = _layout(ingredients[0].tensors)
        self.buffers: list[list[torch.Tensor]] = []
        for ing in tqdm(ingredients, desc="loading weights", unit="model", disable=not progress, leave=False):
            flats = [torch.empty(g.size, dtype=g.dtype) for g in self.groups]
            with ing.open() as reader:
                for g, flat in zip(self.groups, flats):
                    for key, view in zip(g.keys, g.views(flat)):
                        view.copy_(reader.get_tensor(key).reshape(view.shape))
            self.buffers.append([f.to(self.device) for f in flats])

    def __len__(self) -> int:
        return len(self.buffers)

    def parameter_triples(self, i: int, j: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """``(key, flat_a, flat_b)`` over the parameters of models ``i`` and ``j`` (BN running statistics and
        integer buffers excluded, as :func:`~hfsoup.study.similarity.is_parameter_key` says), one per dtype."""
        return [(f"parameters.{g.dtype}", self.buffers[i][k][:g.num_parameters], self.buffers[j][k][:g.num_parameters])
                for k, g in enumerate(self.groups) if g.floating and g.num_parameters]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for flats in self.buffers for t in flats)


class SoupBuilder:
    """Builds ``(1 − α)·θ_i + α·θ_j`` of a :class:`WeightBank` into one preallocated model.

    The arithmetic is that of :func:`hfsoup.core.averaging.average` for the weights ``[1 − α, α]``: an ingredient of
    weight 0 is not read (α = 0 or 1 give a model exactly); equal weights are summed then divided once; otherwise
    ``acc = θ_i·(1 − α)`` then ``acc += α·θ_j``, in ``accumulate_dtype``, cast back to the tensor's dtype.
    Integer buffers follow ``integer_policy`` (``mean``: weighted mean rounded; ``max``; ``first``). ``fused`` runs
    each operation on whole flat buffers (few kernels: CUDA); otherwise tensor by tensor (the CPU, where it then
    equals ``average`` bit for bit).
    """

    def __init__(self, bank: WeightBank, model: torch.nn.Module, *, integer_policy: str = "mean",
                 accumulate_dtype: torch.dtype = torch.float64, fused: bool | None = None) -> None:
        if integer_policy not in INTEGER_POLICIES:
            raise InvalidWeightsError(f"unknown integer policy '{integer_policy}': choose one of {INTEGER_POLICIES}")
        if accumulate_dtype not in (torch.float64, torch.float32):
            raise InvalidWeightsError("accumulate_dtype must be torch.float64 or torch.float32")
        self.bank = bank
        self.integer_policy = integer_policy
        self.accumulate_dtype = accumulate_dtype
        self.fused = bank.device.type == "cuda" if fused is None else bool(fused)
        self.out = [torch.empty(g.size, dtype=g.dtype, device=bank.device) for g in bank.groups]
        # Preallocated accumulators: no allocation (nor page faults on the CPU) per soup.
        self._acc = [torch.empty(g.size, dtype=accumulate_dtype, device=bank.device) if g.floating else None
                     for g in bank.groups]
        state = model.state_dict(keep_vars=True)
        self._targets: list[torch.Tensor] = []
        self._sources: list[torch.Tensor] = []
        for g, flat in zip(bank.groups, self.out):
            for key, view in zip(g.keys, g.views(flat)):
                target = state[key]
                target = target.data if isinstance(target, torch.nn.Parameter) else target
                if target.device != bank.device:
                    raise InvalidWeightsError(f"the model is on {target.device}, the weights on {bank.device}")
                self._targets.append(target)
                self._sources.append(view)

    def _segments(self, k: int, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat] if self.fused else self.bank.groups[k].views(flat)

    @torch.no_grad()
    def build(self, i: int, j: int, alpha: float) -> torch.Tensor:
        """Write the soup of models ``i`` and ``j`` at ``alpha`` into the model; returns a 0-dim bool tensor on
        the device, True when every floating tensor of the soup is finite (read it when convenient)."""
        wa, wb = 1.0 - float(alpha), float(alpha)
        active = [(w, m) for w, m in ((wa, i), (wb, j)) if w > 0]
        if not active:
            raise InvalidWeightsError(f"alpha {alpha} gives no positive weight")
        equal = all(w == active[0][0] for w, _ in active)
        finite = []
        for k, g in enumerate(self.bank.groups):
            outs = self._segments(k, self.out[k])
            srcs = [self._segments(k, self.bank.buffers[m][k]) for _, m in active]
            if g.floating:
                accs = self._segments(k, self._acc[k])
                for n, out in enumerate(outs):
                    acc = accs[n]
                    for m, ((w, _), src) in enumerate(zip(active, srcs)):
                        scale = 1.0 if equal else w
                        if m == 0:
                            acc.copy_(src[n])  # the exact cast of average's `t.to(acc_dtype, copy=True)`
                            if scale != 1.0:
                                acc.mul_(scale)
                        else:
                            acc.add_(src[n], alpha=scale)
                    if equal and len(active) > 1:
                        acc.div_(len(active))
                    out.copy_(acc)
                finite.append(torch.isfinite(self.out[k].sum(dtype=torch.float64)))
            else:
                for n, out in enumerate(outs):
                    if self.integer_policy == "first":
                        out.copy_(srcs[0][n])
                        continue
                    result = None
                    for (w, _), src in zip(active, srcs):
                        if self.integer_policy == "max":
                            result = src[n].clone() if result is None else torch.maximum(result, src[n])
                        else:
                            t = src[n].to(torch.float64) * w
                            result = t if result is None else result.add_(t)
                    out.copy_(result if self.integer_policy == "max" else result.round())
        self._load()
        if not finite:
            return torch.ones((), dtype=torch.bool, device=self.bank.device)
        return torch.stack(finite).all()

    @torch.no_grad()
    def load_model(self, i: int) -> None:
        """Load model ``i`` exactly (the α = 0 soup of ``i`` with anything)."""
        for k in range(len(self.out)):
            self.out[k].copy_(self.bank.buffers[i][k])
        self._load()

    def _load(self) -> None:
        # load_state_dict semantics (a copy that casts to the model's dtype and memory format), without the
        # Python overhead of load_state_dict; _foreach_copy_ groups the copies into few kernels where it can.
        foreach_copy = getattr(torch, "_foreach_copy_", None)
        if foreach_copy is not None and self.fused:
            try:
                foreach_copy(self._targets, self._sources)
                return
            except (RuntimeError, TypeError):
                pass
        for target, source in zip(self._targets, self._sources):
            target.copy_(source)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The last soup's tensors in their source dtypes (copies, on the CPU): for tests and debugging."""
        out = {}
        for g, flat in zip(self.bank.groups, self.out):
            for key, view in zip(g.keys, g.views(flat)):
                out[key] = view.detach().cpu().clone()
        return out


# ---------------------------------------------------------------------------------------------------- engine
def corrupted_mean(corrupted: dict[str, tuple[float, float]], index: int) -> float | None:
    """Mean over corruptions of the accuracy (``index`` 0) or loss (1); None without corrupted data."""
    return math.fsum(v[index] for v in corrupted.values()) / len(corrupted) if corrupted else None


class CorruptedMeans:
    """``c_accuracy``/``c_loss``: the means over corruptions of a ``corrupted`` mapping (None without one)."""

    corrupted: dict[str, tuple[float, float]]

    @property
    def c_accuracy(self) -> float | None:
        return corrupted_mean(self.corrupted, 0)

    @property
    def c_loss(self) -> float | None:
        return corrupted_mean(self.corrupted, 1)


@dataclass
class ModelOutputs(CorruptedMeans):
    """One model's outputs, on the device: test logits and features, accuracy and loss, and per corruption
    ``(accuracy, loss)``."""

    logits: torch.Tensor
    features: torch.Tensor
    accuracy: float
    loss: float
    corrupted: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class PairSimilarity:
    """Weight- and output-space similarity of a pair (the same for every α)."""

    l2: float
    cosine: float
    kl: float
    mse: float
    cka_logits: float
    cka_features: float | None
    disagreement: float
    ensemble_acc: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SoupScores(CorruptedMeans):
    """Scores of one soup: finite or not, test accuracy/loss, per corruption ``(accuracy, loss)``."""

    finite: bool
    accuracy: float | None = None
    loss: float | None = None
    corrupted: dict[str, tuple[float, float]] = field(default_factory=dict)


class PairEngine:
    """Per-model outputs and per-pair soups of a set of ingredients on one device.

    Args:
        ingredients: compatible :class:`~hfsoup.core.ingredients.Ingredient` s (checked by the caller).
        test: the test split, :class:`EvalSet`.
        corrupted: CIFAR-100-C splits at the study's severity, by corruption name (may be empty).
        device: where weights, data and the model live.
        batch_size: evaluation batch size.
        integer_policy: integer buffers of the soups (see :class:`SoupBuilder`).
        cache: a :class:`~hfsoup.study.cache.ModelCache`, or None to always compute.
        precision: ``fp32``, ``bf16`` or ``auto`` (:func:`precision_name`); ``None``: bf16 on CUDA, else fp32.
        compile: ``torch.compile`` the forward (per-model pass and soups alike; the first batch of each shape pays
            the compilation; the numbers then differ from eager in the last bits, recorded as ``precision``).
    """

    def __init__(self, ingredients: Sequence, test: EvalSet, corrupted: dict[str, EvalSet] | None = None, *,
                 device: torch.device, batch_size: int = 500, integer_policy: str = "mean", cache=None,
                 progress: bool = False, compile: bool = False, precision: str | None = None) -> None:
        from hfsoup.core.models import build_model

        self.ingredients = list(ingredients)
        self.test = test
        self.corrupted = dict(corrupted or {})
        self.device = canonical_device(device)
        # precision: fp32 or bf16 (resolved by the caller); None: bf16 autocast on CUDA, fp32 elsewhere
        bf16 = None if precision is None else precision_name(self.device, False, precision) == "bf16"
        self.runner = Runner(self.device, batch_size, autocast=bf16)
        self.cache = cache
        self.progress = progress
        self.bank = WeightBank(self.ingredients, self.device, progress=progress)
        # The one model every soup is loaded into (the first ingredient's config, as hfsoup mix uses).
        model = build_model(self.ingredients[0].config, None, device="cpu")
        self.model = self.runner.prepare(model)
        self.base_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        self.builder = SoupBuilder(self.bank, self.model, integer_policy=integer_policy)
        # One forward function for the per-model pass and the soups, so both see the same numerics; compiled once
        # (the soups change the model's tensors in place, which does not recompile).
        both = FeaturesAndLogits(self.model)
        self.forward_fn = torch.compile(both) if compile else both
        self.precision = self.runner.precision + ("+compile" if compile else "")
        self.outputs: dict[int, ModelOutputs] = {}
        self._soup_logits: dict[str, torch.Tensor] = {}

    # -- per model -----------------------------------------------------------------------------------------
    def norm_stats(self, i: int) -> tuple[tuple, tuple]:
        """Normalisation mean/std of model ``i``: its config's ``pretrained_cfg`` over the architecture's."""
        cfg = {**self.base_cfg, **(self.ingredients[i].config.get("pretrained_cfg") or {})}
        return tuple(cfg.get("mean", (0.5071, 0.4867, 0.4408))), tuple(cfg.get("std", (0.2675, 0.2565, 0.2761)))

    def _cache_path(self, i: int, part: str, fingerprint: str):
        if self.cache is None:
            return None
        ing = self.ingredients[i]
        return self.cache.path(ing.sha256, part, fingerprint, ing.config, self.precision)

    def cached(self, i: int) -> bool:
        """Whether every output of model ``i`` is in the on-disk cache."""
        if self.cache is None:
            return False
        parts = [("test", self.test)] + [(f"c-{c}", d) for c, d in self.corrupted.items()]
        return all(self._cache_path(i, part, d.fingerprint).is_file() for part, d in parts)

    def model_outputs(self, i: int) -> ModelOutputs:
        """Outputs of model ``i`` (from memory, the disk cache, or one forward pass per split, then cached)."""
        if i in self.outputs:
            return self.outputs[i]
        from hfsoup.study.cache import CachedOutputs

        mean, std = self.norm_stats(i)
        loaded = False

        def get(part: str, data: EvalSet, features: bool) -> CachedOutputs:
            nonlocal loaded
            path = self._cache_path(i, part, data.fingerprint)
            if path is not None:
                hit = self.cache.load(path, len(data), features=features)
                if hit is not None:
                    return hit
            if not loaded:
                self.builder.load_model(i)
                loaded = True
            logits, feats = self.runner.forward(self.forward_fn, data, mean, std, features=features)
            acc, loss = device_metrics(logits, data.labels).tolist()
            result = CachedOutputs(logits, feats, acc, loss)
            if path is not None:
                ing = self.ingredients[i]
                self.cache.save(path, result, {"reference": ing.reference, "sha256": ing.sha256, "split": data.name,
                                               "fingerprint": data.fingerprint, "num_samples": len(data),
                                               "precision": self.precision})
            return result

        test = get("test", self.test, True)
        corrupted = {c: get(f"c-{c}", d, False) for c, d in self.corrupted.items()}
        out = ModelOutputs(test.logits.to(self.device), test.features.to(self.device), test.accuracy, test.loss,
                           {c: (r.accuracy, r.loss) for c, r in corrupted.items()})
        self.outputs[i] = out
        return out

    # -- per pair ------------------------------------------------------------------------------------------
    def similarity(self, i: int, j: int) -> PairSimilarity:
        """Weight-space (from the device weights) and output-space (from the cached outputs) similarity.

        On the CPU this runs on one thread: large reductions and matrix products sum in an order that depends on
        the number of threads, and the table must not depend on how many processes computed it (Accelerate gives
        each of its CPU processes fewer threads than a single process has).
        """
        a, b = self.model_outputs(i), self.model_outputs(j)
        with single_thread(self.device):
            w = weight_similarity(self.bank.parameter_triples(i, j))
            o = output_similarity(a.logits, b.logits, features_a=a.features, features_b=b.features,
                                  labels=self.test.labels)
        return PairSimilarity(l2=w.l2, cosine=w.cosine, kl=o.kl, mse=o.mse, cka_logits=o.cka_logits,
                              cka_features=o.cka_features, disagreement=o.disagreement,
                              ensemble_acc=o.ensemble_accuracy)

    def soup(self, i: int, j: int, alpha: float) -> SoupScores:
        """Build the soup ``(1 − α)·θ_i + α·θ_j`` into the model and score it on the test split and every
        corruption; one host synchronisation for the finiteness check, one for all the scores."""
        finite = bool(self.builder.build(i, j, alpha).item())
        if not finite:
            return SoupScores(finite=False)
        mean, std = self.norm_stats(i)
        scores = []
        for name, data in [("test", self.test), *self.corrupted.items()]:
            logits, _ = self.runner.forward(self.forward_fn, data, mean, std, out=self._soup_logits.get(name))
            self._soup_logits[name] = logits
            scores.append(device_metrics(logits, data.labels))
        values = torch.stack(scores).tolist()
        corrupted = {c: (v[0], v[1]) for c, v in zip(self.corrupted, values[1:])}
        return SoupScores(finite=True, accuracy=values[0][0], loss=values[0][1], corrupted=corrupted)
