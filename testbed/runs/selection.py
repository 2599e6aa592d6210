"""Choosing cells: `--select EXPR` and cell ids given on the command line.

EXPR is a comma-separated list of terms; a cell is selected when any term
matches it. A term is matched against the cell id (`pair/encoding/guestW/scenario`):
- with a glob character (`*?[`): as a glob over the whole id,
  e.g. `i386-to-*/escaped/*/cold`;
- otherwise: as a `/`-separated sequence of whole id segments, in order,
  e.g. `legacy`, `escaped/guest64`, `amd64-to-i386/native`.
A leading `!` on a term excludes what it matches instead (applied after the others).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

from scenarios.model import Cell
from testbed.errors import TestbedError


class SelectionError(TestbedError):
    pass


def _segments_match(term: str, cell_id: str) -> bool:
    want = [s for s in term.split("/") if s]
    have = cell_id.split("/")
    if not want:
        return False
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def term_matches(term: str, cell_id: str) -> bool:
    if any(ch in term for ch in "*?["):
        return fnmatch.fnmatchcase(cell_id, term)
    return _segments_match(term, cell_id)


def _vocabulary(cells: Sequence[Cell]) -> list[str]:
    words = {c.id for c in cells}
    for c in cells:
        words.update(c.id.split("/"))
    return sorted(words)


def close_matches(term: str, cells: Sequence[Cell], n: int = 6) -> list[str]:
    return difflib.get_close_matches(term.lstrip("!"), _vocabulary(cells), n=n, cutoff=0.5)


def select(cells: Sequence[Cell], expr: str | None) -> list[Cell]:
    """The cells EXPR selects, in matrix order; an error naming close matches if none."""
    if expr is None or not expr.strip():
        return list(cells)
    terms = [t.strip() for t in expr.split(",") if t.strip()]
    include = [t for t in terms if not t.startswith("!")]
    exclude = [t[1:] for t in terms if t.startswith("!")]
    for t in include + exclude:
        if not any(term_matches(t, c.id) for c in cells):
            hint = close_matches(t, cells)
            if hint:
                raise SelectionError(
                    f"--select term {t!r} matches no cell; close matches: {', '.join(hint)}"
                )
            segments = sorted({seg for c in cells for seg in c.id.split("/")})
            raise SelectionError(
                f"--select term {t!r} matches no cell; id segments are: {', '.join(segments)}"
            )
    chosen = [c for c in cells if not include or any(term_matches(t, c.id) for t in include)]
    chosen = [c for c in chosen if not any(term_matches(t, c.id) for t in exclude)]
    if not chosen:
        raise SelectionError(f"--select {expr!r} leaves no cell")
    return chosen


def by_id(cells: Sequence[Cell], cell_id: str) -> Cell:
    for c in cells:
        if c.id == cell_id:
            return c
    hint = difflib.get_close_matches(cell_id, [c.id for c in cells], n=6, cutoff=0.6)
    raise SelectionError(
        f"unknown cell id {cell_id!r}"
        + (
            f"; close matches: {', '.join(hint)}"
            if hint
            else "; list them: python3 -m testbed matrix --list"
        )
    )
