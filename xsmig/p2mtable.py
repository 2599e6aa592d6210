"""The guest's own p2m table: pages (named by the stream's p2m frame list) in which
entry i holds pfn i's machine frame in the guest's word size, all ones for a hole.

Save writes it in canonical form (entry i = i), restore rewrites it with the new
host's frames, and canonical state expresses it as pfns again."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from xsmig import lanes
from xsmig import pagetypes as pt
from xsmig.domain import PAGE_SIZE, DomainMeta

# consecutive pfns -> the frames their entries hold, as 64-bit lanes (xsmig/lanes.py)
FramesOf = Callable[[range], int]


def identity(pfns: range) -> int:
    return lanes.iota(pfns.start, len(pfns))


def page_content(meta: DomainMeta, types: bytes | bytearray, index: int,
                 frames_of: FramesOf) -> bytes:
    """Page `index` of the guest's p2m table: its entries' frames come as lanes, their
    bytes are cut to the guest's word by byte slices, holes set by slices: no step per
    entry. The guest's p2m is x86 memory: little-endian on any host."""
    vl = meta.vcpu_layout
    fpp, size = vl.frames_per_page(), vl.word_size
    first = index * fpp
    last = min(first + fpp, meta.p2m_size)
    wide = lanes.to_bytes(frames_of(range(first, last)), last - first)
    if size == 8:
        entries = bytearray(wide)
    else:  # frames fit the word (the map keeps them below 2^31): its low bytes
        entries = bytearray(size * (last - first))
        for b in range(size):
            entries[b::size] = wide[b::8]
    for hole in pt.HOLE_RUN.finditer(types, first, last):  # C-level scan for the holes
        start, end = (hole.start() - first) * size, (hole.end() - first) * size
        entries[start:end] = b"\xff" * (end - start)
    return bytes(entries.ljust(PAGE_SIZE, b"\xff"))


def write_table(mem: BinaryIO, meta: DomainMeta, types: bytes | bytearray,
                frames_of: FramesOf) -> None:
    for index, frame_pfn in enumerate(meta.p2m_frames):
        mem.seek(frame_pfn * PAGE_SIZE)
        mem.write(page_content(meta, types, index, frames_of))
