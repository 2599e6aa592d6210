"""Byte offsets in a stream, worked out from the format tables and the source's ABI.

For the scenarios that patch or cut a stream at a named field (hostile, truncated):
sums of the sizes in xsmig/stream/format.py and xsmig/vcpu.py (docs/stream-format.md
spells the same sums out), never a call into the writer or the reader. What the
source's ABI decides: the word size of a native stream's ulongs (escaped: always 8)
and the byte order of every integer after the header (`scenarios.abi.field_order`).
Unit tests write each stream with xsmig in-process and check that every offset lands
on the field it names.
"""

from __future__ import annotations

from scenarios.abi import abi_of, field_order
from scenarios.model import SMALL_PAGES
from xsmig.stream import format as fmt
from xsmig.vcpu import BY_WIDTH

ESCAPED_WORD = 8  # escaped streams: every ulong 64 bits, whatever the writer


def p2m_frames(guest_width: int, pages: int = SMALL_PAGES) -> int:
    """Pages of the guest's own p2m table: ceil(pages / FPP), FPP = 4096 / guest word."""
    return -(-pages // BY_WIDTH[guest_width].frames_per_page())


def legacy_first_chunk(encoding: str, src: str, guest_width: int, *,
                       extended_state: bool = True, pages: int = SMALL_PAGES) -> int:
    """Offset of the first body chunk's int32 (the first batch count) in a `native` or
    `escaped` stream with extended info from a source of architecture `src`.

    escape (escaped only) + p2m_size + ext-info signature (ulongs) + ext-info size (u32)
    + `vcpu` block (header + vCPU0 context) [+ `extv` (empty) + `xcnt` (u32) with
    extended state] + the p2m frame list (ulongs). Extended streams carry a `wrtr` block
    of variable length (the writer's version and machine), so they have no fixed sum."""
    if encoding not in ("native", "escaped"):
        raise ValueError(f"no fixed first-chunk offset in a {encoding} stream")
    word = ESCAPED_WORD if encoding == "escaped" else abi_of(src).ulong_size
    at = fmt.U32.size if encoding == "escaped" else 0
    at += word + word + fmt.U32.size  # p2m_size, ext-info signature, ext-info size
    at += fmt.EXT_BLOCK.size + BY_WIDTH[guest_width].size  # vcpu block
    if extended_state:
        at += fmt.EXT_BLOCK.size  # extv block, empty
        at += fmt.EXT_BLOCK.size + fmt.U32.size  # xcnt block
    return at + p2m_frames(guest_width, pages) * word


# A v2 save's libxc stream starts after libxl's header and its (empty) LIBXC_CONTEXT
# record; a bare libxc stream (v2-libxc) at 0.
V2_LIBXL_PREFIX = fmt.LIBXL_HDR.size + fmt.V2_RHDR.size


def v2_first_page_data(guest_width: int, pages: int = SMALL_PAGES, *,
                       framing: str = "libxl") -> int:
    """Offset of the first PAGE_DATA record's header in a v2 stream (any source): libxl's
    prefix (libxl framing), image header + domain header + X86_PV_INFO +
    X86_PV_P2M_FRAMES (version 2: no STATIC_DATA_END)."""
    return (
        (V2_LIBXL_PREFIX if framing == "libxl" else 0)
        + fmt.V2_IHDR.size + fmt.V2_DHDR.size
        + fmt.V2_RHDR.size + fmt.V2_PV_INFO.size  # X86_PV_INFO
        + fmt.V2_RHDR.size + fmt.V2_P2M_FRAMES_HDR.size + 8 * p2m_frames(guest_width, pages)
    )


def v2_record_length(record_at: int) -> int:
    """Offset of a v2 record's u32 body_length, given the record's offset."""
    return record_at + 4  # after the u32 type


def int32(value: int, encoding: str, src: str) -> bytes:
    """A signed 32-bit field as the stream holds it: in the stream's field order."""
    order = field_order(encoding, src)
    return value.to_bytes(4, "little" if order == "little" else "big", signed=True)


def uint32(value: int, encoding: str, src: str) -> bytes:
    order = field_order(encoding, src)
    return value.to_bytes(4, "little" if order == "little" else "big")
