"""The averaging engine: a weighted average of ingredients, streamed from their files tile by tile.

Tiled: the floating tensors are cut into tiles of at most :data:`TILE_ELEMENTS` elements. Tensors that lie one
after the other in every file (what any safetensors writer gives for one architecture) are tiled as one run, so
a model's hundreds of small tensors share tiles; a tile is one ``pread`` per ingredient. For one tile, every
ingredient's slice is read into a small buffer and added into a tile accumulator (float64), which is cast back
once into the result. Accumulator and buffers stay in the CPU cache (no model-sized float64 buffer), and the
tiles are spread over a few threads (reads and numpy and torch kernels release the GIL).

Memory: the result (one model) plus a few tile buffers per thread, whatever the number of ingredients; every
ingredient file is open and read by byte range (plain reads, no memory maps).

Numerics are those of the untiled loop, element by element and in ingredient order: ``acc = t₀`` (times ``w₀``),
``acc += wᵢ·tᵢ`` (``acc.add_(t, alpha=w)``), equal weights summed then divided once by N, one cast back: bit for
bit the same results (tests compare the bits with the untiled loop, -0.0 included). Equal weights (uniform soups,
α = 0.5) are added by numpy straight from the read buffers; the mean of two float32 models is computed in float32
where that provably gives the float64 loop's bits (:meth:`_TiledAverage._mean_of_two`), and in float64 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hfsoup.errors import InvalidWeightsError, NonFiniteError
from hfsoup.core.ingredients import Ingredient, check_compatible
from hfsoup.core.safetensors_io import SafetensorsReader

#: How integer buffers (BatchNorm's ``num_batches_tracked``, int64) are combined. They keep their dtype.
#: ``mean``: weighted mean rounded to the nearest integer (default; alpha=0/1 reproduce A/B exactly);
#: ``max``: element-wise maximum over ingredients with non-zero weight;
#: ``first``: the value of the first ingredient with non-zero weight.
INTEGER_POLICIES = ("mean", "max", "first")
WEIGHT_TOLERANCE = 1e-6


def check_integer_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`INTEGER_POLICIES`, else :class:`InvalidWeightsError`."""
    if policy not in INTEGER_POLICIES:
        raise InvalidWeightsError(f"unknown integer policy '{policy}': choose one of {', '.join(INTEGER_POLICIES)}")
    return policy


def check_weights(weights: Sequence[float], n: int, *, normalize: bool = False) -> list[float]:
    """Validate mixing weights: ``n`` finite, non-negative numbers summing to one, returned divided by their exact
    sum (:func:`math.fsum`).

    Weights within :data:`WEIGHT_TOLERANCE` of summing to one are accepted and rescaled, so the result always sums
    to one (a model souped with itself is the model, whatever the rounding of its weights); weights that sum to
    exactly one are returned unchanged. With ``normalize=True`` positive weights that do not sum to one are
    rescaled instead of rejected.
    """
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise InvalidWeightsError(f"got {len(weights)} weights for {n} ingredients: give one weight per model")
    if any(not math.isfinite(w) for w in weights):
        raise InvalidWeightsError(f"weights must be finite numbers, got {weights}")
    if any(w < 0 for w in weights):
        raise InvalidWeightsError(f"weights must be non-negative, got {weights}")
    total = math.fsum(weights)
    if total <= 0:
        raise InvalidWeightsError("all weights are zero: at least one ingredient needs a positive weight")
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        if not normalize:
            raise InvalidWeightsError(f"weights sum to {total:g}, not 1: fix them or normalize "
                                      f"(--normalize / normalize=True) to rescale")
    # Always divide by the exact sum: x / 1.0 is x, so weights that already sum to one stay bit for bit.
    return [w / total for w in weights]


#: Elements per tile: 128 Ki (a 1 MB float64 accumulator, about 5.5 MB of buffers per thread) measured fastest on
#: a 2-core EPYC for equal and unequal weights alike: the per-call cost of the dozen numpy and torch calls per tile
#: dominates below (16 Ki: 2x slower), memory traffic above (256 Ki: 1.2x slower). Results do not depend on it.
TILE_ELEMENTS = 131072


def average(ingredients: Sequence[Ingredient], weights: Sequence[float] | None = None, *,
            normalize: bool = False, integer_policy: str = "mean", accumulate_dtype: torch.dtype = torch.float64,
            check: bool = True, progress: bool = False, workers: int | None = None) -> dict[str, torch.Tensor]:
    """Weighted average θ = Σ wᵢ θᵢ of the ingredients' tensors.

    Args:
        ingredients: models with identical keys, shapes and dtypes (checked unless ``check=False``).
        weights: one non-negative weight per ingredient summing to one; ``None`` means uniform.
        normalize: rescale weights that do not sum to one instead of raising :class:`InvalidWeightsError`.
        integer_policy: how integer buffers are combined, one of :data:`INTEGER_POLICIES`.
        accumulate_dtype: float64 (default) or float32; each result is cast back to its source dtype.
        progress: show a progress bar over tensors.
        workers: threads over tiles (default: torch's intra-op thread count); results do not depend on it.

    Ingredients with weight zero are never read, so ``α = 0`` returns model A bit for bit.
    Raises :class:`NonFiniteError` if a floating result holds NaN or Inf (the first such tensor in key order).
    """
    if not ingredients:
        raise InvalidWeightsError("nothing to average: no ingredients")
    check_integer_policy(integer_policy)
    if accumulate_dtype not in (torch.float64, torch.float32):
        raise InvalidWeightsError("accumulate_dtype must be torch.float64 or torch.float32")
    n = len(ingredients)
    weights = check_weights([1.0 / n] * n if weights is None else weights, n, normalize=normalize)
    if check:
        check_compatible(ingredients)
    active = [(w, ing) for w, ing in zip(weights, ingredients) if w > 0]
    keys = list(ingredients[0].tensors)
    workers = max(1, int(workers or torch.get_num_threads()))
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        readers = [(w, stack.enter_context(ing.open()), ing) for w, ing in active]
        for key in keys:  # the result, allocated once, in key order
            info = ingredients[0].tensors[key]
            out[key] = torch.empty(info.shape, dtype=info.dtype)
        floats = [k for k in keys if out[k].dtype.is_floating_point]
        bar = tqdm(total=len(keys), desc="averaging", unit="tensor", disable=not progress, leave=False)
        _combine_integers(readers, {k: t for k, t in out.items() if not t.dtype.is_floating_point}, integer_policy)
        engine = _TiledAverage(readers, accumulate_dtype, bar)
        spans = _plan_spans([reader for _, reader, _ in readers], {k: out[k] for k in floats}, engine.tile)
        engine.start(out, spans)
        bar.update(sum(1 for key in keys if engine.remaining.get(key, 0) == 0))
        with _serial_kernels():
            if workers == 1 or len(spans) < 2:
                engine.run_many(spans)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hfsoup-average") as pool:
                    # runs of contiguous tiles: each worker reads a stretch of every file sequentially
                    chunk = -(-len(spans) // (workers * 8))
                    futures = [pool.submit(engine.run_many, spans[i:i + chunk])
                               for i in range(0, len(spans), chunk)]
                    for f in futures:
                        f.result()
        bar.close()
        for key in floats:  # the first non-finite tensor in key order, whichever thread found it
            if key in engine.suspect and not all_finite(out[key]):
                _raise_non_finite(key, readers, out[key].dtype)
    return out


@contextlib.contextmanager
def _serial_kernels():
    """One intra-op thread while averaging: the worker threads are the parallelism, and OpenMP teams nested in
    them would oversubscribe the cores (and spin at every barrier when the machine is busy). Process-wide (torch
    has no per-call setting), restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Span(NamedTuple):
    """One tile: ``size`` consecutive elements of one dtype, made of pieces of one or more tensors.

    ``segments``: ``(key, start, stop, at)``, elements ``start:stop`` of the flattened tensor ``key`` at position
    ``at`` of the tile. ``offsets``: the byte offset of the tile in each ingredient's file (one ``pread`` each),
    or ``None`` for tensors held in memory (one segment, sliced from the tensor).
    """

    dtype: torch.dtype
    size: int
    segments: tuple[tuple[str, int, int, int], ...]
    offsets: tuple[int, ...] | None


def _plan_spans(files: Sequence, out: dict[str, torch.Tensor], tile: int) -> list[_Span]:
    """Cut the floating tensors ``out`` into tiles of at most ``tile`` elements.

    Tensors that follow one another in every file (same dtype, each starting where the previous one ends, the
    same order in all files: what any safetensors writer gives for one architecture) form one run, tiled as a
    whole: a model's few hundred small tensors (biases, norms) share tiles instead of costing a tile each. Other
    layouts, and tensors held in memory, are tiled tensor by tensor. The tiling does not change any result:
    every element is computed on its own.
    """
    counts = {k: t.numel() for k, t in out.items()}
    keys = [k for k in out if counts[k] > 0]
    stored = all(type(f) is SafetensorsReader for f in files)
    runs: list[list[str]] = []
    if stored:
        keys.sort(key=lambda k: files[0].infos[k].offset)
    last = None
    for key in keys:
        if (stored and last is not None and out[last].dtype == out[key].dtype
                and all(f.infos[key].offset == f.infos[last].offset + f.infos[last].nbytes for f in files)):
            runs[-1].append(key)
        else:
            runs.append([key])
        last = key
    spans = []
    for run in runs:
        dtype, pieces, total = out[run[0]].dtype, [], 0
        for key in run:  # (key, first element of the tensor in the run, its element count)
            pieces.append((key, total, counts[key]))
            total += counts[key]
        i, itemsize = 0, dtype.itemsize
        base = [f.infos[run[0]].offset for f in files] if stored else None
        for a in range(0, total, tile):
            b, segments = min(a + tile, total), []
            while i < len(pieces) and pieces[i][1] < b:
                key, at, count = pieces[i]
                start, stop = max(a, at) - at, min(b, at + count) - at
                segments.append((key, start, stop, at + start - a))
                if at + count > b:
                    break  # the tensor goes on in the next tile
                i += 1
            offsets = tuple(o + a * itemsize for o in base) if stored else None
            spans.append(_Span(dtype, b - a, tuple(segments), offsets))
    return spans


class _TiledAverage:
    """Per-tile weighted sum over ingredients; per-thread accumulator and read buffers (a few MB at most).

    Float32, float16 and float64 tiles are handled as numpy arrays (a numpy call costs a microsecond or two, a
    torch call several, and a tile takes a dozen calls); bfloat16, which numpy lacks, as torch tensors."""

    def __init__(self, readers, acc_dtype, bar):
        self.readers, self.acc_dtype, self.bar = readers, acc_dtype, bar
        # Equal weights (uniform soups, alpha = 0.5) are summed then divided once: the result *is* the mean.
        self.equal = all(w == readers[0][0] for w, _, _ in readers)
        self.scales = [1.0 if self.equal else w for w, _, _ in readers]
        k = len(readers)
        # Dividing by a power of two is multiplying by its exact inverse: the same correctly rounded result.
        self.power_of_two = k & (k - 1) == 0
        self.tile = TILE_ELEMENTS
        self.suspect: set[str] = set()  # keys in a tile that held NaN/Inf
        self.remaining: dict[str, int] = {}
        self.flat: dict = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def start(self, out: dict[str, torch.Tensor], spans: Sequence[_Span]) -> None:
        """Where results go, and how many tiles each tensor waits for (the progress bar counts whole tensors)."""
        self.flat = {key: _as_array(out[key].view(-1)) for key in out if out[key].dtype.is_floating_point}
        self.remaining = dict.fromkeys(self.flat, 0)
        for span in spans:
            for key, *_ in span.segments:
                self.remaining[key] += 1

    def _views(self, dtype: torch.dtype, n: int) -> "_TileViews":
        """This thread's buffers seen as tiles of ``n`` elements of ``dtype`` (made once per thread, dtype and n:
        a model has a few hundred distinct tile lengths at most)."""
        cache = getattr(self._local, "views", None)
        tile = self.tile
        if cache is None:
            raw = torch.empty(3 * tile * 8, dtype=torch.uint8)  # two read slots and the result, <= 8 bytes each
            cache = self._local.views = {"acc": torch.empty(tile, dtype=self.acc_dtype),
                                         "total": torch.empty(tile, dtype=self.acc_dtype),
                                         "raw": raw, "bytes": memoryview(raw.numpy()).cast("B")}
        views = cache.get((dtype, n))
        if views is None:
            raw, size = cache["raw"], dtype.itemsize
            slots = raw.view(dtype)[:3 * tile].view(3, tile)
            row = tile * size
            acc = cache["acc"][:n]
            views = cache[(dtype, n)] = _TileViews(
                acc=acc, acc_np=acc.numpy(), total=cache["total"][:n],
                result=_as_array(slots[2, :n]), slot=[_as_array(slots[j, :n]) for j in range(2)],
                buf=[cache["bytes"][j * row:j * row + n * size] for j in range(2)])
        return views

    def run_many(self, spans: Sequence[_Span]) -> None:
        for span in spans:
            self.run(span)

    def run(self, span: _Span) -> None:
        v = self._views(span.dtype, span.size)
        segments = span.segments
        if len(segments) == 1:  # straight into the result
            key, start, stop, _ = segments[0]
            result = self.flat[key][start:stop]
        else:  # into a scratch tile, then copied piece by piece
            result = v.result
        finite = self._compute(span, v, result)
        if len(segments) > 1:
            for key, start, stop, at in segments:
                self.flat[key][start:stop] = result[at:at + stop - start]
        with self._lock:
            for key, *_ in segments:
                if not finite:
                    self.suspect.add(key)
                self.remaining[key] -= 1
                if self.remaining[key] == 0:
                    self.bar.update(1)

    def _read(self, i: int, span: _Span, v: "_TileViews", j: int):
        """Ingredient ``i``'s elements of the tile, into read slot ``j`` (an array, or a tensor for bfloat16)."""
        reader = self.readers[i][1]
        if span.offsets is not None:
            buf = v.buf[j]
            if os.preadv(reader.fd, [buf], span.offsets[i]) != len(buf):  # the common case: one full read
                reader.read_into(span.offsets[i], buf)
            return v.slot[j]
        key, start, stop, _ = span.segments[0]
        slot = v.slot[j]
        slot[:] = _as_array(reader.get_tensor(key).reshape(-1)[start:stop])
        return slot

    def _compute(self, span: _Span, v: "_TileViews", result) -> bool:
        """The tile's average into ``result``; False when it holds NaN or Inf."""
        k, dtype = len(self.readers), span.dtype
        # t no wider than the accumulator: the untiled loop's acc.add_(t) promoted t into a float64 temporary
        promoted = torch.promote_types(dtype, self.acc_dtype) == self.acc_dtype
        if self.equal and k == 2 and dtype == torch.float32:
            return self._mean_of_two(span, v, result)
        if self.equal and promoted and k > 1:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is found (and named) by the caller
                self._sum_numpy(span, v, k)
                return self._divide_and_cast(v, k, result)
        acc = v.acc
        for i in range(k):
            t = _as_tensor(self._read(i, span, v, 0))
            scale = self.scales[i]
            if i == 0:
                acc.copy_(t)  # exact widening, as t.to(float64) of the untiled loop
                if scale != 1.0:
                    acc.mul_(scale)
            elif promoted and dtype != self.acc_dtype:
                # acc.add_(t, alpha) would copy t into a fresh float64 temporary and run the float64 kernel:
                # the same arithmetic, with the temporary reused and kept in cache.
                v.total.copy_(t)
                acc.add_(v.total, alpha=scale)
            else:
                acc.add_(t, alpha=scale)
        if self.equal and k > 1:
            acc.div_(k)
        out = _as_tensor(result)
        out.copy_(acc)  # the one cast back
        return all_finite(out)

    def _sum_numpy(self, span, v, k, first=None, second=None) -> None:
        """Σ of the ``k`` slices into ``v.acc``, in ingredient order, each added straight from its read buffer:
        numpy's mixed-dtype add widens in small internal chunks (no separate widening pass) and runs without the
        GIL, so the threads scale. The same additions in the same order as the untiled loop's ``acc.add_(t)``: the
        same bits, -0.0 included."""
        acc = v.acc_np
        np.copyto(acc, _numpy(self._read(0, span, v, 0)) if first is None else first)  # widened exactly
        np.add(acc, _numpy(self._read(1, span, v, 1)) if second is None else second, out=acc)
        for i in range(2, k):
            np.add(acc, _numpy(self._read(i, span, v, 0)), out=acc)

    def _divide_and_cast(self, v, k, result) -> bool:
        if self.power_of_two:
            np.multiply(v.acc_np, 1.0 / k, out=v.acc_np)
        else:
            np.divide(v.acc_np, k, out=v.acc_np)
        if isinstance(result, np.ndarray) and result.dtype == np.float32:
            np.copyto(result, v.acc_np, casting="unsafe")  # the one cast back: a C cast, rounded as torch rounds
            return bool(np.isfinite(result).all())
        # float16, bfloat16: torch's cast, as the untiled loop's acc.to(dtype) (numpy rounds float64 to float16
        # directly; torch goes through float32)
        out = _as_tensor(result)
        out.copy_(v.acc)
        return all_finite(out)

    def _mean_of_two(self, span, v, result) -> bool:
        """(a + b) / 2 of float32 tiles in float32 arithmetic, with the float64 loop's bits.

        The loop computes round32(round64(a + b) / 2), here round32(round32(a + b) · 0.5). They agree: if
        |a + b| < 2⁻¹²⁵ the float32 sum is exact (tiny sums of floats are), so both round the exact half once;
        otherwise halving is exact on both sides and round32(round64(s)) = round32(s), as rounding to 53 then 24
        bits is rounding once whenever 53 >= 2·24 + 2 (Figueroa, "When is double rounding innocuous?", 1995).
        Tests check it bit for bit on subnormals, cancellations and values near the float32 limit. The one
        exception is a float32 sum that overflows while the half does not: tiles with any Inf or NaN are computed
        again in float64, so the float64 loop decides.
        """
        a, b = self._read(0, span, v, 0), self._read(1, span, v, 1)
        with np.errstate(over="ignore", invalid="ignore"):
            np.add(a, b, out=result)
            np.multiply(result, 0.5, out=result)
            if np.isfinite(result).all():
                return True
            if self.acc_dtype == torch.float32:  # the float32 loop: exactly these two operations
                return False
            self._sum_numpy(span, v, 2, a, b)
            return self._divide_and_cast(v, 2, result)


#: Float dtypes numpy holds; others (bfloat16, float8) stay torch tensors.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _as_array(t: torch.Tensor):
    """A numpy view of ``t`` when numpy has its dtype, else ``t`` itself."""
    return t.numpy() if t.dtype in _NUMPY_FLOATS else t


def _as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _numpy(x) -> np.ndarray:
    """An array numpy can add: bfloat16 tensors widened (exactly) to float32."""
    return x if isinstance(x, np.ndarray) else x.float().numpy()


@dataclass
class _TileViews:
    """One thread's buffers as tiles of one length and dtype: ``acc``/``acc_np``, ``total`` in the accumulator's
    dtype; ``result`` a scratch tile; ``slot[j]``/``buf[j]``: read slot j as an
    array (a tensor for bfloat16) and as bytes."""

    acc: torch.Tensor
    acc_np: np.ndarray
    total: torch.Tensor
    result: object
    slot: list
    buf: list


def _raise_non_finite(key, readers, dtype):
    bad = [ing.reference for _, reader, ing in readers if not all_finite(reader.get_tensor(key))]
    if bad:
        source = f"non-finite values in {', '.join(bad)}"
    else:  # every input is finite: the sum or the cast back to a narrower dtype overflowed
        source = f"the ingredients are finite, but their weighted sum overflows {str(dtype).replace('torch.', '')}"
    raise NonFiniteError(f"averaged tensor '{key}' contains NaN/Inf ({source}): check the ingredients",
                         key=key, references=bad)


def all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` holds no NaN and no ±Inf. One min/max reduction (NaN propagates through both), no boolean
    mask and no sum, so huge finite values (float64 near its range) pass."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _combine_integers(readers, out: dict[str, torch.Tensor], policy: str) -> None:
    """Integer buffers (BatchNorm's ``num_batches_tracked``) combined by ``policy`` into ``out``, tiled like the
    floats: a model's few dozen counters lie together in its file, one read per ingredient."""
    files = [reader for _, reader, _ in readers]
    for span in _plan_spans(files, out, TILE_ELEMENTS):
        result = None
        for i, (w, reader, _) in enumerate(readers[:1] if policy == "first" else readers):
            t = _read_span(reader, span, i)
            if policy == "mean":
                t = t.to(torch.float64) * w
                result = t if result is None else result.add_(t)
            else:  # first, max
                result = t if result is None else torch.maximum(result, t)
        if policy == "mean":
            result = result.round().to(span.dtype)
        for key, start, stop, at in span.segments:
            out[key].view(-1)[start:stop].copy_(result[at:at + stop - start])


def _read_span(reader, span: _Span, i: int) -> torch.Tensor:
    """A tile of ingredient ``i`` (the reader's) in a tensor of its own."""
    if span.offsets is None:
        key, start, stop, _ = span.segments[0]
        return reader.get_tensor(key).reshape(-1)[start:stop]
    buf = bytearray(span.size * span.dtype.itemsize)
    reader.read_into(span.offsets[i], memoryview(buf))
    return torch.frombuffer(buf, dtype=span.dtype)
