"""Scenarios of the cross-bitness migration matrix.

Each module declares its cells and their expected outcomes explicitly, as data
(see ../docs/testbed.md, "Adding a scenario"). Most run on every ordered pair of the
selected architectures; the hand-computed ones (pingpong, shapes, truncated, hostile:
`SELECTED`) choose their pairs from the selection itself (`cells(arches)`: a ring
through the selected architectures, one representative per reader and stream layout),
so `all_cells()` holds the cells of every possible selection and `on_arches` keeps
those of the one asked for (docs/testbed.md, "Which pairs each scenario runs on").
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from functools import cache
from types import ModuleType

from scenarios import (
    cold,
    convert,
    faults,
    hostile,
    legacy,
    live_workload,
    no_ext_info,
    pingpong,
    shapes,
    truncated,
    v2libxc,
)
from scenarios.hosts import arch_of
from scenarios.model import Cell

_MODULES = (cold, pingpong, no_ext_info, legacy, shapes, truncated, hostile, convert, faults,
            v2libxc, live_workload)
# Modules whose pairs depend on the whole selection: cells(arches).
SELECTED: tuple[ModuleType, ...] = (pingpong, shapes, truncated, hostile)


def _ordered(arches: Iterable[str]) -> tuple[str, ...]:
    from scenarios.arches import ARCHES

    wanted = set(arches)
    return tuple(a for a in ARCHES if a in wanted)


def _selections() -> list[tuple[str, ...]]:
    """Every non-empty selection: the nightly set first, then all, then the rest."""
    from scenarios.arches import ARCHES, NIGHTLY

    subsets = [c for k in range(1, len(ARCHES) + 1) for c in itertools.combinations(ARCHES, k)]
    first = [_ordered(NIGHTLY), tuple(ARCHES)]
    return first + [s for s in subsets if s not in first]


def _selected(module: ModuleType, arches: tuple[str, ...]) -> list[Cell]:
    """A SELECTED module's cells for one selection. A selection holding the nightly set
    keeps the nightly cells too, so CI's verdicts stay part of any larger run."""
    from scenarios.arches import NIGHTLY

    cells: list[Cell] = list(module.cells(arches))
    nightly = _ordered(NIGHTLY)
    if set(nightly) < set(arches):
        known = {c.id for c in cells}
        cells = [c for c in module.cells(nightly) if c.id not in known] + cells
    return cells


@cache
def _matrix() -> tuple[tuple[Cell, ...], frozenset[str]]:
    """(every cell in matrix order, the ids of the SELECTED modules' cells)."""
    cells: list[Cell] = []
    seen: set[str] = set()
    selected: set[str] = set()
    for m in _MODULES:
        if m in SELECTED:
            mine: dict[str, Cell] = {}
            for arches in _selections():
                for c in _selected(m, arches):
                    if mine.setdefault(c.id, c) != c:
                        raise ValueError(f"cell {c.id} differs between selections")
            found = list(mine.values())
            selected.update(mine)
        else:
            found = list(m.cells())
        for c in found:
            if c.id in seen:
                raise ValueError(f"duplicate cell id {c.id}")
            seen.add(c.id)
        cells += found
    return tuple(cells), frozenset(selected)


def all_cells() -> list[Cell]:
    """Every cell of every selection (ids are unique), in matrix order."""
    return list(_matrix()[0])


@cache
def _chosen(arches: tuple[str, ...]) -> frozenset[str]:
    """Ids the SELECTED modules choose for this selection."""
    return frozenset(c.id for m in SELECTED for c in _selected(m, arches))


def on_arches(cells: list[Cell], arches: Collection[str]) -> list[Cell]:
    """The cells of the selection `arches` (``--arches``): those whose every hop runs on
    one of them, and of the SELECTED modules' cells only those chosen for exactly it."""
    wanted = set(arches)
    chosen, selected = _chosen(_ordered(wanted)), _matrix()[1]
    return [c for c in cells if {arch_of(h) for h in c.hops} <= wanted
            and (c.id not in selected or c.id in chosen)]


def by_id() -> dict[str, Cell]:
    return {c.id: c for c in all_cells()}
