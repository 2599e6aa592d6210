"""Hostile streams: bytes overwritten in flight; refused as malformed, nothing left behind.

Offsets are worked out by hand from the stream layout (docs/stream-format.md,
reference/xen-stream-facts.md), not asked of xsmig. An escaped stream of a 64-bit
guest with xsave state starts: escape (4) + p2m_size (8) + ext-info signature (8)
+ ext-info size (4) = 24; blocks `vcpu` 8+5168, `extv` 8+0, `xcnt` 8+4 end at
5220; the p2m frame list, ceil(2048 / 512) = 4 entries of 8 bytes, ends at 5252,
where the first chunk's int32 batch count sits. Any count above 1024 is an error.
"""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import Cell, Domain, Expect, refused

NAME = "hostile"
DESCRIPTION = "batch count 8192 (> MAX_BATCH 1024) patched in flight: exit 3, nothing left"

FIRST_CHUNK_ESCAPED_GUEST64 = 4 + 8 + 8 + 4 + (8 + 5168) + (8 + 0) + (8 + 4) + 4 * 8
HUGE_BATCH = (8192).to_bytes(4, "little", signed=True)

# (pair, encoding, guest width) -> expectation
EXPECTED: dict[tuple[str, str, int], Expect] = {
    ("i386-to-amd64", "escaped", 64): refused(3),
    ("amd64-to-i386", "escaped", 64): refused(3),
}


def cells() -> list[Cell]:
    return [
        Cell(
            NAME,
            PAIRS[pair],
            enc,
            Domain(guest_width=width),
            expect,
            patch=(FIRST_CHUNK_ESCAPED_GUEST64, HUGE_BATCH),
        )
        for (pair, enc, width), expect in EXPECTED.items()
    ]
