"""The averaging engine: a weighted average of ingredients, tensor by tensor, streamed from their files.

Tiled: each floating tensor is cut into tiles of :data:`TILE_ELEMENTS` (equal weights: :data:`EQUAL_TILE_ELEMENTS`)
elements; for one tile,
every ingredient's slice is read (``pread`` of that byte range) into a small buffer and added into a float64 tile
accumulator, which is cast back once into the result. Accumulator and buffers stay in the CPU cache (no
model-sized float64 buffer), and the tiles are spread over a few threads (reads, numpy and torch kernels release
the GIL).

Memory: the result (one model) plus a few tile buffers per thread, whatever the number of ingredients; every
ingredient file is open and read by byte range (plain reads, no memory maps).

Numerics are those of the untiled loop, element by element and in ingredient order: ``acc = t₀`` (times ``w₀``),
``acc += wᵢ·tᵢ`` (``acc.add_(t, alpha=w)``), equal weights summed then divided once by N, one cast back: bit for bit the
same results (tests compare the bits with the untiled loop, -0.0 included). Equal weights (uniform soups, α = 0.5)
are added by numpy straight from the read buffers (its mixed-dtype add widens exactly, in small internal chunks).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hfsoup.errors import CorruptFileError, InvalidWeightsError, NonFiniteError
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


#: Elements per tile of weighted soups (torch's add with alpha, per ingredient). A multiple of 64, so tiles start
#: on vector boundaries (not that results depend on it: tests compare odd tiles bit for bit).
TILE_ELEMENTS = 16384
#: Elements per tile of equal-weight soups (uniform, alpha = 0.5), added by numpy one slice at a time: 64 Ki (a
#: 512 kB float64 accumulator, three buffers of about 1.5 MB per thread) measured fastest on a 2-core EPYC (16 Ki:
#: 2x slower, the per-call cost dominates).
EQUAL_TILE_ELEMENTS = 65536


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
        floats = [k for k in keys if ingredients[0].tensors[k].dtype.is_floating_point]
        for key in keys:  # the result, allocated once, in key order
            info = ingredients[0].tensors[key]
            out[key] = torch.empty(info.shape, dtype=info.dtype)
        bar = tqdm(total=len(keys), desc="averaging", unit="tensor", disable=not progress, leave=False)
        for key in keys:
            if not out[key].dtype.is_floating_point:
                out[key] = _combine_integer(key, readers, out[key].dtype, integer_policy)
        tiled = _TiledAverage(readers, accumulate_dtype, bar)
        tile = tiled.tile
        jobs = [(key, a, min(a + tile, out[key].numel())) for key in floats for a in range(0, out[key].numel(), tile)]
        tiled.remaining = {key: -(-out[key].numel() // tile) for key in floats}
        bar.update(sum(1 for key in keys if key not in tiled.remaining or tiled.remaining[key] == 0))
        with _serial_kernels():
            if workers == 1 or len(jobs) < 2:
                tiled.run_many(out, jobs)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hfsoup-average") as pool:
                    # runs of contiguous tiles: each worker reads a stretch of every file sequentially
                    chunk = -(-len(jobs) // (workers * 8))
                    futures = [pool.submit(tiled.run_many, out, jobs[i:i + chunk])
                               for i in range(0, len(jobs), chunk)]
                    for f in futures:
                        f.result()
        bar.close()
        for key in floats:  # the first non-finite tensor in key order, whichever thread found it
            if key in tiled.non_finite:
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


class _TiledAverage:
    """Per-tile weighted sum over ingredients; per-thread accumulator and read buffers (a few hundred kB)."""

    def __init__(self, readers, acc_dtype, bar):
        self.readers, self.acc_dtype, self.bar = readers, acc_dtype, bar
        # Equal weights (uniform soups, alpha = 0.5) are summed then divided once: the result *is* the mean.
        self.equal = all(w == readers[0][0] for w, _, _ in readers)
        self.scales = [1.0 if self.equal else w for w, _, _ in readers]
        # Buffers, whatever N: the accumulator and two read slots (the first two slices are added in one pass).
        self.slots = 2
        self.tile = EQUAL_TILE_ELEMENTS if self.equal else TILE_ELEMENTS
        self.non_finite: set[str] = set()
        self.remaining: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _views(self, dtype: torch.dtype, n: int) -> "_TileViews":
        """This thread's buffers seen as tiles of ``n`` elements of ``dtype`` (made once per thread, dtype and n:
        indexing tensors costs microseconds, and a model has a few hundred distinct tile lengths at most)."""
        cache = getattr(self._local, "views", None)
        if cache is None:
            acc = torch.empty(self.tile, dtype=self.acc_dtype)
            raw = torch.empty(self.slots * self.tile * 8, dtype=torch.uint8)  # the read slots, up to 8 bytes each
            cache = self._local.views = {"acc": acc, "total": torch.empty(self.tile, dtype=self.acc_dtype),
                                         "raw": raw, "view": memoryview(raw.numpy()).cast("B")}
        views = cache.get((dtype, n))
        if views is None:
            acc, raw, view, size = cache["acc"], cache["raw"], cache["view"], dtype.itemsize
            g, tile = self.slots, self.tile
            slots = raw.view(dtype)[:g * tile].view(g, tile)
            row_bytes = tile * size
            views = cache[(dtype, n)] = _TileViews(
                acc=acc[:n], total=cache["total"][:n], slot=[slots[j, :n] for j in range(g)],
                buf=[view[j * row_bytes:j * row_bytes + n * size] for j in range(g)])
        return views

    def run_many(self, out, jobs) -> None:
        for job in jobs:
            self.run(out, *job)

    def _read(self, i: int, key: str, start: int, stop: int, v: "_TileViews", j: int) -> torch.Tensor:
        reader = self.readers[i][1]
        if type(reader) is SafetensorsReader:
            buf = v.buf[j]
            offset = reader.infos[key].offset + start * v.slot[j].element_size()
            if os.preadv(reader.fd, [buf], offset) == len(buf):  # the common case: one full read
                return v.slot[j]
        return _read_slice(reader, key, start, stop, v.slot[j], v.buf[j])

    def _sum_numpy(self, key, start, stop, v, k, acc_np) -> None:
        """Σ of the ``k`` slices into ``acc_np``, in ingredient order, each added straight from its read buffer:
        numpy's mixed-dtype add widens in small internal chunks (no separate widening pass) and runs without the
        GIL, so the threads scale. The same additions in the same order as the untiled loop's ``acc.add_(t)``: the
        same bits, -0.0 included."""
        first = _as_numpy(self._read(0, key, start, stop, v, 0))
        second = _as_numpy(self._read(1, key, start, stop, v, 1))
        np.add(first, second, out=acc_np, dtype=acc_np.dtype)  # both widened exactly, then added: one pass
        for i in range(2, k):
            np.add(acc_np, _as_numpy(self._read(i, key, start, stop, v, 0)), out=acc_np)

    def run(self, out, key, start, stop) -> None:
        n, dst = stop - start, out[key].view(-1)[start:stop]
        dtype = dst.dtype
        v = self._views(dtype, n)
        acc = v.acc
        # t no wider than the accumulator: the untiled loop's acc.add_(t) promoted t into a float64 temporary
        promoted = torch.promote_types(dtype, self.acc_dtype) == self.acc_dtype
        k = len(self.readers)
        fused_cast = False
        if self.equal and promoted and k > 1:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is found (and named) below
                self._sum_numpy(key, start, stop, v, k, acc.numpy())
            if dtype == torch.float32:  # division and cast back in one pass (a C cast: rounded as torch rounds)
                with np.errstate(over="ignore", invalid="ignore"):
                    np.divide(acc.numpy(), k, out=dst.numpy(), casting="unsafe")
                fused_cast = True
            else:  # float16/bfloat16: torch's cast, as the untiled loop's acc.to(dtype)
                acc.div_(k)
        else:
            for i in range(k):
                t = self._read(i, key, start, stop, v, 0)
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
        if not fused_cast:
            dst.copy_(acc)  # the one cast back
        # NaN propagates through min and max; ±Inf (an input's, or an overflow of the sum or the cast) shows there
        lo, hi = torch.aminmax(dst)
        finite = math.isfinite(lo.item()) and math.isfinite(hi.item())
        with self._lock:
            if not finite:
                self.non_finite.add(key)
            self.remaining[key] -= 1
            if self.remaining[key] == 0:
                self.bar.update(1)


#: Float dtypes numpy holds; others (bfloat16, float8) are widened to float32 first (exactly) to be added by numpy.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.numpy() if t.dtype in _NUMPY_FLOATS else t.float().numpy()


@dataclass
class _TileViews:
    """One thread's buffers as tiles of one length and dtype: ``acc`` and ``total`` in the
    accumulator's dtype; ``slot[j]``/``buf[j]``: read slot j as a tensor / as bytes."""

    acc: torch.Tensor
    total: torch.Tensor
    slot: list
    buf: list


def _read_slice(reader, key, start, stop, slot, view) -> torch.Tensor:
    """Elements ``start:stop`` of tensor ``key`` (flattened) into ``slot``: ``pread`` of that byte range into
    ``view`` (``slot``'s bytes) for a safetensors file, a copy of the slice for tensors held in memory."""
    if type(reader) is not SafetensorsReader:
        return slot.copy_(reader.get_tensor(key).reshape(-1)[start:stop])
    size = slot.element_size()
    nbytes, offset = (stop - start) * size, reader.infos[key].offset + start * size
    got = 0
    while got < nbytes:  # pread may return short reads on some filesystems
        more = os.preadv(reader.fd, [view[got:nbytes]], offset + got)
        if more <= 0:
            raise CorruptFileError(f"cannot read tensor '{key}' from '{reader.path}': file ended early",
                                   path=reader.path)
        got += more
    return slot


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


def _combine_integer(key, readers, dtype, policy) -> torch.Tensor:
    if policy == "first":
        return readers[0][1].get_tensor(key).clone()
    result = None
    for w, reader, _ in readers:  # streamed like floats: one ingredient's tensor at a time
        t = reader.get_tensor(key)
        if policy == "max":
            result = t.clone() if result is None else torch.maximum(result, t)
        else:
            t = t.to(torch.float64) * w
            result = t if result is None else result.add_(t)
    return result if policy == "max" else result.round().to(dtype)
