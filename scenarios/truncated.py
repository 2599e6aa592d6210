"""Streams cut short mid-migration: refused as malformed, nothing left behind.

The cut happens in the live pipe (the source's save is closed too), so these
cells also prove the source domain survives an aborted migration. Any cut inside a
stream is malformed (exit 3) whatever the pair; what a pair adds is the reader's path
(its word size and byte order against the source's layout).

Each cut is keyed by how the pair's ABIs relate (scenarios.abi.relation: widen,
narrow, same ABI of either width, same width with another alignment or byte order),
not by pair. It runs on the representatives of that relation (scenarios.abi:
per destination architecture, one source per stream layout of the cut's encoding).
On i386/amd64 every cut has one pair, the seven cells CI has always run. The cut
offsets are the region they name for every source ABI (round numbers well inside a
region, or sums from scenarios/offsets.py); a unit test checks each against a stream
xsmig writes in-process with the cell's own guest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scenarios import offsets
from scenarios.abi import abi_of, relation, representatives
from scenarios.arches import ARCHES
from scenarios.hosts import PAIRS
from scenarios.model import Cell, Domain, Expect, refused
from xsmig.stream import format as fmt

NAME = "truncated"
DESCRIPTION = "stream cut after N bytes: exit 3, no domain on the destination, source intact"

MALFORMED = refused(3)


@dataclass(frozen=True)
class Cut:
    relation: str  # scenarios.abi.relation of the pairs it runs on
    encoding: str
    guest_width: int
    region: str  # where the cut lands, in words: tests/unit checks it
    at: Callable[[str], int]  # source architecture -> offset of the cut
    expect: Expect = MALFORMED


def _fixed(offset: int) -> Callable[[str], int]:
    return lambda src: offset


def _mid_first_batch_count(src: str) -> int:
    """Two bytes into the native stream's first batch count: the count itself cut."""
    return offsets.legacy_first_chunk("native", src, abi_of(src).ulong_size * 8) + 2


CUTS: tuple[Cut, ...] = (
    # two bytes into p2m_size, after the escape
    Cut("widen", "escaped", 64, "header", _fixed(fmt.U32.size + 2)),
    Cut("narrow", "extended", 64, "first batch", _fixed(70_000)),
    Cut("same-abi-32", "native", 32, "batches", _fixed(4_000_000)),  # late in the batches
    Cut("same-abi-64", "native", 32, "first batch", _fixed(6_000)),
    # inside the v2 domain header (bytes 24-39 of the libxc stream, after libxl's 24)
    Cut("widen", "v2", 32, "v2 domain header",
        _fixed(offsets.V2_LIBXL_PREFIX + fmt.V2_IHDR.size + 6)),
    Cut("narrow", "v2", 64, "PAGE_DATA", _fixed(3_000_000)),
    Cut("same-abi-64", "v2", 64, "vCPU records", _fixed(8_407_000)),  # they start 8_405_2xx
    # equal words, other alignment or byte order: the first count, in the source's order
    Cut("same-width", "native", 0, "first batch count", _mid_first_batch_count),
)


def guest_width(cut: Cut, src: str) -> int:
    """The cut's guest width; 0 means the source toolstack's own."""
    return cut.guest_width or abi_of(src).ulong_size * 8


def cells(arches: Iterable[str] = tuple(ARCHES)) -> list[Cell]:
    chosen = list(arches)
    out = []
    for cut in CUTS:
        def related(src: str, dst: str, want: str = cut.relation) -> bool:
            return relation(src, dst) == want

        for src, dst in representatives(chosen, related, cut.encoding):
            out.append(Cell(NAME, PAIRS[f"{src}-to-{dst}"], cut.encoding,
                            Domain(guest_width=guest_width(cut, src)), cut.expect,
                            truncate_at=cut.at(src)))
    return out
