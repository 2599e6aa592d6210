"""Page-table pages: rewrite the frame numbers in their 512 64-bit entries.

PAE and 64-bit guests both use 64-bit entries; the frame sits in bits 12-43
(3-level guests) or 12-51 (4-level guests); entries whose present bit is clear are
left alone. Work is done on a whole page at once through array('Q') so the Python
loop is over entries only for page-table pages, never over bytes.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable

ENTRIES = 512
PRESENT = 0x1
RW = 0x2
USER = 0x4
ACCESSED = 0x20
PAE_L3_CLEARED = USER | RW | ACCESSED
PAE_L3_SLOTS = 4
L4_XEN_SLOTS = range(256, 272)


def frame_mask(pt_levels: int) -> int:
    return 0xFFFFFFFF if pt_levels == 3 else 0xFFFFFFFFFF


class EntryError(ValueError):
    def __init__(self, index: int, frame: int) -> None:
        super().__init__(f"page-table entry {index} points at frame {frame:#x}")
        self.index = index
        self.frame = frame


def _entries(page: memoryview) -> array[int]:
    entries = array("Q")
    entries.frombytes(page)  # array("Q", view) would iterate the view byte by byte
    if sys.byteorder == "big":  # streams and the store are little-endian
        entries.byteswap()
    return entries


def _store(page: memoryview, entries: array[int]) -> None:
    if sys.byteorder == "big":
        entries.byteswap()
    page[:] = entries.tobytes()


def normalise(page: memoryview, level: int, pt_levels: int) -> None:
    """What Xen's saver does to Xen-owned slots, so that both ends agree on them."""
    if pt_levels == 3 and level == 3:
        entries = _entries(page)
        for i in range(PAE_L3_SLOTS, ENTRIES):
            entries[i] = 0
        for i in range(PAE_L3_SLOTS):
            entries[i] &= ~PAE_L3_CLEARED & 0xFFFFFFFFFFFFFFFF
        _store(page, entries)
    elif pt_levels == 4 and level == 4:
        entries = _entries(page)
        for i in L4_XEN_SLOTS:
            entries[i] = 0
        _store(page, entries)


def rewrite(page: memoryview, pt_levels: int, translate: Callable[[int], int | None]) -> None:
    """Replace each present entry's frame f with translate(f); None refuses the entry."""
    mask = frame_mask(pt_levels)
    field = mask << 12
    keep = ~field & 0xFFFFFFFFFFFFFFFF
    entries = _entries(page)
    out = array("Q", entries)
    for i, entry in enumerate(entries):
        if entry & PRESENT:
            frame = (entry >> 12) & mask
            new = translate(frame)
            if new is None:
                raise EntryError(i, frame)
            out[i] = (entry & keep) | (new << 12)
    _store(page, out)
