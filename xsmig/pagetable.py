"""Page-table pages: rewrite the frame numbers in their 512 64-bit entries.

PAE and 64-bit guests both use 64-bit entries; the frame sits in bits 12-43
(3-level guests) or 12-51 (4-level guests); entries whose present bit is clear are
left alone. Work is done on a whole page at once: present entries are picked by a
C-level scan of their low bytes, and their frames go to the translator as one list,
so under QEMU a page costs a few comprehensions, not a Python call per entry.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from itertools import compress

from xsmig import lanes, words
from xsmig import pagetypes as pt

ENTRIES = 512
PRESENT = 0x1
RW = 0x2
USER = 0x4
ACCESSED = 0x20
PAE_L3_CLEARED = USER | RW | ACCESSED
PAE_L3_SLOTS = 4
L4_XEN_SLOTS = range(256, 272)
U64 = 0xFFFFFFFFFFFFFFFF
# Entries are little-endian in streams and stores: an entry's present bit is bit 0 of
# its first byte, so page[0::8].translate(PRESENT_BYTE) is a 0/1 mask of the present
# entries. Its indices are picked in C: by a regex scan for a sparse table (it touches
# only the present ones), by compress() over all 512 for a dense one.
PRESENT_BYTE = bytes(b & PRESENT for b in range(256))
SPARSE = 48  # present entries below which the scan is cheaper (measured natively)

# Frames of a page's present entries -> their new frames, in order; -1 refuses a frame.
Translate = Callable[[list[int]], list[int]]
# The same for a dense table (all 512 entries present): its frames as the lanes of one
# int (xsmig/lanes.py) -> the new frames as lanes, or None to take the per-entry path
# (which then names the refused entry).
TranslateLanes = Callable[[int], "int | None"]


def frame_mask(pt_levels: int) -> int:
    return 0xFFFFFFFF if pt_levels == 3 else 0xFFFFFFFFFF


# per pt_levels: (every lane's frame field, every lane's other bits), for dense tables
_LANE_MASKS = {levels: (frame_mask(levels) * lanes.ones(),
                        (~(frame_mask(levels) << 12) & U64) * lanes.ones()) for levels in (3, 4)}


class EntryError(ValueError):
    def __init__(self, index: int, frame: int) -> None:
        super().__init__(f"page-table entry {index} points at frame {frame:#x}")
        self.index = index
        self.frame = frame


def _entries(page: memoryview) -> array[int]:
    return words.load("Q", page)  # streams and the store are little-endian


def _store(page: memoryview, entries: array[int]) -> None:
    page[:] = words.dump(entries, "Q")


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


def present_mask(page: memoryview | bytes | bytearray) -> bytes:
    """0/1 per entry: its present bit. A contiguous copy, then a stride-8 slice of the
    bytes: under QEMU copying a strided memoryview (page[0::8]) costs ten times more."""
    return bytes(page)[0::8].translate(PRESENT_BYTE)


def present_indices(page: memoryview | bytes | bytearray, mask: bytes | None = None
                    ) -> list[int]:
    """Indices of the present entries, in order (`mask`: present_mask(page), if known)."""
    if mask is None:
        mask = present_mask(page)
    if mask.count(1) < SPARSE:
        return [m.start() for m in pt.ONE.finditer(mask)]
    return list(compress(range(ENTRIES), mask))


def _native_view(page: memoryview | bytes | bytearray) -> memoryview | None:
    """The page as its own entry array, where the host's byte order allows it."""
    return memoryview(page).cast("Q") if sys.byteorder == "little" else None


def present_entries(page: memoryview | bytes | bytearray, mask: bytes | None = None
                    ) -> tuple[list[int], list[int]]:
    """(indices, values) of the present entries (`mask`: present_mask(page), if known)."""
    index = present_indices(page, mask)
    entries = _native_view(page) or _entries(memoryview(page))
    return index, (entries.tolist() if len(index) == ENTRIES else [entries[i] for i in index])


def rewrite(page: memoryview, pt_levels: int, translate: Translate,
            translate_lanes: TranslateLanes | None = None) -> None:
    """Replace each present entry's frame f with the translated frame; -1 refuses it
    (EntryError names the first refused entry). The fixed cost per page matters:
    pt-heavy guests have thousands of tables with a handful of entries each.
    A dense table (most L1s) goes to `translate_lanes` when given: its whole rewrite is
    then a few big-int operations, no Python step per entry."""
    present = present_mask(page)
    if (translate_lanes is not None and 0 not in present
            and _rewrite_dense(page, pt_levels, translate_lanes)):
        return
    index = present_indices(page, present)
    if not index:
        return
    view = _native_view(page)
    entries: memoryview | array[int] = view if view is not None else _entries(page)
    old = entries.tolist() if len(index) == ENTRIES else [entries[i] for i in index]
    mask = frame_mask(pt_levels)
    frames = [(e >> 12) & mask for e in old]
    new = translate(frames)
    if -1 in new:
        k = new.index(-1)
        raise EntryError(index[k], frames[k])
    keep = ~(mask << 12) & U64
    if len(index) == ENTRIES:  # a dense table (most L1s): one comprehension, one store
        dense = array("Q", [(e & keep) | (f << 12) for e, f in zip(old, new, strict=True)])
        if view is not None:
            view[:] = memoryview(dense)
        else:
            _store(page, dense)
        return
    for i, e, f in zip(index, old, new, strict=True):
        entries[i] = (e & keep) | (f << 12)
    if view is None:
        _store(page, entries)  # type: ignore[arg-type]


def frame_lanes(page: memoryview | bytes | bytearray, pt_levels: int) -> int:
    """The frames of a page's 512 entries, as lanes (what TranslateLanes takes)."""
    return (lanes.from_bytes(page) >> 12) & _LANE_MASKS[pt_levels][0]


def _rewrite_dense(page: memoryview, pt_levels: int, translate_lanes: TranslateLanes) -> bool:
    """rewrite() of a table whose entries are all present, on all 512 lanes at once;
    False (page untouched) when the translator refuses a frame."""
    frames_mask, keep = _LANE_MASKS[pt_levels]
    entries = lanes.from_bytes(page)
    new = translate_lanes((entries >> 12) & frames_mask)
    if new is None:
        return False
    # new frames are below 2^40 (a pfn below p2m_size, or an mfn below 2^31): they fit
    page[:] = lanes.to_bytes((entries & keep) | (new << 12))
    return True
