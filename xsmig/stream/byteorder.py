"""Byte order of native and escaped streams, which do not declare it.

The rules are rows B1-B5 of docs/stream-format.md section 9; `detect` applies them
before its width rows. Width is always decidable in big-endian (a 64-bit saver
writes the zero top half of p2m_size first), so only the order itself can be
ambiguous, and then it is refused, naming --source-byte-order."""

from __future__ import annotations

import struct

from xsmig.errors import StreamRefused
from xsmig.layout import BIG, BYTE_ORDERS, LITTLE
from xsmig.stream.format import ESCAPE, MAX_EXT_INFO, MAX_P2M_SIZE, rule


def _block_id(b: bytes) -> bool:
    return len(b) == 4 and all(0x20 <= c < 0x7F for c in b)



def _plausible(head: bytes, order: str, size: int) -> bool:
    """Could `head` start a native stream of this word size and byte order?"""
    code = "<" if order == LITTLE else ">"
    words = struct.unpack_from(f"{code}{len(head) // size}{'I' if size == 4 else 'Q'}", head)
    p2m_size = words[0]
    if not 0 < p2m_size <= MAX_P2M_SIZE:
        return False
    if len(words) > 1 and words[1] == (1 << 8 * size) - 1:  # ext-info signature
        at = 2 * size
        if len(head) >= at + 4 and struct.unpack_from(f"{code}I", head, at)[0] > MAX_EXT_INFO:
            return False
        if len(head) >= at + 12:  # the first block: id and size (the vcpu block)
            (block,) = struct.unpack_from(f"{code}I", head, at + 8)
            return bool(_block_id(head[at + 4:at + 8]) and block <= MAX_EXT_INFO)
        return True
    # Without ext-info the guest has the toolstack's width: ceil(p2m_size / entries per
    # page) frame-list words follow, then the body's first batch count or chunk id.
    frames = -(-p2m_size // (4096 // size))
    if not all(frame < p2m_size for frame in words[1:1 + frames]):
        return False
    at = size * (1 + frames)
    if len(head) >= at + 4:
        (count,) = struct.unpack_from(f"{code}i", head, at)
        return bool(-20 <= count <= 1024)
    return True


def native_order(head: bytes, given: str | None) -> str:
    """B1: the byte order in which the first bytes make sense as a native stream.

    When only one order does, it is the stream's; when neither does, the little-endian
    rules below report what is wrong; when both do, only --source-byte-order decides."""
    if given is not None:
        return given
    fits = [order for order in BYTE_ORDERS
            if _plausible(head, order, 4) or _plausible(head, order, 8)]
    if fits == [BIG]:
        return BIG
    if len(fits) == 2:
        raise StreamRefused("cannot tell the byte order of this native stream (its first "
                            "bytes make sense both little- and big-endian); give "
                            "--source-byte-order little or big", 0)
    return LITTLE


def big_width(head: bytes, source_width: int | None) -> tuple[int, str, bool]:
    """(width, rule, ext-info present) of a big-endian native stream: always decidable,
    since a 64-bit saver writes the zero top half of p2m_size first."""
    w0, w1 = struct.unpack_from(">II", head)
    if w0 == 0:
        found = (64, rule("B4"), head[8:16] == b"\xff" * 8)
    elif w1 == ESCAPE:
        found = (32, rule("B3"), True)
    else:
        found = (32, rule("B5"), False)
    if source_width is not None and source_width != found[0]:
        raise StreamRefused(f"the stream is {found[0]}-bit ({found[1]}) but "
                            f"--source-width {source_width} was given", 0)
    return found
