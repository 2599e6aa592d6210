"""Unusual guests: large, sparse, page-table heavy, many vCPUs with a sparse map, live rounds.

Hosts run Python under QEMU, so the shapes stay on a few pairs, chosen where ABI
handling matters most: the steps of the selected architectures' ring
(scenarios.abi.ring_pairs: every architecture once as source and once as destination,
each step changing ABI where it can; on i386/amd64 the two cross-width pairs).
Live rounds run on every pair: escaped across word sizes, native otherwise; and on the
ring's steps as v2 (32-bit guest), and as extended from a 4-byte-word source to an
8-byte one (a 32-bit guest in a stream whose sinf declares 4-byte words).
Expectations come from the pair's ABIs (scenarios.abi.expect).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

from scenarios.abi import abi_of, expect, ring_pairs
from scenarios.arches import ARCHES
from scenarios.hosts import PAIRS
from scenarios.model import Cell, Domain

LARGE = Domain(pages=65536, guest_width=64)  # 256 MiB
SPARSE = Domain(shape="sparse")
PT_HEAVY = Domain(shape="pt-heavy")
MANY_VCPUS = Domain(vcpus=24, max_vcpu_id=200)


def _with(width: int, base: Domain) -> Domain:
    return dataclasses.replace(base, guest_width=width)


def _cell(scenario: str, src: str, dst: str, enc: str, domain: Domain, *,
          rounds: int | None = None, timeout: float = 300.0) -> Cell:
    outcome, retry = expect(src, dst, enc)
    return Cell(scenario, PAIRS[f"{src}-to-{dst}"], enc, domain, outcome, retry=retry,
                rounds=rounds, timeout=timeout)


def live_encoding(src: str, dst: str) -> str:
    """Escaped across word sizes (a native stream would need the mail's rule), else native."""
    return "escaped" if abi_of(src).ulong_size != abi_of(dst).ulong_size else "native"


def cells(arches: Iterable[str] = tuple(ARCHES)) -> list[Cell]:
    chosen = [a for a in ARCHES if a in set(arches)]
    steps = ring_pairs(chosen)
    out: list[Cell] = []
    for src, dst in steps:
        out.append(_cell("large", src, dst, "extended", LARGE, timeout=1500.0))
        for enc in ("escaped", "native", "v2"):
            out.append(_cell("sparse", src, dst, enc, _with(64, SPARSE)))
        for width in (32, 64):
            out.append(_cell("pt-heavy", src, dst, "extended", _with(width, PT_HEAVY)))
        out.append(_cell("pt-heavy", src, dst, "v2", _with(32, PT_HEAVY)))
        for enc in ("extended", "native", "v2"):
            out.append(_cell("many-vcpus", src, dst, enc, _with(64, MANY_VCPUS)))
    # Live-migration-like: several rounds of page batches re-sending dirty pfns.
    for src, dst in itertools.product(chosen, repeat=2):
        out.append(_cell("live", src, dst, live_encoding(src, dst), Domain(guest_width=64),
                         rounds=3))
    for src, dst in steps:
        if abi_of(src).ulong_size < abi_of(dst).ulong_size:
            out.append(_cell("live", src, dst, "extended", Domain(guest_width=32), rounds=3))
    # v2 live: later rounds are more PAGE_DATA records before the vCPU records.
    for src, dst in steps:
        out.append(_cell("live", src, dst, "v2", Domain(guest_width=32), rounds=3))
    return out
