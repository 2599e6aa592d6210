"""Scenarios of the cross-bitness migration matrix.

Each module declares its cells and their expected outcomes explicitly, as data
(see ../docs/testbed.md, "Adding a scenario").
"""

from __future__ import annotations

from scenarios import (
    cold,
    convert,
    hostile,
    legacy,
    no_ext_info,
    pingpong,
    shapes,
    truncated,
)
from scenarios.model import Cell

_MODULES = (cold, pingpong, no_ext_info, legacy, shapes, truncated, hostile, convert)


def all_cells() -> list[Cell]:
    cells = [c for m in _MODULES for c in m.cells()]
    seen: set[str] = set()
    for c in cells:
        if c.id in seen:
            raise ValueError(f"duplicate cell id {c.id}")
        seen.add(c.id)
    return cells


def by_id() -> dict[str, Cell]:
    return {c.id: c for c in all_cells()}
