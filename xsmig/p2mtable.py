"""The guest's own p2m table: pages (named by the stream's p2m frame list) in which
entry i holds pfn i's machine frame in the guest's word size, all ones for a hole.

Save writes it in canonical form (entry i = i), restore rewrites it with the new
host's frames, and canonical state expresses it as pfns again."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import BinaryIO

from xsmig import pagetypes as pt
from xsmig import words
from xsmig.domain import PAGE_SIZE, DomainMeta

# pfns -> the frames their entries hold, in order (a whole page's worth at once).
FramesOf = Callable[[list[int]], list[int]]


def identity(pfns: list[int]) -> list[int]:
    return pfns


def page_content(meta: DomainMeta, types: bytes | bytearray, index: int,
                 frames_of: FramesOf) -> bytes:
    vl = meta.vcpu_layout
    fpp = vl.frames_per_page()
    invalid = (1 << (8 * vl.word_size)) - 1
    first = index * fpp
    last = min(first + fpp, meta.p2m_size)
    entries = array(vl.word, frames_of(list(range(first, last))))  # host order
    for hole in pt.HOLE_RUN.finditer(types, first, last):  # C-level scan for the holes
        start, end = hole.start() - first, hole.end() - first
        entries[start:end] = array(vl.word, [invalid]) * (end - start)
    # the guest's p2m is x86 memory: little-endian on any host
    return words.dump(entries, vl.word).ljust(PAGE_SIZE, b"\xff")


def write_table(mem: BinaryIO, meta: DomainMeta, types: bytes | bytearray,
                frames_of: FramesOf) -> None:
    for index, frame_pfn in enumerate(meta.p2m_frames):
        mem.seek(frame_pfn * PAGE_SIZE)
        mem.write(page_content(meta, types, index, frames_of))
