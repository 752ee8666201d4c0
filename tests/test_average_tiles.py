"""The averaging engine's tiles: runs of tensors read in one go, the float32 mean of two, short reads.

Every result is compared bit for bit with the untiled float64 loop (``test_averaging._untiled_average``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file

import hfsoup
from hfsoup import CorruptFileError
from hfsoup.core import averaging
from conftest import save_model_dir
from test_averaging import _same_bits, _untiled_average


def _sd(folder):
    return load_file(str(folder / "model.safetensors"))


def _bits_model(tmp_path, name, seed, patterns=None):
    """A model whose float32 tensors hold random bit patterns over every finite exponent (subnormals, values
    near the float32 limit, both signs), with ``patterns`` written at the start of its largest tensor."""
    folder = save_model_dir(tmp_path / f"src-{name}", seed=seed)
    model = hfsoup.build_model(hfsoup.load_ingredient(str(folder)).config, None)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            bits = torch.randint(0, 2**31 - 1, p.shape, generator=gen, dtype=torch.int64)
            exponent = (bits >> 23) & 0xFF
            bits = torch.where(exponent == 0xFF, bits & ~(1 << 30), bits)  # no NaN/Inf: exponent below 255
            sign = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int64) << 31
            p.copy_((bits | sign).to(torch.int64).to(torch.int32).view(torch.float32))
        if patterns is not None:
            biggest = max(model.parameters(), key=lambda t: t.numel())
            biggest.view(-1)[:len(patterns)] = torch.tensor(patterns, dtype=torch.float32)
    return hfsoup.hub.format.save_model(model, tmp_path / name)


F32_MAX = float(torch.finfo(torch.float32).max)
TINY = float(torch.finfo(torch.float32).tiny)  # smallest normal
SUB = 2.0 ** -149  # smallest subnormal

# Pairs where a float32 shortcut could go wrong: overflowing sums with finite halves, subnormal halves (odd last
# bits, ties), cancellations, signed zeros.
PAIRS = [
    (3e38, 3e38), (F32_MAX, F32_MAX), (-F32_MAX, -3e38), (F32_MAX, -F32_MAX),
    (SUB, 0.0), (3 * SUB, 0.0), (SUB, SUB * 2), (TINY, SUB), (2 * TINY - SUB, 0.0), (TINY, -SUB),
    (1.0, -1.0), (1.0000001, -1.0), (-0.0, -0.0), (0.0, -0.0), (-0.0, 0.0), (2 * TINY, -TINY),
    (1e-45, -1e-45), (16777217.0, 1.0), (0.1, 0.2), (-3.4e38, 3.4e38),
]


@pytest.mark.parametrize("accumulate", [torch.float64, torch.float32])
def test_float32_mean_of_two_has_the_float64_loops_bits(tmp_path, monkeypatch, accumulate):
    a = _bits_model(tmp_path, "a", 0, [x for x, _ in PAIRS])
    b = _bits_model(tmp_path, "b", 1, [y for _, y in PAIRS])
    sds = [_sd(a), _sd(b)]
    ings = hfsoup.load_ingredients([str(a), str(b)])
    expected = _untiled_average(sds, [0.5, 0.5], accumulate)
    # overflowing sums are everywhere (random exponents up to 254): the float64 fallback runs in most tiles
    for tile, workers in [(averaging.TILE_ELEMENTS, 1), (64, 2), (1000, 1)]:
        monkeypatch.setattr(averaging, "TILE_ELEMENTS", tile)
        try:
            out = hfsoup.average(ings, accumulate_dtype=accumulate, workers=workers)
        except hfsoup.NonFiniteError:  # the float32 loop overflows where float64 does not
            assert accumulate == torch.float32
            assert any(not torch.isfinite(v).all() for v in expected.values())
            continue
        for key, value in expected.items():
            assert _same_bits(out[key], value), (tile, key)
    if accumulate == torch.float64:  # the crafted pairs, one by one
        biggest = max((k for k in expected if expected[k].is_floating_point()), key=lambda k: expected[k].numel())
        got = out[biggest].view(-1)[:len(PAIRS)]
        xs, ys = (torch.tensor(v, dtype=torch.float32).double() for v in zip(*PAIRS))
        want = ((xs + ys) / 2).to(torch.float32)
        assert _same_bits(got, want)
        assert got[0].item() == pytest.approx(3e38, rel=1e-6)  # the float32 sum overflowed; the mean did not


def test_tiny_finite_mean_of_two_without_overflow_runs_in_float32(tmp_path, monkeypatch):
    """Ordinary weights take the float32 path (no float64 fallback), and still give the loop's bits."""
    a, b = save_model_dir(tmp_path / "a", seed=0), save_model_dir(tmp_path / "b", seed=1)
    calls = []
    original = averaging._TiledAverage._sum_numpy
    monkeypatch.setattr(averaging._TiledAverage, "_sum_numpy",
                        lambda self, *args, **kw: calls.append(1) or original(self, *args, **kw))
    out = hfsoup.average(hfsoup.load_ingredients([str(a), str(b)]))
    expected = _untiled_average([_sd(a), _sd(b)], [0.5, 0.5])
    assert calls == []
    assert all(_same_bits(out[k], v) for k, v in expected.items())


def _write_reversed(src, dst):
    """The same tensors in a valid safetensors file, laid out in the reverse order of the usual writers."""
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors, reverse=True):
        data = tensors[key].contiguous().numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[tensors[key].dtype]
        header[key] = {"dtype": dtype, "shape": list(tensors[key].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (dst / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return dst


def test_tiles_follow_each_files_layout(tmp_path, monkeypatch):
    """Tensors that lie together in every file are read as one run; a file laid out differently makes the
    engine read tensor by tensor. The numbers are the same."""
    a, b, c = (save_model_dir(tmp_path / n, seed=i) for i, n in enumerate("abc"))
    reordered = _write_reversed(c, tmp_path / "c-reversed")
    sds = [_sd(a), _sd(b), _sd(c)]
    same = hfsoup.load_ingredients([str(a), str(b), str(c)])
    mixed = hfsoup.load_ingredients([str(a), str(b), str(reordered)])
    plans = []
    original = averaging._plan_spans
    monkeypatch.setattr(averaging, "_plan_spans", lambda *args: plans.append(original(*args)) or plans[-1])
    monkeypatch.setattr(averaging, "TILE_ELEMENTS", 4096)
    for weights in (None, [0.2, 0.3, 0.5]):
        expected = _untiled_average(sds, weights or [1 / 3] * 3)
        for ings in (same, mixed):
            out = hfsoup.average(ings, weights, workers=2)
            assert all(_same_bits(out[k], v) for k, v in expected.items())
    floats = [k for k, v in sds[0].items() if v.is_floating_point()]
    together, apart = plans[1], plans[3]  # the float plans (integers are planned first)
    # one run: tiles hold several small tensors, and every tensor is in some tile
    assert any(len(span.segments) > 1 for span in together)
    assert len(together) < len(floats)
    # tensor by tensor: no tile holds two tensors; each tile is one read of one byte range per file
    assert all(len(span.segments) == 1 for span in apart)
    for plan in (together, apart):
        covered = {}
        for span in plan:
            assert span.size <= 4096 and span.size == sum(stop - start for _, start, stop, _ in span.segments)
            for key, start, stop, _ in span.segments:
                covered[key] = covered.get(key, 0) + stop - start
        assert covered == {k: sds[0][k].numel() for k in floats}


def test_short_reads_are_completed(tmp_path, monkeypatch):
    """pread may return fewer bytes than asked (network file systems): the engine reads on."""
    dirs = [save_model_dir(tmp_path / n, seed=i) for i, n in enumerate("ab")]
    expected = _untiled_average([_sd(d) for d in dirs], [0.5, 0.5])
    real = os.preadv

    def short(fd, buffers, offset):
        (view,) = buffers
        return real(fd, [memoryview(view)[:1000]], offset)

    monkeypatch.setattr(averaging.os, "preadv", short)
    out = hfsoup.average(hfsoup.load_ingredients([str(d) for d in dirs]))
    assert all(_same_bits(out[k], v) for k, v in expected.items())


def test_a_file_cut_short_after_loading_is_named(tmp_path):
    dirs = [save_model_dir(tmp_path / n, seed=i) for i, n in enumerate("ab")]
    ings = hfsoup.load_ingredients([str(d) for d in dirs])
    weights = dirs[1] / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 4096)  # replaced on disk while the soup was being planned
    with pytest.raises(CorruptFileError, match=r"model.safetensors'.*ended early .*download or save it again"):
        hfsoup.average(ings)
