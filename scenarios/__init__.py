"""Scenarios of the cross-bitness migration matrix.

Each module declares its cells and their expected outcomes explicitly, as data
(see ../docs/testbed.md, "Adding a scenario").
"""

from __future__ import annotations

import os
from collections.abc import Collection

from scenarios import (
    cold,
    convert,
    faults,
    hostile,
    legacy,
    no_ext_info,
    pingpong,
    shapes,
    truncated,
)
from scenarios.hosts import arch_of
from scenarios.model import Cell

ENV_ARCHES = "XSMIG_MATRIX_ARCHES"

_MODULES = (cold, pingpong, no_ext_info, legacy, shapes, truncated, hostile, convert, faults)


def all_cells() -> list[Cell]:
    cells = [c for m in _MODULES for c in m.cells()]
    seen: set[str] = set()
    for c in cells:
        if c.id in seen:
            raise ValueError(f"duplicate cell id {c.id}")
        seen.add(c.id)
    return cells


def on_arches(cells: list[Cell], arches: Collection[str]) -> list[Cell]:
    """The cells whose every hop runs on one of `arches` (``--arches``)."""
    wanted = set(arches)
    return [c for c in cells if {arch_of(h) for h in c.hops} <= wanted]


def arches_from_env() -> list[str]:
    """``--arches`` as the matrix passes it to pytest (XSMIG_MATRIX_ARCHES); default:
    the nightly set."""
    from testbed.arch import NIGHTLY, parse_arches

    return parse_arches(os.environ.get(ENV_ARCHES) or ",".join(NIGHTLY))


def by_id() -> dict[str, Cell]:
    return {c.id: c for c in all_cells()}
