"""Atomic writes: the one implementation every writer in hfsoup uses.

A file is written to a temporary sibling, flushed to disk and renamed over its target, so a reader (or a crash)
never sees half a file. A folder is built in a temporary sibling folder and renamed into place, so an interrupted
run leaves no partial output; an existing output is only replaced when the caller passes ``force``.

The final rename of a folder is atomic where the platform allows (Linux ``renameat2``): without ``force`` it
fails if the output appeared meanwhile (a concurrent writer), with ``force`` the old and new folders are exchanged
in one step. Outputs get the user's umask (``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders), whatever
mode the writer's library chose.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import shutil
import sys
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


def current_umask() -> int:
    """The process umask, read without changing it where possible (``/proc/self/status`` on Linux): setting it to
    read it back would, for an instant, apply to files created by other threads."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path, *, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would: ``0o666`` (files) or ``0o777`` (folders) minus the
    umask. Writers such as ``safetensors`` or ``tempfile`` create ``0600`` files that others could not read."""
    with contextlib.suppress(NotImplementedError):
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically with ``writer(tmp_path)`` (``torch.save``, ``safetensors.save_file``, …).

    The file gets the user's umask (:func:`apply_umask`). The temporary file is removed if ``writer`` fails or the
    process is interrupted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        apply_umask(tmp)
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


# -- atomic folder renames -----------------------------------------------------------------------------------------
_AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True when done, False when the platform or file system cannot do it (the
    caller falls back). Raises :class:`OSError` (``FileExistsError`` for ``RENAME_NOREPLACE`` onto an existing
    ``dst``) for real failures."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exists_error(out: Path) -> OutputExistsError:
    return OutputExistsError(f"'{out}' already exists (another run wrote it meanwhile?): choose another --out or pass "
                             f"--force to replace it", path=out)


def _rename_noreplace(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, raising :class:`FileExistsError` if ``out`` exists (atomically where possible)."""
    if rename2(tmp, out, RENAME_NOREPLACE):
        return
    # Fallback: check, then rename. rename(2) of a folder onto an existing non-empty folder or a file fails, which
    # closes most of the window; Windows never replaces an existing target.
    if _exists(out):
        raise FileExistsError(errno.EEXIST, "exists", str(out))
    try:
        os.rename(tmp, out)
    except OSError as e:
        # EEXIST/ENOTEMPTY: out existed at the rename, even if a concurrent writer has moved it since.
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY) or (
                _exists(out) and e.errno in (errno.ENOTDIR, errno.EISDIR, errno.EACCES)):
            raise FileExistsError(errno.EEXIST, "exists", str(out)) from None
        raise


def _replace_existing(tmp: Path, out: Path) -> None:
    """Put ``tmp`` in place of the existing ``out``: one atomic exchange where possible, else move ``out`` aside,
    move ``tmp`` in and put ``out`` back if that fails or is interrupted (``out`` is never left missing)."""
    if rename2(tmp, out, RENAME_EXCHANGE):
        _remove(tmp)  # now the old output
        return
    old = _tmp_sibling(out, "old")
    try:
        os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as e:
        if _exists(old):
            try:
                _rename_noreplace(old, out)  # put the old output back
            except FileExistsError:  # a concurrent forced writer's output took the place: ours is retried over it
                _remove(old)
        if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "exists", str(out)) from None
        raise
    _remove(old)


def replace_folder(tmp: Path, out: Path, *, force: bool = True) -> None:
    """Move the finished folder ``tmp`` to ``out``.

    Without ``force``, raise :class:`~hfsoup.errors.OutputExistsError` if ``out`` exists, even when it appeared
    after the caller's first check (a concurrent writer): the rename itself refuses to replace it. With ``force``,
    an existing ``out`` is replaced in one atomic exchange where the platform allows, else moved aside and removed
    only once the new one is in place, so ``out`` is never lost.
    """
    tmp, out = Path(tmp), Path(out)
    for _ in range(32):  # with force, another writer may create or remove out between our steps: retry
        try:
            if force and _exists(out):
                _replace_existing(tmp, out)
            else:
                _rename_noreplace(tmp, out)
            break
        except FileNotFoundError:  # out was moved away by a concurrent forced writer
            if not force or not _exists(tmp):
                raise
        except FileExistsError:
            if not force:
                raise _exists_error(out) from None
    else:
        raise _exists_error(out)
    fsync_dir(out.parent)


@contextlib.contextmanager
def atomic_folder(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Build a folder atomically: yields a temporary sibling folder to fill; on success it replaces ``out``.

    ``out`` must not exist unless ``force``, checked before (fail early) and again by the final rename (a
    concurrent writer that finished first wins; the others get :class:`~hfsoup.errors.OutputExistsError`). On any
    error (or interruption) the temporary folder is removed and ``out`` is left as it was.
    """
    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    tmp.mkdir()
    apply_umask(tmp, folder=True)
    try:
        yield tmp
        replace_folder(tmp, out, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
