"""Page types: the legacy stream's type nibble, also kept per pfn in the store."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from itertools import repeat

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
ONE = re.compile(b"\x01")  # the 1s of a 0/1 mask (present entries, marked pfns)

# bytes.translate tables (256 entries; only 0..15 occur), for C-level masks over a
# batch's types that itertools.compress then applies to its pfns.
VALID_NIBBLE = bytes(1 if t in VALID_TYPES else 0 for t in range(256))
HAS_DATA = bytes(1 if t in VALID_TYPES and t not in NO_DATA_TYPES else 0 for t in range(256))
MAPPED = bytes(0 if t == XTAB else 1 for t in range(256))
UNMAPPED = bytes(1 if t == XTAB else 0 for t in range(256))
# a type nibble -> the high half of a byte: the top byte of a stream's pfn word
HIGH_NIBBLE = bytes((t & 0x0F) << 4 for t in range(256))


def is_run(pfns: list[int]) -> bool:
    """pfns are consecutive: a C-level list comparison, no Python loop."""
    n = len(pfns)
    return n > 0 and pfns[-1] - pfns[0] == n - 1 and pfns == list(range(pfns[0], pfns[0] + n))


def pfn_runs(pfns: list[int]) -> Iterator[tuple[int, int]]:
    """(i, j) with pfns[i:j] consecutive, covering pfns in order: one I/O call per run.
    A batch is usually one run."""
    n = len(pfns)
    if is_run(pfns):
        yield 0, n
        return
    if not n:
        return
    # 1 where an entry follows its predecessor by one (C-level maps), then the breaks by
    # a regex scan: a live round's scattered pfns cost no Python step per entry
    follows = bytes(map(operator.eq, repeat(1), map(operator.sub, pfns[1:], pfns[:-1])))
    start = 0
    for m in PLAIN_RUN.finditer(follows):  # runs of 0s: each 0 is a break
        for end in range(m.start() + 1, m.end() + 1):
            yield start, end
            start = end
    yield start, n


def type_name(t: int) -> str:
    return _NAMES.get(t, f"invalid-{t:#x}")


def has_data(t: int) -> bool:
    return t not in NO_DATA_TYPES


def pt_level(t: int) -> int:
    """1..4 for page-table types (pinned or not), 0 otherwise."""
    level = t & ~LPINTAB
    return level if 1 <= level <= 4 and t in VALID_TYPES else 0
