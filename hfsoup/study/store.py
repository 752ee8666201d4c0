"""Storage of the pair study: content ids, append-only shard files, and the merged parquet table.

Layout of a study folder ``OUT``::

    OUT/shards/<name>.jsonl      one file per process (or ``--shard i/n`` job); one JSON row per line
    OUT/pairs.parquet            :func:`merge` of all shards: one row per content id, deterministic bytes

Exactly-once without coordination between processes:

* every row has a content id (:func:`row_id`) computed from what determines its result (the two models' weight
  hashes, α, the evaluation splits' fingerprints), so a rerun knows what is done (:func:`completed_ids`) and rows are
  assigned to processes by id (:func:`shard_of`), never by position;
* a row is appended with a single ``write`` of one complete line followed by ``fsync`` (:class:`ShardWriter`); a
  process killed at any moment leaves at most a torn last line, which readers ignore and the next writer of that
  shard truncates;
* if two processes ever computed the same row, :func:`read_rows` keeps one (an ``"ok"`` row over a ``"failed"`` one).

Only the standard library, numpy and pyarrow are used here, so the store can be read (``hfsoup study status``)
without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hfsoup.core.files import atomic_save
from hfsoup.errors import HfSoupError

try:  # advisory lock so that two processes never append to the same shard; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ROW_ID_HEX", "SHARDS_DIR", "row_id", "shard_of", "parse_shard", "ShardWriter", "read_rows", "completed_ids",
    "write_table", "merge", "StudyStatus", "status",
]

ROW_ID_HEX = 20
"""Length of a row id: the first 20 hex characters (80 bits) of a SHA-256."""

SHARDS_DIR = "shards"
"""Sub-folder of a study folder holding the per-process ``*.jsonl`` shard files."""

STATUSES = ("ok", "failed")

_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX = re.compile(r"^[0-9a-f]+$")


# ----------------------------------------------------------------------------------------------------------- ids
def _canonical_alpha(alpha: float) -> str:
    value = float(alpha)
    if not math.isfinite(value):
        raise HfSoupError(f"alpha must be a finite number, got {alpha!r}")
    # Rounding to 6 decimals makes 0.1 + 0.2 and 0.3 the same soup; "+ 0.0" folds -0.0 into 0.0.
    return repr(round(value, 6) + 0.0)


def row_id(weights_sha_a: str, weights_sha_b: str, alpha: float, fingerprints: Sequence[str]) -> str:
    """Content id of one study row: the first :data:`ROW_ID_HEX` (20) hex characters of the SHA-256 of

    ``json.dumps({"alpha": repr(round(float(alpha), 6)), "fingerprints": sorted(fingerprints),
    "models": [weights_sha_a, weights_sha_b]}, sort_keys=True, separators=(",", ":"))`` (UTF-8).

    The soup is ``(1 - alpha) * a + alpha * b``: the pair is *ordered*, so ``(a, b, α)`` and ``(b, a, 1 - α)`` are
    the same soup with different ids. The caller canonicalises unordered pairs (e.g. ``a`` = the smaller sha)
    before calling. The fingerprints (of the evaluation splits) are sorted, so their order does not matter.
    Deterministic across processes, machines and Python versions (no ``hash()``).
    """
    for name, sha in (("weights_sha_a", weights_sha_a), ("weights_sha_b", weights_sha_b)):
        if not isinstance(sha, str) or not sha:
            raise ValueError(f"{name} must be a non-empty string, got {sha!r}")
    if isinstance(fingerprints, str):  # a str is a Sequence[str] too: almost certainly a caller bug
        raise TypeError("fingerprints must be a sequence of strings, not a single string")
    fps = sorted(fingerprints)
    if not all(isinstance(fp, str) for fp in fps):
        raise TypeError(f"fingerprints must be strings, got {fps!r}")
    canonical = json.dumps({"alpha": _canonical_alpha(alpha), "fingerprints": fps,
                            "models": [weights_sha_a, weights_sha_b]}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ROW_ID_HEX]


def shard_of(row_id: str, num_shards: int) -> int:
    """The shard (0-based, ``< num_shards``) that computes a row: ``int(row_id[:16], 16) % num_shards``.

    Depends only on the id, so every process agrees without communication, each row belongs to exactly one shard
    (no padding duplicates as with a sampler), and the assignment is the same on a rerun.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    head = row_id[:16]
    if not head or not _HEX.match(head):
        raise ValueError(f"not a row id (lowercase hex expected): {row_id!r}")
    return int(head, 16) % num_shards


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/n`` (0-based ``i``, ``0 <= i < n``) into ``(i, n)``; :class:`HfSoupError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if match:
        index, count = int(match.group(1)), int(match.group(2))
        if 0 <= index < count:
            return index, count
    raise HfSoupError(f"--shard takes i/n with 0 <= i < n, got {text!r}")


# ------------------------------------------------------------------------------------------------------ writing
def _clean_value(key: str, value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy scalars (np.float32 accuracy, np.bool_) → plain Python
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN/inf; null is what parquet and pandas readers expect for a missing metric.
        return value if math.isfinite(value) else None
    raise TypeError(f"row value {key!r} must be None, bool, int, float or str, got {type(value).__name__}")


def _clean_row(row: dict) -> dict:
    """Validate a row and replace non-finite floats by None."""
    if not isinstance(row, dict):
        raise TypeError(f"a row must be a dict, got {type(row).__name__}")
    clean = {}
    for key, value in row.items():
        if not isinstance(key, str):
            raise TypeError(f"row keys must be strings, got {key!r}")
        clean[key] = _clean_value(key, value)
    rid, state = clean.get("row_id"), clean.get("status")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"a row needs a non-empty string 'row_id', got {rid!r}")
    if state not in STATUSES:
        raise ValueError(f"row {rid}: 'status' must be 'ok' or 'failed', got {state!r}")
    if state == "failed" and (not isinstance(clean.get("error"), str) or not clean["error"]):
        raise ValueError(f"row {rid}: a failed row needs a non-empty string 'error'")
    return clean


def _torn_tail_start(fd: int) -> int | None:
    """Offset just after the last ``\\n`` of the file, or None when the file is empty or ends with ``\\n``."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    end, chunk = size, 1 << 16
    while end > 0:  # scan backwards: a torn row is at most one line, typically a few KB
        start = max(0, end - chunk)
        pos = os.pread(fd, end - start, start).rfind(b"\n")
        if pos >= 0:
            return start + pos + 1
        end = start
    return 0


class ShardWriter:
    """Append-only writer of one shard file, ``out_dir/shards/{name}.jsonl``; use as a context manager.

    Each :meth:`append` is one ``os.write`` of one complete JSON line (``O_APPEND``) followed by ``os.fsync``, so a
    row is either entirely on disk or (if the process dies inside the write) a torn last line without ``\\n``.
    On open, such a torn tail of this file is truncated, so the next row starts on a fresh line. An exclusive
    ``flock`` on the file (where available) makes a second process opening the same shard fail with
    :class:`HfSoupError` instead of interleaving with the first; the kernel releases it when the holder dies,
    even by SIGKILL.
    """

    _fd: int | None = None

    def __init__(self, out_dir: Path | str, name: str) -> None:
        if not isinstance(name, str) or not _SHARD_NAME.match(name):
            raise ValueError(f"shard name must match {_SHARD_NAME.pattern}, got {name!r}")
        self.path = Path(out_dir) / SHARDS_DIR / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows_written = 0
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise HfSoupError(f"another process is writing {self.path}: give each process its own shard "
                                      f"(--shard i/n or one process per rank)") from None
            tail = _torn_tail_start(self._fd)
            if tail is not None:
                os.ftruncate(self._fd, tail)
                os.fsync(self._fd)
        except BaseException:
            self.close()
            raise

    def append(self, row: dict) -> None:
        """Write one row durably. ``row`` needs ``row_id`` (str), ``status`` (``"ok"``/``"failed"``) and, when
        failed, ``error`` (str); other values are None, bool, int, float (NaN/inf stored as null) or str."""
        if self._fd is None:
            raise ValueError(f"ShardWriter for {self.path} is closed")
        line = (json.dumps(_clean_row(row), sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size  # we hold the lock: nobody else moves the end of the file
        try:
            view = memoryview(line)
            while view:  # one write in practice; a short write (disk full, signal) is finished, never left torn
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException:
            try:  # roll back a partial line so that later rows are not glued to it
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise
        self.rows_written += 1

    def close(self) -> None:
        """Close the file (and release the lock); idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------ reading
def _shard_files(out_dir: Path | str) -> list[Path]:
    folder = Path(out_dir) / SHARDS_DIR
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.name) if folder.is_dir() else []


def _parse_line(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if (not isinstance(row, dict) or not isinstance(row.get("row_id"), str) or not row["row_id"]
            or row.get("status") not in STATUSES):
        return None
    return row


def _read_shard(path: Path) -> tuple[list[dict], int]:
    """Complete rows of one shard in file order, and the number of lines ignored (torn tail, unparsable)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # text after the last "\n": empty, or a row whose write was interrupted
    rows, bad = [], int(bool(torn))
    for line in lines:
        row = _parse_line(line)
        if row is None:
            bad += 1
        else:
            rows.append(row)
    return rows, bad


def _collapse(rows: Iterable[dict]) -> dict[str, dict]:
    """One row per id: the first ``"ok"`` row if any, else the first ``"failed"`` one."""
    best: dict[str, dict] = {}
    for row in rows:
        kept = best.get(row["row_id"])
        if kept is None or (kept["status"] == "failed" and row["status"] == "ok"):
            best[row["row_id"]] = row
    return best


def read_rows(out_dir: Path | str) -> list[dict]:
    """All complete rows of all shards of a study folder, one per ``row_id``, sorted by ``row_id``.

    Shards are read in name order, lines in file order; a torn last line and unparsable lines are ignored.
    Duplicates (the same row computed twice) collapse: an ``"ok"`` row wins over a ``"failed"`` one, and among
    equals the first in (shard name, line) order. Returns ``[]`` when there are no shards yet.
    """
    everything = (row for path in _shard_files(out_dir) for row in _read_shard(path)[0])
    best = _collapse(everything)
    return [best[key] for key in sorted(best)]


def completed_ids(out_dir: Path | str, *, include_failed: bool = True) -> set[str]:
    """Ids a rerun skips: every recorded row, or only the ``"ok"`` ones with ``include_failed=False``
    (``--retry-failed``; a later ``"ok"`` row then supersedes the failed one in :func:`read_rows`)."""
    return {row["row_id"] for row in read_rows(out_dir) if include_failed or row["status"] == "ok"}


# ------------------------------------------------------------------------------------------------------ parquet
def _column_type(name: str, values: list[Any]) -> pa.DataType:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.null()
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int, float}:  # bool is excluded above: True is not silently 1
        return pa.int64() if kinds == {int} else pa.float64()
    if kinds == {str}:
        return pa.string()
    raise HfSoupError(f"column {name!r} mixes value types {sorted(k.__name__ for k in kinds)}; cannot store it "
                      f"in one parquet column")


def _sort_key(row: dict, order_by: Sequence[str]) -> tuple:
    # None sorts last; values of one column share a type (checked before sorting), so they compare.
    return tuple((row.get(c) is None, row.get(c) if row.get(c) is not None else 0) for c in order_by)


#: Column types :func:`write_table` accepts in ``types``.
COLUMN_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}


def write_table(path: Path | str, rows: Sequence[dict], *, order_by: Sequence[str] = (),
                leading: Sequence[str] = (), types: Mapping[str, str] | None = None) -> Path:
    """Write dict rows as a parquet file, atomically (:func:`hfsoup.core.files.atomic_save`).

    Columns: ``leading`` first (always present, in that order), then the other keys in order of first appearance
    in the (sorted) rows; a missing value is null. Types: bool → bool, int → int64, float or int+float → float64,
    str → string, a column without any non-null value → null type; NaN/inf become null; other mixes raise
    :class:`HfSoupError`. ``types`` fixes the type of named columns (``bool``, ``int64``, ``float64``,
    ``string``), so that a column keeps its type when every value is null (an int in a float64 column is
    stored as a float). Rows are stably sorted by ``order_by`` (None last) when given, else written as passed.
    The same rows in the same order always give the same bytes (zstd, no timestamps in the file).
    """
    path = Path(path)
    clean = [{k: _clean_value(k, v) for k, v in row.items()} for row in rows]
    names: dict[str, None] = {}
    for row in clean:
        names.update(dict.fromkeys(row))
    fixed = {}
    for name, kind in (types or {}).items():
        if kind not in COLUMN_TYPES:
            raise ValueError(f"column {name!r}: unknown type {kind!r} (one of {', '.join(COLUMN_TYPES)})")
        fixed[name] = COLUMN_TYPES[kind]
    types = {name: fixed.get(name) or _column_type(name, [row.get(name) for row in clean])
             for name in (*leading, *names)}
    if order_by:
        clean.sort(key=lambda row: _sort_key(row, order_by))
    columns = dict.fromkeys(leading)
    for row in clean:  # first appearance *after* sorting, so the column order does not depend on input order
        for key in row:
            columns.setdefault(key)
    def column(c: str) -> list:
        values = [row.get(c) for row in clean]
        if types[c] == pa.float64():  # ints of a float column (an accuracy of exactly 1) stored as floats
            values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
        return values

    try:
        table = pa.table({c: pa.array(column(c), type=types[c]) for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise HfSoupError(f"cannot store the rows as parquet: {e}") from None

    atomic_save(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path


def merge(out_dir: Path | str, *, table_name: str = "pairs", order_by: Sequence[str] = ("row_id",)) -> Path:
    """Write ``out_dir/{table_name}.parquet`` from :func:`read_rows`, atomically; returns its path.

    Rows are sorted by ``order_by`` then ``row_id``; columns are ``row_id``, ``status``, then the other keys in order
    of first appearance (see :func:`write_table`). The same set of rows gives the same bytes whichever processes
    wrote them, in whichever order and shard split.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", table_name):
        raise ValueError(f"bad table name {table_name!r}")
    keys = tuple(order_by) + (() if "row_id" in order_by else ("row_id",))
    return write_table(Path(out_dir) / f"{table_name}.parquet", read_rows(out_dir), order_by=keys,
                       leading=("row_id", "status"))


# ------------------------------------------------------------------------------------------------------- status
@dataclass
class StudyStatus:
    """Progress of a study folder, as read from its shards (see :func:`status`)."""

    done: int
    """Rows with status ``"ok"`` (after collapsing duplicates)."""
    failed: int
    """Rows with status ``"failed"`` (not retried unless asked)."""
    total: int | None = None
    """Rows the run has to compute, when the caller knows."""
    remaining: int | None = None
    """``total - done - failed`` (never negative), when ``total`` is known."""
    per_shard: dict[str, int] = field(default_factory=dict)
    """Complete lines per shard file name (before collapsing duplicates)."""
    throughput: float | None = None
    """Rows per second, ``(n - 1) / (last - first)`` over the ``finished_at`` unix times of the ok rows; None with
    fewer than 2 such rows. Counts all processes together; pauses between runs lower it."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """``(row_id, error)`` of the failed rows, sorted by id."""
    ignored_lines: int = 0
    """Torn or unparsable lines skipped while reading."""

    def summary(self) -> str:
        """A one-line human summary."""
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if self.remaining is not None:
            parts.append(f"{self.remaining} remaining of {self.total}")
        parts.append(f"{len(self.per_shard)} shard(s)")
        if self.throughput is not None:
            parts.append(f"{self.throughput:.3g} rows/s")
        return ", ".join(parts)


def status(out_dir: Path | str, total: int | None = None) -> StudyStatus:
    """Counts, throughput and failures of a study folder; :class:`HfSoupError` if the folder does not exist."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise HfSoupError(f"no study folder at {out_dir}: pass the --out folder of 'hfsoup study run'")
    per_shard: dict[str, int] = {}
    everything: list[dict] = []
    ignored = 0
    for path in _shard_files(out_dir):
        rows, bad = _read_shard(path)
        per_shard[path.stem] = len(rows)
        everything.extend(rows)
        ignored += bad
    best = _collapse(everything)
    rows = [best[key] for key in sorted(best)]
    ok = [row for row in rows if row["status"] == "ok"]
    failures = [(row["row_id"], str(row.get("error"))) for row in rows if row["status"] == "failed"]
    times = sorted(t for row in ok if isinstance(t := row.get("finished_at"), (int, float))
                   and not isinstance(t, bool) and math.isfinite(t))
    throughput = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else None
    remaining = None if total is None else max(0, total - len(ok) - len(failures))
    return StudyStatus(done=len(ok), failed=len(failures), total=total, remaining=remaining, per_shard=per_shard,
                       throughput=throughput, failures=failures, ignored_lines=ignored)
