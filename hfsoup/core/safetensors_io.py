"""Reading safetensors files without loading them: the header (keys, shapes, dtypes, byte offsets and
``__metadata__``), one tensor at a time with ``pread``, the string metadata codec, and the file hash.

Torch is imported only by the functions that build tensors or dtypes, so hashing and metadata stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from hfsoup.errors import CorruptFileError

if TYPE_CHECKING:
    import torch

#: safetensors dtype names -> torch dtype attribute names.
ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
#: Headers above this size are refused (the format allows 100 MB; a real model's header is a few hundred kB).
MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's layout in a safetensors file (``offset``/``nbytes`` are 0 for tensors held in memory)."""

    shape: tuple[int, ...]
    dtype: "torch.dtype"
    offset: int = 0  # absolute byte offset of the tensor's data in its file
    nbytes: int = 0


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Keys, shapes, dtypes and offsets, plus ``__metadata__``, of a safetensors file, reading only its header.

    Also checks that the file is as long as the header says, so a truncated download is caught up front.
    Raises :class:`~hfsoup.errors.CorruptFileError` for anything that is not a valid safetensors file.
    """
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > MAX_HEADER_BYTES:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        metadata = header.pop("__metadata__", None) or {}
        infos, end = {}, 0
        for key, entry in header.items():
            start, stop = entry["data_offsets"]
            dtype = getattr(torch, ST_DTYPES[entry["dtype"]])
            infos[key] = TensorInfo(tuple(entry["shape"]), dtype, 8 + n + start, stop - start)
            end = max(end, stop)
        if 8 + n + end > size:
            raise ValueError(f"file is truncated ({size} bytes, header needs {8 + n + end})")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise CorruptFileError(f"'{path}' is not a valid safetensors file ({e}); delete it and download or save "
                               f"it again", path=path) from None
    return infos, {str(k): str(v) for k, v in metadata.items()}


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
        view, done = memoryview(buf), 0
        while done < info.nbytes:  # pread may return short reads on some filesystems
            got = os.preadv(self.fd, [view[done:]], info.offset + done)
            if got <= 0:
                raise CorruptFileError(f"cannot read tensor '{key}' from '{self.path}': file ended early",
                                       path=self.path)
            done += got
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


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
           "sha256_file", "ST_DTYPES"]
