"""Hostile streams: bytes overwritten in flight; refused as malformed, nothing left behind.

Offsets are worked out from the format description (xsmig/stream/format.py, the one
table the writer and reader also use; docs/stream-format.md spells the same sums out):

- escaped, 64-bit guest with xsave state: escape (4) + p2m_size (8) + ext-info
  signature (8) + ext-info size (4) = 24; blocks `vcpu` 8+5168, `extv` 8+0, `xcnt` 8+4
  end at 5220; the p2m frame list, ceil(2048 / 512) = 4 entries of 8 bytes, ends at
  5252, where the first chunk's int32 batch count sits. Any count above 1024 is an error.
- v2: image header (24) + domain header (16) + X86_PV_INFO (8+8) + STATIC_DATA_END (8)
  + X86_PV_P2M_FRAMES (8+8+4*8) = 112: the first PAGE_DATA record; its body_length at
  116 is patched to 0xFFFFFFF0, which no PAGE_DATA can have: the length must equal
  8 + 8 * count + 4096 * pages-with-data, checked before a page is read.
"""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import SMALL_PAGES, Cell, Domain, Expect, refused
from xsmig.stream import format as fmt
from xsmig.vcpu import VCPU64

NAME = "hostile"
DESCRIPTION = "a batch count or record length patched in flight: exit 3, nothing left"

FRAMES_GUEST64 = -(-SMALL_PAGES // VCPU64.frames_per_page())
ULONG = 8  # escaped streams: every ulong is 64 bits
FIRST_CHUNK_ESCAPED_GUEST64 = (
    fmt.U32.size  # escape
    + ULONG + ULONG + fmt.U32.size  # p2m_size, ext-info signature, ext-info size
    + fmt.EXT_BLOCK.size + VCPU64.size  # vcpu block
    + fmt.EXT_BLOCK.size  # extv block, empty
    + fmt.EXT_BLOCK.size + fmt.U32.size  # xcnt block
    + FRAMES_GUEST64 * ULONG  # p2m frame list
)
FIRST_PAGE_DATA_V2_GUEST64 = (
    fmt.V2_IHDR.size + fmt.V2_DHDR.size
    + fmt.V2_RHDR.size + fmt.V2_PV_INFO.size  # X86_PV_INFO
    + fmt.V2_RHDR.size  # STATIC_DATA_END
    + fmt.V2_RHDR.size + fmt.V2_P2M_FRAMES_HDR.size + 8 * FRAMES_GUEST64  # X86_PV_P2M_FRAMES
)
HUGE_BATCH = (8192).to_bytes(4, "little", signed=True)
HUGE_LENGTH = (0xFFFFFFF0).to_bytes(4, "little")

# (pair, encoding, guest width) -> (expectation, patch)
EXPECTED: dict[tuple[str, str, int], tuple[Expect, tuple[int, bytes]]] = {
    ("i386-to-amd64", "escaped", 64): (refused(3), (FIRST_CHUNK_ESCAPED_GUEST64, HUGE_BATCH)),
    ("amd64-to-i386", "escaped", 64): (refused(3), (FIRST_CHUNK_ESCAPED_GUEST64, HUGE_BATCH)),
    ("i386-to-amd64", "v2", 64): (refused(3), (FIRST_PAGE_DATA_V2_GUEST64 + 4, HUGE_LENGTH)),
    ("amd64-to-i386", "v2", 64): (refused(3), (FIRST_PAGE_DATA_V2_GUEST64 + 4, HUGE_LENGTH)),
}


def cells() -> list[Cell]:
    return [
        Cell(NAME, PAIRS[pair], enc, Domain(guest_width=width), expect, patch=patch)
        for (pair, enc, width), (expect, patch) in EXPECTED.items()
    ]
