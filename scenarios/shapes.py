"""Unusual guests: large, sparse, page-table heavy, many vCPUs with a sparse map, live rounds.

Hosts run Python under QEMU, so these stay on a few cells each, chosen where
width handling matters most: the cross-width pairs.
"""

from __future__ import annotations

import dataclasses

from scenarios.hosts import CROSS_WIDTH, PAIRS
from scenarios.model import IDENTICAL, Cell, Domain

LARGE = Domain(pages=65536, guest_width=64)  # 256 MiB
SPARSE = Domain(shape="sparse")
PT_HEAVY = Domain(shape="pt-heavy")
MANY_VCPUS = Domain(vcpus=24, max_vcpu_id=200)


def _with(width: int, base: Domain) -> Domain:
    return dataclasses.replace(base, guest_width=width)


def cells() -> list[Cell]:
    out: list[Cell] = []
    for pair in CROSS_WIDTH:
        hops = PAIRS[pair]
        out.append(Cell("large", hops, "extended", LARGE, IDENTICAL, timeout=1500.0))
        for enc in ("escaped", "native", "v2"):
            out.append(Cell("sparse", hops, enc, _with(64, SPARSE), IDENTICAL))
        for width in (32, 64):
            out.append(Cell("pt-heavy", hops, "extended", _with(width, PT_HEAVY), IDENTICAL))
        out.append(Cell("pt-heavy", hops, "v2", _with(32, PT_HEAVY), IDENTICAL))
        for enc in ("extended", "native", "v2"):
            out.append(Cell("many-vcpus", hops, enc, _with(64, MANY_VCPUS), IDENTICAL))
    # Live-migration-like: several rounds of page batches re-sending dirty pfns.
    for pair, hops in PAIRS.items():
        enc = "escaped" if pair in CROSS_WIDTH else "native"
        out.append(Cell("live", hops, enc, Domain(guest_width=64), IDENTICAL, rounds=3))
    out.append(
        Cell(
            "live", PAIRS["i386-to-amd64"], "extended", Domain(guest_width=32), IDENTICAL, rounds=3
        )
    )
    # v2 live: later rounds are more PAGE_DATA records before the vCPU records.
    for pair in CROSS_WIDTH:
        out.append(Cell("live", PAIRS[pair], "v2", Domain(guest_width=32), IDENTICAL, rounds=3))
    return out
