"""Restore: a stream sink that builds a new domain aside, with this host's frames, and
publishes it only once the whole stream has been read and checked."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from itertools import repeat
from operator import setitem  # a C function: several times cheaper than a method-wrapper
from typing import BinaryIO

from xsmig import lanes, p2mtable, pagetable
from xsmig import pagetypes as pt
from xsmig.domain import (
    PAGE_SIZE,
    SHARED_INFO_FLL_OFFSET,
    DomainDir,
    DomainMeta,
    PhysmapEntry,
    TscInfo,
    VcpuState,
)
from xsmig.errors import StateError, StreamError, StreamRefused
from xsmig.frames import FrameMap
from xsmig.layout import Layout
from xsmig.store import Store
from xsmig.stream.format import (
    EV_TOOLSTACK,
    EV_TSC_INFO,
    EV_VCPU_INFO,
    EV_VCPU_MSRS,
    MAX_P2M_SIZE,
    XSAVE_RECORD_HDR,
)
from xsmig.stream.reader import (
    Batch,
    StreamHeader,
    StreamParser,
    record_types,
    rewrite_tables,
)
from xsmig.validate import (
    Invalid,
    check_frame_list,
    check_page_tables,
    check_vcpu_pfn,
    hole_message,
    validate,
)
from xsmig.vcpu import FrameField, FrameFieldError, rewrite_frames

ALL_NAMED = b"\x01" * lanes.PAGE_LANES


class RestoreSink:
    """Builds the domain aside. Nothing per vCPU or per page is held in memory: pages
    and vCPU state go to disk as they arrive; what is kept is the type array (one byte
    per pfn, capped by --max-pages) and, per page-table page, the offset it came from
    (so the validator's verdict can name the record to blame)."""

    def __init__(self, domain: DomainDir, name: str, host_id: int) -> None:
        self.domain = domain
        self.name = name
        self.host_id = host_id
        self.memory: BinaryIO | None = None
        self.header: StreamHeader | None = None
        self.types = bytearray()
        # 1 for every pfn some page-table entry of the stream named (validate's page-table
        # pass runs at the end only if one of them ended up a hole: see finish)
        self.referenced = bytearray()
        self.frames: FrameMap | None = None
        self.vcpu_ids = [0]
        self.tsc = TscInfo()
        self.toolstack: tuple[int, list[PhysmapEntry]] | None = None
        self.shared_info = b""
        self.pt_offsets: dict[int, int] = {}  # page-table pfn -> offset of its data
        self.vcpu_offsets: dict[int, int] = {}
        self.tail_offset = 0

    def close(self) -> None:
        if self.memory:
            self.memory.close()

    def on_header(self, header: StreamHeader) -> None:
        self.header = header
        self.domain.create_empty(header.p2m_size)
        self.memory = self.domain.open_memory("r+b")
        self.types = bytearray([pt.XTAB]) * header.p2m_size
        self.referenced = bytearray(header.p2m_size)
        self.frames = FrameMap(self.host_id, zlib.crc32(self.name.encode()), header.p2m_size)

    def on_batch(self, batch: Batch) -> None:
        assert self.header and self.memory and self.frames
        levels = self.header.guest.pt_levels
        data_pfns = record_types(batch, self.types)
        # the domain's pages are known only at the end: validate() in finish()
        for pfn, _page, offset in rewrite_tables(batch, self.types, data_pfns, levels,
                                                 self._to_mfns, self._to_mfn_lanes):
            self.pt_offsets[pfn] = offset
        for start, end in pt.pfn_runs(data_pfns):
            self.memory.seek(data_pfns[start] * PAGE_SIZE)
            self.memory.write(batch.data[start * PAGE_SIZE:end * PAGE_SIZE])

    def _to_mfns(self, pfns: list[int]) -> list[int]:
        """The rewrite's translation, marking the pfns named (a C-level map, no loop)."""
        assert self.frames
        mfns = self.frames.mfns(pfns)
        if -1 not in mfns:  # -1: beyond p2m_size, which the rewrite refuses
            deque(map(setitem, repeat(self.referenced), pfns, repeat(1)), maxlen=0)
        return mfns

    def _to_mfn_lanes(self, pfns: int) -> int | None:
        """_to_mfns of a dense table's pfns as lanes (pagetable.rewrite)."""
        assert self.frames
        mfns = self.frames.mfn_lanes(pfns)
        if mfns is not None:
            self._mark_named(pfns, lanes.PAGE_LANES)
        return mfns

    def _mark_named(self, pfns: int, n: int) -> None:
        """referenced[p] = 1 for the n pfns in lanes: a run of consecutive pfns by one
        slice (a table often maps a run of pages), else each half so, or by a C-level
        map (a table mapping scattered pages: splitting further costs more than it
        saves, measured under QEMU)."""
        first = pfns & pagetable.U64
        if pfns == lanes.iota(first, n):
            self.referenced[first:first + n] = ALL_NAMED[:n]
        elif n < lanes.PAGE_LANES:
            deque(map(setitem, repeat(self.referenced), lanes.to_array(pfns, n), repeat(1)),
                  maxlen=0)
        else:
            half = n // 2
            self._mark_named(pfns & ((1 << 64 * half) - 1), half)
            self._mark_named(pfns >> 64 * half, n - half)

    def _may_map_holes(self) -> bool:
        """Whether any pfn a page-table entry named is a hole now: whole-array int ops."""
        return bool(int.from_bytes(self.referenced, "little")
                    & int.from_bytes(self.types.translate(pt.UNMAPPED), "little"))

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        # Dispatch on the event's name: the same in every encoding (format.EV_*).
        if name == EV_VCPU_INFO:
            assert isinstance(value, list)
            self.vcpu_ids = value
        elif name == EV_TSC_INFO:
            assert isinstance(value, TscInfo)
            self.tsc = value
        elif name == EV_TOOLSTACK:
            assert isinstance(value, tuple)
            self.toolstack = value
        elif name == EV_VCPU_MSRS:
            raise StreamRefused("the stream carries vCPU MSRs, which this simulated host does "
                                "not keep", offset)

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        """Called once per chunk of the tail's unmapped list."""
        self.tail_offset = self.tail_offset or offset
        deque(map(setitem, repeat(self.types), pfns, repeat(pt.XTAB)), maxlen=0)

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        assert self.header
        vl = self.header.guest
        context = bytearray(ctx)
        try:
            rewrite_frames(vl, context, vcpu_id, self._vcpu_frame(vcpu_id))
        except FrameFieldError as e:
            raise StreamError(str(e), offset) from None
        self.vcpu_offsets[vcpu_id] = offset
        # Straight to disk: 4096 vCPUs with 1 MiB xsave areas each must not sit in memory.
        self.domain.write_vcpu_state(vcpu_id, VcpuState(bytes(context), ext, xsave),
                                     extended=self.header.extended_contexts,
                                     xsave=bool(self.header.xsave_limit))

    def _vcpu_frame(self, vcpu_id: int) -> Callable[[int, FrameField], int]:
        assert self.header and self.frames
        p2m, vl, frames = self.header.p2m_size, self.header.guest, self.frames

        def translate(pfn: int, field: FrameField) -> int:
            if pfn >= p2m:
                raise FrameFieldError(f"vCPU {vcpu_id} {field.name} names pfn {pfn:#x}, "
                                      f"beyond p2m_size {p2m:#x}")
            return frames.mfn(check_vcpu_pfn(vl, self.types, vcpu_id, pfn, field, pfn))
        return translate

    def on_shared_info(self, offset: int, data: bytes) -> None:
        self.shared_info = data

    def finish(self) -> DomainMeta:
        header, memory, frames = self.header, self.memory, self.frames
        assert header and memory and frames
        try:
            check_frame_list(header.frame_list, header.p2m_size, header.guest, self.types)
        except Invalid as e:
            raise self._blame(e) from None
        version, physmap = self.toolstack if self.toolstack else (None, [])
        meta = DomainMeta(
            name=self.name, guest_width=header.guest.guest_width, p2m_size=header.p2m_size,
            host_id=self.host_id, frame_salt=frames.salt, vcpu_ids=self.vcpu_ids,
            p2m_frames=header.frame_list, extended_contexts=header.extended_contexts,
            xsave_size=max(header.xsave_limit - XSAVE_RECORD_HDR, 0), tsc=self.tsc,
            toolstack_version=version, physmap=physmap)
        p2mtable.write_table(memory, meta, self.types, frames.mfn_range)
        memory.flush()
        shared = bytearray(self.shared_info)
        offset = SHARED_INFO_FLL_OFFSET[meta.guest_width]
        shared[offset:offset + header.guest.word_size] = bytes(header.guest.word_size)
        self.domain.write_shared_info(bytes(shared))
        self.domain.write_types(self.types)
        self.domain.write_meta(meta)
        try:
            # The very check digest, diff and save will make. Its page-table pass would
            # translate every entry back, a second time: each entry was translated from a
            # pfn below p2m_size as it was written, so what it could still find is an
            # entry naming a hole, and it runs only if a pfn some entry named (this copy
            # or an older one of a page) is a hole. Then its verdict on the final pages
            # decides, with the same messages.
            validate(self.domain, page_tables=False)
            if self._may_map_holes():
                check_page_tables(self.domain, meta, self.types)
        except Invalid as e:
            raise self._blame(e) from None
        return meta

    def _blame(self, e: Invalid) -> StreamError:
        """The stream offset of the record that made the domain invalid."""
        assert self.header
        at: int | None = None
        assert self.frames
        if e.part == "page_table" and e.pfn in self.pt_offsets:
            at = self.pt_offsets[e.pfn] + 8 * (e.entry or 0)
            target = None if e.frame is None else self.frames.pfn(e.frame)
            if target is not None and e.entry is not None:  # the stream's pfn, not this
                # host's frame: the words verify uses for the same stream
                return StreamError("restored domain would be invalid: "
                                   + hole_message(e.pfn, e.entry, f"pfn {target:#x}"), at)
        elif e.part == "vcpu" and e.vcpu in self.vcpu_offsets:
            at = self.vcpu_offsets[e.vcpu]
        elif e.part == "frame_list":
            at = self.header.frame_list_offset + self.header.layout.ulong_size * (e.entry or 0)
        return StreamError(f"restored domain would be invalid: {e}",
                           self.tail_offset if at is None else at)


def restore(store: Store, source: BinaryIO, *, name: str | None, host_id: int,
            profile: str = "current", source_width: int | None = None,
            own: Layout | None = None, source_byte_order: str | None = None,
            max_pages: int = MAX_P2M_SIZE, prefix: str = "restored",
            announce: Callable[[str], None] | None = None) -> tuple[DomainMeta, StreamHeader]:
    """Restore a stream as `name` (or the first free PREFIX-N, reserved atomically).

    `announce(name)` runs after every check and before publication: output that can fail
    (a closed stdout) fails the restore instead of following a published domain."""
    parser = StreamParser(source, profile=profile, own=own, source_width=source_width,
                          max_pages=max_pages, source_byte_order=source_byte_order)
    with store.writing_as(name, prefix) as (chosen, domain):
        sink = RestoreSink(domain, chosen, host_id)
        try:
            header = parser.parse(sink)
            meta = sink.finish()
        except OSError as e:  # the store's disk (full, read-only, gone): exit 5, named
            raise StateError(f"cannot write domain {chosen!r} in store {store.root}: "
                             f"{e.strerror or e}") from None
        finally:
            sink.close()
        if announce is not None:
            announce(chosen)
    return meta, header
