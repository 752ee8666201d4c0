"""Sets of non-negative integers written as inclusive ranges (``"150-300,50"``): the one parser of ``--epochs`` and
``--variants`` (``hfsoup zoo list/pull``, ``hfsoup study``).

An :class:`IntRanges` keeps the ranges, merged and sorted, and never expands them: ``--epochs 0-99999999999`` costs
one pair of numbers, not a hundred billion set entries. Membership is a binary search.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from hfsoup.errors import InvalidRangeError

_PART_RE = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")
#: Longest spec accepted (characters): a spec is typed by a person; a huge one is a mistake, not a selection.
MAX_SPEC_CHARS = 10_000


@dataclass(frozen=True)
class IntRanges:
    """An immutable set of non-negative integers as sorted, disjoint, non-adjacent inclusive ranges.

    ``IntRanges.parse("150-300,50")`` holds 50 and 150..300; ``x in ranges`` works for any object (a non-integer
    is never in it); ``len()`` counts the integers without expanding them; ``str()`` gives the canonical spec.
    """

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, spec: str, what: str = "range") -> "IntRanges":
        """Parse ``"150-300"``, ``"50,60,100-120"`` (ranges inclusive, spaces allowed).

        Raises :class:`~hfsoup.errors.InvalidRangeError` naming ``what`` (the option, e.g. ``--epochs``) for an
        empty spec, a part that is not a number or range, or a range whose end is below its start.
        """
        text = str(spec)
        if len(text) > MAX_SPEC_CHARS:
            raise InvalidRangeError(f"bad {what}: {len(text)} characters is too long for a selection: use ranges, "
                                    f"e.g. 150-300", parameter=what, spec=text[:50])
        pairs = []
        for part in text.split(","):
            m = _PART_RE.fullmatch(part.strip())
            if not m:
                raise InvalidRangeError(f"bad {what} '{text}': '{part.strip()}' is not a number or an inclusive "
                                        f"range: use e.g. 150-300 or 1,3", parameter=what, spec=text)
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise InvalidRangeError(f"bad {what} '{text}': range {lo}-{hi} is empty: write the smaller number "
                                        f"first ({hi}-{lo})", parameter=what, spec=text)
            pairs.append((lo, hi))
        return cls.from_pairs(pairs)

    @classmethod
    def from_pairs(cls, pairs) -> "IntRanges":
        """The union of inclusive ``(lo, hi)`` pairs, merged (overlapping or adjacent pairs become one)."""
        merged: list[list[int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in pairs if int(b) >= int(a)):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple((a, b) for a, b in merged))

    def __contains__(self, x) -> bool:
        if isinstance(x, bool) or not isinstance(x, int):
            return False
        i = bisect.bisect_right(self.ranges, (x, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= x <= self.ranges[i][1]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)

    @property
    def min(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    @property
    def max(self) -> int | None:
        return self.ranges[-1][1] if self.ranges else None


def parse_ranges(spec: str | None, what: str) -> IntRanges | None:
    """``None`` (no filter) for ``None`` or a blank spec, else :meth:`IntRanges.parse`."""
    if spec is None or not str(spec).strip():
        return None
    return IntRanges.parse(spec, what)


__all__ = ["IntRanges", "parse_ranges", "InvalidRangeError", "MAX_SPEC_CHARS"]
