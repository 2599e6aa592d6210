"""Hostile streams: bytes overwritten in flight; refused as malformed, nothing left behind.

Two patches, each a field whose offset is worked out from the format tables and the
source's ABI (scenarios/offsets.py; docs/stream-format.md spells the same sums out):

- escaped, 64-bit guest with xsave state: escape (4) + p2m_size (8) + ext-info
  signature (8) + ext-info size (4) = 24; blocks `vcpu` 8+5168, `extv` 8+0, `xcnt` 8+4
  end at 5220; the p2m frame list, ceil(2048 / 512) = 4 entries of 8 bytes, ends at
  5252, where the first chunk's int32 batch count sits: patched to 8192 in the stream's
  byte order (the source's: a big-endian s390x saver writes it big-endian). Any count
  above 1024 is an error.
- v2 (libxl framing): libxl header (16) + LIBXC_CONTEXT (8) + image header (24) +
  domain header (16) + X86_PV_INFO (8+8) + X86_PV_P2M_FRAMES (8+8+4*8) = 128: the first
  PAGE_DATA record; its body_length at 132 is patched to 0xFFFFFFF0 (little-endian on
  every source: v2's byte order is declared, and xsmig writes little), which no
  PAGE_DATA can have: the length must equal 8 + 8 * count + 4096 * pages-with-data,
  checked before a page is read.

Pairs (scenarios.abi.representatives): for each destination architecture, one source
of another ABI per stream layout the encoding has (escaped: per byte order; v2: one),
so every reader meets every layout of the patched field once. On i386/amd64 that is
i386-to-amd64 and amd64-to-i386.
"""

from __future__ import annotations

from collections.abc import Iterable

from scenarios import offsets
from scenarios.abi import abis_differ, representatives
from scenarios.arches import ARCHES
from scenarios.hosts import PAIRS
from scenarios.model import Cell, Domain, refused

NAME = "hostile"
DESCRIPTION = "a batch count or record length patched in flight: exit 3, nothing left"

MALFORMED = refused(3)
GUEST_WIDTH = 64
HUGE_BATCH = 8192  # > fmt.MAX_BATCH
HUGE_LENGTH = 0xFFFFFFF0  # no PAGE_DATA body is that long


def patch(encoding: str, src: str) -> tuple[int, bytes]:
    """(offset, bytes) of the patch for a stream saved on `src`."""
    if encoding == "escaped":
        at = offsets.legacy_first_chunk("escaped", src, GUEST_WIDTH)
        return at, offsets.int32(HUGE_BATCH, encoding, src)
    if encoding == "v2":
        at = offsets.v2_record_length(offsets.v2_first_page_data(GUEST_WIDTH))
        return at, offsets.uint32(HUGE_LENGTH, encoding, src)
    raise ValueError(f"no hostile patch for {encoding}")


ENCODINGS = ("escaped", "v2")


def cells(arches: Iterable[str] = tuple(ARCHES)) -> list[Cell]:
    chosen = list(arches)
    return [
        Cell(NAME, PAIRS[f"{src}-to-{dst}"], enc, Domain(guest_width=GUEST_WIDTH), MALFORMED,
             patch=patch(enc, src))
        for enc in ENCODINGS
        for src, dst in representatives(chosen, abis_differ, enc)
    ]
