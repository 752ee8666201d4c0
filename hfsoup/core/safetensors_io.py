"""Reading safetensors files without loading them: the header (keys, shapes, dtypes, byte offsets and
``__metadata__``), one tensor at a time with ``pread``, the string metadata codec, and the file hash.

Torch is imported only by the functions that build tensors or dtypes, so hashing and metadata stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, NamedTuple

from hfsoup.errors import CorruptFileError

if TYPE_CHECKING:
    import torch

#: safetensors dtype names -> torch dtype attribute names.
ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
#: Headers above this size are refused (the format allows 100 MB; a real model's header is a few hundred kB).
MAX_HEADER_BYTES = 100 * 2**20


class TensorInfo(NamedTuple):
    """One tensor's layout in a safetensors file (``offset``/``nbytes`` are 0 for tensors held in memory).

    Immutable; a named tuple, as a header has hundreds of them and each is made on every load."""

    shape: tuple[int, ...]
    dtype: "torch.dtype"
    offset: int = 0  # absolute byte offset of the tensor's data in its file
    nbytes: int = 0


#: Bytes per element of each safetensors dtype.
ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class _Invalid(ValueError):
    """What is wrong with a safetensors file (turned into a :class:`CorruptFileError` with its name)."""


def _is_uint(v) -> bool:
    return type(v) is int and v >= 0  # JSON gives int or bool; bool is not a size


_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


def validate_header(header, data_size: int) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """Check a parsed safetensors header as the ``safetensors`` library does, for a data section of ``data_size``
    bytes: a JSON object; ``__metadata__`` absent, null or a str->str map; every tensor with a known dtype, a shape
    of non-negative ints and ``data_offsets [begin, end]`` with ``end - begin == prod(shape) * itemsize``; the
    tensors contiguous, non-overlapping and covering the data section exactly.

    Returns ``(metadata, {key: (dtype, shape, begin, end)})``; raises :class:`ValueError` saying what is wrong.
    """
    if not isinstance(header, dict):
        raise _Invalid(f"the header is JSON {type(header).__name__ if header is not None else 'null'}, "
                       f"not an object")
    metadata = header.get("__metadata__")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Invalid("__metadata__ is not a map of strings to strings")
    entries = {}
    for key, entry in header.items():  # written for speed as well: a header has hundreds of entries
        if key == "__metadata__":
            continue
        if type(entry) is not dict or entry.keys() != _ENTRY_FIELDS:
            raise _Invalid(f"tensor '{key}' is not a {{dtype, shape, data_offsets}} object")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        itemsize = ST_ITEMSIZE.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise _Invalid(f"tensor '{key}' has unknown dtype {dtype!r} (known: {', '.join(ST_ITEMSIZE)})")
        count = 1
        if type(shape) is list:
            for d in shape:
                if type(d) is not int or d < 0:
                    break
                count *= d
            else:
                shape = tuple(shape)
        if type(shape) is not tuple:
            raise _Invalid(f"tensor '{key}' has an invalid shape {shape!r} (expected a list of non-negative ints)")
        if not (type(offsets) is list and len(offsets) == 2 and _is_uint(offsets[0]) and _is_uint(offsets[1])
                and offsets[0] <= offsets[1]):
            raise _Invalid(f"tensor '{key}' has invalid data_offsets {offsets!r} (expected [begin, end], "
                           f"0 <= begin <= end)")
        begin, end = offsets
        if end > data_size:
            raise _Invalid(f"tensor '{key}' ends at byte {end} of the data section, which has only {data_size} "
                           f"bytes (truncated file?)")
        if end - begin != count * itemsize:
            raise _Invalid(f"tensor '{key}' has {end - begin} bytes but shape {list(shape)} x {dtype} needs "
                           f"{count * itemsize}")
        entries[key] = (dtype, shape, begin, end)
    position = 0
    for key, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise _Invalid(f"tensor '{key}' starts at byte {begin} and {what}")
        position = end
    if position != data_size:
        raise _Invalid(f"the tensors cover {position} bytes but the data section has {data_size} (truncated or "
                       f"trailing data)")
    return {str(k): v for k, v in metadata.items()}, entries


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Keys, shapes, dtypes and offsets, plus ``__metadata__``, of a safetensors file, reading only its header.

    The header is validated as the ``safetensors`` library does (:func:`validate_header`), so a truncated
    download, overlapping or out-of-range tensors, or a header that is not an object are caught up front.
    Raises :class:`~hfsoup.errors.CorruptFileError` for anything that is not a valid safetensors file.
    """
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _Invalid(f"the file has {size} bytes, fewer than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n > size - 8 or n > MAX_HEADER_BYTES:
                raise _Invalid(f"header length {n} out of range (file has {size} bytes)")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _Invalid(f"the header is not valid UTF-8 JSON ({e})") from None
        metadata, entries = validate_header(header, size - 8 - n)
    except (OSError, _Invalid) as e:
        raise CorruptFileError(f"'{path}' is not a valid safetensors file: {e}; delete it and download or save "
                               f"it again", path=path) from None
    dtypes = {name: getattr(torch, attr) for name, attr in ST_DTYPES.items()}
    infos = {key: TensorInfo(shape, dtypes[dtype], 8 + n + begin, end - begin)
             for key, (dtype, shape, begin, end) in entries.items()}
    return infos, metadata


def write_safetensors(path: str | Path, tensors: Mapping[str, "torch.Tensor"],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as a safetensors file with byte-reproducible content.

    ``safetensors.save_file`` serialises ``__metadata__`` from a Rust hash map, whose order changes from one
    process to the next; here the header is built in a fixed order (metadata keys sorted, tensors ordered as
    ``safetensors`` orders them: larger item size first, then by name, so data stays aligned) and padded with
    spaces to a multiple of 8 bytes. The result is a standard safetensors file. Not atomic: use
    :func:`hfsoup.core.files.atomic_save`.
    """
    import torch

    dtype_names = {getattr(torch, v): k for k, v in ST_DTYPES.items()}
    items = []
    for key, t in tensors.items():
        if t.dtype not in dtype_names:
            raise TypeError(f"tensor '{key}' has dtype {t.dtype}, which hfsoup does not write")
        items.append((ST_ITEMSIZE[dtype_names[t.dtype]], str(key), t))
    items.sort(key=lambda it: (-it[0], it[1]))
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    offset = 0
    for size, key, t in items:
        nbytes = t.numel() * size
        header[key] = {"dtype": dtype_names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if sys.byteorder != "little":  # the format is little-endian; hfsoup writes native bytes
        raise OSError("writing safetensors needs a little-endian machine")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, t in items:
            t = t.detach().cpu().contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return Path(path)


class SafetensorsReader:
    """Reads one tensor of an open safetensors file (``fd``) with ``pread`` at the offsets of its header.

    Plain reads instead of a memory map: with many ingredients open at once, mapped pages of every file would
    count against the process (resident set); read buffers are freed as soon as the tensor is consumed.
    """

    def __init__(self, fd: int, path: Path, infos: Mapping[str, TensorInfo]):
        self.fd, self.path, self.infos = fd, path, infos

    def get_tensor(self, key: str) -> "torch.Tensor":
        import torch

        info = self.infos[key]
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        buf = bytearray(info.nbytes)
        self.read_into(info.offset, memoryview(buf), what=f"tensor '{key}'")
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)

    def read_into(self, offset: int, view: memoryview, *, what: str = "data") -> None:
        """Fill ``view`` with the file's bytes from ``offset`` on (``pread`` may return short reads on some
        filesystems: it reads on); :class:`CorruptFileError` if the file ends first."""
        got, nbytes = 0, len(view)
        while got < nbytes:
            more = os.preadv(self.fd, [view[got:nbytes]], offset + got)
            if more <= 0:
                raise CorruptFileError(f"cannot read {what} from '{self.path}': the file ended early (at byte "
                                       f"{offset + got}); delete it and download or save it again", path=self.path)
            got += more


def encode_metadata(values: Mapping[str, object]) -> dict[str, str]:
    """safetensors ``__metadata__`` maps strings to strings: strings stay, everything else is JSON-encoded
    (``None`` values are dropped; ``format`` is ``pt``)."""
    out = {"format": "pt"}
    for k, v in values.items():
        if v is None:
            continue
        out[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


def decode_metadata(metadata: Mapping[str, str]) -> dict:
    """Inverse of :func:`encode_metadata` (values that are not JSON stay strings)."""
    out = {}
    for k, v in metadata.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def sha256_file(path: str | Path, chunk: int = 2**22) -> str:
    """SHA-256 (hex) of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


__all__ = ["TensorInfo", "read_safetensors_header", "SafetensorsReader", "encode_metadata", "decode_metadata",
           "sha256_file", "ST_DTYPES", "validate_header", "write_safetensors"]
