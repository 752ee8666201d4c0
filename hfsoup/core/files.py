"""Atomic writes: the one implementation every writer in hfsoup uses.

A file is written to a temporary sibling, flushed to disk and renamed over its target, so a reader (or a crash)
never sees half a file. A folder is built in a temporary sibling folder and renamed into place, so an interrupted
run leaves no partial output; an existing output is only replaced when the caller passes ``force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from hfsoup.errors import OutputExistsError


def _tmp_sibling(path: Path, kind: str = "tmp") -> Path:
    # Hidden and unique: concurrent writers of the same target never share a temporary.
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically with ``writer(tmp_path)`` (``torch.save``, ``safetensors.save_file``, …).

    The temporary file is removed if ``writer`` fails or the process is interrupted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for the types hfsoup results hold: paths, dataclasses, objects with ``to_dict``,
    tensors and numpy values (imported lazily: writing JSON must not import torch)."""
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """hfsoup's JSON: keys sorted (the same inputs give the same bytes), :func:`json_default` for rich types."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (:func:`dumps_json`) to ``path`` atomically."""
    return atomic_write_text(path, dumps_json(obj))


def check_output(out: str | Path, force: bool = False) -> Path:
    """Fail early (before any work) if ``out`` exists and ``force`` is not set."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"'{out}' already exists: choose another --out or pass --force to replace it",
                                path=out)
    return out


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``. An existing ``out`` is moved aside first and removed only once
    the new one is in place, so ``out`` is never lost."""
    if out.exists() or out.is_symlink():
        old = _tmp_sibling(out, "old")
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)
    fsync_dir(out.parent)


@contextlib.contextmanager
def atomic_folder(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Build a folder atomically: yields a temporary sibling folder to fill; on success it replaces ``out``.

    ``out`` must not exist unless ``force``; on any error (or interruption) the temporary folder is removed and
    ``out`` is left as it was.
    """
    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
