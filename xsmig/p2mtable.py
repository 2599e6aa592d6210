"""The guest's own p2m table: pages (named by the stream's p2m frame list) in which
entry i holds pfn i's machine frame in the guest's word size, all ones for a hole.

Save writes it in canonical form (entry i = i), restore rewrites it with the new
host's frames, and canonical state expresses it as pfns again."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from typing import BinaryIO

from xsmig import pagetypes as pt
from xsmig.domain import PAGE_SIZE, DomainMeta


def identity(pfn: int) -> int:
    return pfn


def page_content(meta: DomainMeta, types: bytes | bytearray, index: int,
                 frame_of: Callable[[int], int]) -> bytes:
    vl = meta.vcpu_layout
    fpp = vl.frames_per_page()
    invalid = (1 << (8 * vl.word_size)) - 1
    first = index * fpp
    last = min(first + fpp, meta.p2m_size)
    entries = array(vl.word, [frame_of(p) if types[p] != pt.XTAB else invalid
                              for p in range(first, last)])
    if sys.byteorder == "big":  # the guest's p2m is x86 memory: little-endian on any host
        entries.byteswap()
    return entries.tobytes().ljust(PAGE_SIZE, b"\xff")


def write_table(mem: BinaryIO, meta: DomainMeta, types: bytes | bytearray,
                frame_of: Callable[[int], int]) -> None:
    for index, frame_pfn in enumerate(meta.p2m_frames):
        mem.seek(frame_pfn * PAGE_SIZE)
        mem.write(page_content(meta, types, index, frame_of))
