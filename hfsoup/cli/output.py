"""The one output sink of the command line: one JSON document (``--json``) or rich tables.

Torch-free at import (``--help`` imports this module); rich is imported when something is printed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from hfsoup.core.files import json_default


def _finite(obj: Any, where: str = "", found: dict | None = None) -> Any:
    """``obj`` as plain JSON types with NaN/inf floats replaced by ``None`` (JSON has no NaN: strict parsers
    reject it); each replaced value is recorded in ``found`` (``{"models[0].loss": "inf"}``). Rich types (paths,
    dataclasses, tensors) are converted first with :func:`json_default`."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if found is not None:
            found[where or "$"] = repr(obj)  # 'nan', 'inf' or '-inf'
        return None
    if isinstance(obj, (str, int, bool)) or obj is None:  # bool is an int: kept as is
        return obj
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k)): _finite(v, f"{where}.{k}" if where else str(k), found)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return _finite(obj.item(), where, found)
    return _finite(json_default(obj), where, found)


#: Key of a JSON document that lists the values written as ``null`` because they were not finite, and what they
#: were (``{"models[0].loss": "inf"}``): a reader can tell "not finite" from "not computed".
NON_FINITE_KEY = "non_finite"


def to_json(doc: Any) -> str:
    """``doc`` as a JSON string: keys sorted, indented, NaN/inf as ``null``; a dict document then also says which
    values were not finite under :data:`NON_FINITE_KEY`."""
    found: dict = {}
    plain = _finite(doc, "", found)
    if found and isinstance(plain, dict) and NON_FINITE_KEY not in plain:
        plain[NON_FINITE_KEY] = found
    return json.dumps(plain, indent=2, sort_keys=True, allow_nan=False)


def print_json(doc: Any) -> None:
    """Print ``doc`` as one JSON document on stdout (keys sorted; NaN and inf become ``null``, listed under
    ``"non_finite"``)."""
    sys.stdout.write(to_json(doc) + "\n")
    sys.stdout.flush()


def not_finite(x: Any) -> bool:
    """True for a NaN or infinite number (a loss whose logits overflow); False for None and finite values."""
    return isinstance(x, (int, float)) and not math.isfinite(x)


def loss_cell(x: float | None, fmt: str = ".4f") -> str:
    """A loss (or loss gain) table cell: ``fmt``-formatted, ``not finite`` for NaN/inf, empty for None."""
    if x is None:
        return ""
    return format(x, fmt) if math.isfinite(x) else "not finite"


def non_finite_note(names: Sequence[str]) -> str:
    """The note printed under a table whose losses are not finite (empty when ``names`` is empty)."""
    if not names:
        return ""
    return (f"note: the loss of {', '.join(names)} is not finite: the logits overflow (inf or NaN) on some images "
            f"(check the weights); --json reports it as null, listed under \"{NON_FINITE_KEY}\"")


def console():
    """A rich Console for tables and messages (no syntax highlighting of numbers and paths)."""
    from rich.console import Console

    return Console(highlight=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, left: Sequence[str] | None = None,
          out=None) -> None:
    """Print a rich table: ``columns`` are names; the first column (or those in ``left``) is left-aligned, the
    others right-aligned (numbers). Cells are converted with ``str``; ``None`` prints empty. The title is
    escaped (model names hold ``[``)."""
    from rich.markup import escape
    from rich.table import Table

    left = set(left) if left is not None else {columns[0]} if columns else set()
    t = Table(title=escape(title) if title else None)
    for c in columns:
        t.add_column(c, justify="left" if c in left else "right")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    (out or console()).print(t)


def pct(x: float | None) -> str:
    """An accuracy fraction as a percentage with two decimals (``0.7312`` -> ``73.12%``); empty for None/NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{100 * x:.2f}%"


def short_name(ref: str | Path) -> str:
    """A short display name of a model reference: the repo name of a Hub id (``org/name@rev`` -> ``name``),
    the folder name of a local path."""
    s = str(ref)
    if s.startswith("hf-hub:"):
        s = s[len("hf-hub:"):]
    s = s.split("@", 1)[0].rstrip("/\\")
    return s.replace("\\", "/").rsplit("/", 1)[-1] or str(ref)


def unique_names(refs: Iterable[str | Path]) -> dict[str, str]:
    """Short display names of model references that stay distinct: each reference's folder (or repo) name, grown
    to the shortest path suffix that no other reference shares (``runs/a/final`` and ``runs/b/final`` ->
    ``a/final`` and ``b/final``); references that differ only by revision keep it (``name@rev``). Keyed by the
    reference as given (``str``). Tables print these instead of full paths, which they would cut to the same text."""
    refs = list(dict.fromkeys(str(r) for r in refs))
    parts, revs = [], []
    for r in refs:
        s = r[len("hf-hub:"):] if r.startswith("hf-hub:") else r
        s = s[len("local-dir:"):] if s.startswith("local-dir:") else s
        path, _, rev = s.partition("@")
        parts.append([p for p in path.replace("\\", "/").split("/") if p not in ("", ".")] or [r])
        revs.append(rev)
    paths = ["/".join(p) for p in parts]
    depth = [1] * len(refs)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        owners: dict[str, set] = {}
        for name, path in zip(names, paths):
            owners.setdefault(name, set()).add(path)
        # Grow the names that other paths share (the same path at two revisions cannot grow apart).
        grow = [i for i, name in enumerate(names) if len(owners[name]) > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    shared = {name for name in names if names.count(name) > 1}
    return {r: f"{name}@{rev}" if name in shared and rev else name for r, name, rev in zip(refs, names, revs)}


#: Rows of a ranking table shown on the terminal (``--json`` keeps every row).
TABLE_TOP_ROWS = 10


def top_rows(rows: Sequence[Any], keep: Iterable[int] = (), n: int = TABLE_TOP_ROWS) -> tuple[list[Any], int]:
    """The first ``n`` of ``rows`` plus the rows at the indices in ``keep`` (e.g. the winner), in their order;
    and how many rows were left out."""
    wanted = set(range(min(n, len(rows)))) | {i for i in keep if 0 <= i < len(rows)}
    return [rows[i] for i in sorted(wanted)], len(rows) - len(wanted)


def left_out_note(count: int, what: str = "rows") -> str:
    """The line under a table cut by :func:`top_rows` (empty when nothing was left out)."""
    if count <= 0:
        return ""
    return f"… {count} more {what} not shown (--json keeps all)"
