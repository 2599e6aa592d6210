"""Page types: the legacy stream's type nibble, also kept per pfn in the store."""

from __future__ import annotations

import re

NOTAB = 0x0  # plain page
L1TAB, L2TAB, L3TAB, L4TAB = 0x1, 0x2, 0x3, 0x4
LPINTAB = 0x8  # pinned bit, on top of L1..L4
BROKEN = 0xD
XALLOC = 0xE  # allocate only, no data
XTAB = 0xF  # invalid / not mapped: a hole in the store

TYPE_SHIFT = 28
PFN_MASK = 0x0FFFFFFF
BARE_XTAB_ENTRY = XTAB << TYPE_SHIFT

_NAMES = {
    NOTAB: "plain",
    L1TAB: "l1",
    L2TAB: "l2",
    L3TAB: "l3",
    L4TAB: "l4",
    L1TAB | LPINTAB: "l1-pinned",
    L2TAB | LPINTAB: "l2-pinned",
    L3TAB | LPINTAB: "l3-pinned",
    L4TAB | LPINTAB: "l4-pinned",
    BROKEN: "broken",
    XALLOC: "xalloc",
    XTAB: "unmapped",
}
VALID_TYPES = frozenset(_NAMES)
NO_DATA_TYPES = frozenset({BROKEN, XALLOC, XTAB})

# Byte classes for finding runs of pages with C-level regex scans over the type array.
DATA_RUN = re.compile(b"[\x00-\x04\x09-\x0c]+")
PLAIN_RUN = re.compile(b"\x00+")
PAGETABLE = re.compile(b"[\x01-\x04\x09-\x0c]")
HOLE_RUN = re.compile(b"\x0f+")


def type_name(t: int) -> str:
    return _NAMES.get(t, f"invalid-{t:#x}")


def has_data(t: int) -> bool:
    return t not in NO_DATA_TYPES


def pt_level(t: int) -> int:
    """1..4 for page-table types (pinned or not), 0 otherwise."""
    level = t & ~LPINTAB
    return level if 1 <= level <= 4 and t in VALID_TYPES else 0
