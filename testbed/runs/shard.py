"""`--shard K/N`: a deterministic, balanced slice of the selected cells.

Every machine that runs the same selection computes the same N slices, so a CI
system can fan a matrix out over N runners and merge the reports afterwards
(`python -m testbed merge`). Balance: cells are dealt out largest first, each to
the slice with the least estimated work so far (ties: the lower slice), where the
estimate counts a fixed cost per hop (host round trips, interpreter starts under
QEMU) plus the pages moved.
"""

from __future__ import annotations

from collections.abc import Sequence

from scenarios.model import Cell
from testbed.errors import TestbedError

HOP_COST = 4096  # a hop's fixed cost, in pages: starts and round trips dominate small cells


class ShardError(TestbedError):
    pass


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N), 1 <= K <= N."""
    k, sep, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not sep or not 1 <= index <= count:
        raise ShardError(f"--shard wants K/N with 1 <= K <= N (e.g. 1/4), got {text!r}")
    return index, count


def cost(cell: Cell) -> int:
    hops = len(cell.hops) - 1
    return hops * (HOP_COST + cell.domain.pages * (cell.rounds or 1)) + cell.domain.vcpus * 64


def assign(cells: Sequence[Cell], count: int) -> list[list[Cell]]:
    """All `count` slices, each in the cells' original order."""
    slices: list[list[int]] = [[] for _ in range(count)]
    load = [0] * count
    order = sorted(range(len(cells)), key=lambda i: (-cost(cells[i]), cells[i].id))
    for i in order:
        target = min(range(count), key=lambda s: (load[s], s))
        slices[target].append(i)
        load[target] += cost(cells[i])
    return [[cells[i] for i in sorted(s)] for s in slices]


def shard(cells: Sequence[Cell], index: int, count: int) -> list[Cell]:
    """Slice `index` (1-based) of `count`; an error when it would be empty."""
    chosen = assign(cells, count)[index - 1]
    if not chosen:
        raise ShardError(f"--shard {index}/{count}: only {len(cells)} cells selected, so this "
                         "shard has none; use fewer shards")
    return chosen
