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


def _finite(obj: Any) -> Any:
    """``obj`` as plain JSON types with NaN/inf floats replaced by ``None`` (JSON has no NaN: strict parsers
    reject it). Rich types (paths, dataclasses, tensors) are converted first with :func:`json_default`."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:  # bool is an int: kept as is
        return obj
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return _finite(obj.item())
    return _finite(json_default(obj))


def to_json(doc: Any) -> str:
    """``doc`` as a JSON string: keys sorted, indented, NaN/inf as ``null``."""
    return json.dumps(_finite(doc), indent=2, sort_keys=True, allow_nan=False)


def print_json(doc: Any) -> None:
    """Print ``doc`` as one JSON document on stdout (keys sorted; NaN and inf become ``null``)."""
    sys.stdout.write(to_json(doc) + "\n")
    sys.stdout.flush()


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
