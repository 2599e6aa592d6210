"""Save a domain as a stream in any encoding, batch by batch: memory use does not
grow with the domain, and page data moves through one preallocated buffer."""

from __future__ import annotations

import json
import platform
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from xsmig import __version__, p2mtable, pagetable
from xsmig import pagetypes as pt
from xsmig.domain import PAGE_SIZE, SHARED_INFO_FLL_OFFSET, DomainDir, DomainMeta
from xsmig.errors import StateError, UsageError
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.io import StreamWriter, in_order
from xsmig.validate import Invalid, validate
from xsmig.vcpu import FrameField, FrameFieldError, rewrite_frames


@dataclass
class SaveOptions:
    encoding: fmt.Encoding
    layout: Layout  # the saving toolstack's ABI
    ext_info: bool = True
    rounds: int = 1  # >1 resends a share of the pages, as live migration's later rounds do
    word_size: int | None = None  # extended only: override the sinf word size


@dataclass
class SaveStats:
    bytes: int
    pages_sent: int
    batches: int


def stream_layout(opts: SaveOptions) -> Layout:
    if opts.encoding is fmt.Encoding.NATIVE:
        return opts.layout
    if opts.encoding is fmt.Encoding.ESCAPED:
        return Layout.clean(8, opts.layout.byte_order)
    return Layout.clean(opts.word_size or opts.layout.ulong_size, opts.layout.byte_order)


class _Saver:
    def __init__(self, domain: DomainDir, meta: DomainMeta, out: StreamWriter,
                 opts: SaveOptions, memory: BinaryIO) -> None:
        self.domain = domain
        self.memory = memory
        self.meta = meta
        self.out = out
        self.opts = opts
        self.layout = stream_layout(opts)
        self.types = domain.read_types()
        self.frames = meta.frame_map()
        self.vl = meta.vcpu_layout
        self.p2m_index = {pfn: i for i, pfn in enumerate(meta.p2m_frames)}
        self.buf = bytearray(fmt.MAX_BATCH * PAGE_SIZE)
        self.view = memoryview(self.buf)
        self.pages_sent = 0
        self.batches = 0

    def ulongs(self, values: Sequence[int]) -> bytes:
        return struct.pack(f"{self.layout.endian}{len(values)}{self.layout.ulong_code}", *values)

    def to_pfn(self, mfn: int) -> int | None:
        pfn = self.frames.pfn(mfn)
        return pfn if pfn is not None and self.types[pfn] != pt.XTAB else None

    # -- sections --

    def header(self) -> None:
        out, opts = self.out, self.opts
        if opts.encoding is not fmt.Encoding.NATIVE:
            out.pack(fmt.U32, fmt.ESCAPE)
        if opts.encoding is fmt.Encoding.EXTENDED:
            order = fmt.BYTE_ORDERS.index(self.layout.byte_order)
            sinf = fmt.SINF_V1.pack(self.layout.ulong_size, order,
                                    fmt.SINF_VERSION, 0, 0, fmt.GUEST_X86_PV)
            writer = json.dumps({"xsmig": __version__, "abi": opts.layout.name,
                                 "machine": platform.machine()}).encode()
            for bid, flags, payload in [(fmt.SINF, 0, sinf),
                                        (fmt.WRITER, fmt.XBLOCK_OPTIONAL, writer),
                                        (fmt.XEND, 0, b"")]:
                out.pack(fmt.XBLOCK, bid, flags, 0, len(payload))
                out.write(payload)
        # The extended-info section is little-endian on every ABI (it declares the order);
        # every integer after it, and all of a native or escaped stream, is in the ABI's.
        out.byte_order = self.layout.byte_order
        out.write(self.ulongs([self.meta.p2m_size]))
        if opts.ext_info:
            blocks = [(fmt.EXT_VCPU, self.vcpu_context(0))]
            if self.meta.extended_contexts:
                blocks.append((fmt.EXT_EXTV, b""))
            if self.meta.xsave_size:
                xcnt = in_order(fmt.U32, self.layout.byte_order).pack(self.meta.xsave_size + 16)
                blocks.append((fmt.EXT_XCNT, xcnt))
            out.write(self.ulongs([self.layout.ulong_all_ones]))
            out.pack(fmt.U32, sum(fmt.EXT_BLOCK.size + len(data) for _, data in blocks))
            for bid, data in blocks:
                out.pack(fmt.EXT_BLOCK, bid, len(data))
                out.write(data)
        out.write(self.ulongs(self.meta.p2m_frames))

    def body(self) -> None:
        p2m = self.meta.p2m_size
        for first in range(0, p2m, fmt.MAX_BATCH):
            self.batch(range(first, min(first + fmt.MAX_BATCH, p2m)))
        for round_no in range(1, self.opts.rounds):
            # Later rounds resend a seeded share of the pages ("dirtied" while sending).
            stride = 3 + round_no
            again = [p for p in range(round_no % stride, p2m, stride)
                     if pt.has_data(self.types[p])]
            for i in range(0, len(again), fmt.MAX_BATCH):
                self.batch(again[i:i + fmt.MAX_BATCH])
        ids = self.meta.vcpu_ids
        words = [0] * (max(ids) // 64 + 1)
        for vcpu_id in ids:
            words[vcpu_id // 64] |= 1 << (vcpu_id % 64)
        out = self.out
        out.pack(fmt.I32, -2)
        out.pack(fmt.I32, max(ids))
        out.write(struct.pack(f"{self.layout.endian}{len(words)}Q", *words))
        tsc = self.meta.tsc
        out.pack(fmt.I32, -7)
        out.pack(fmt.TSC_INFO, tsc.mode, tsc.nsec, tsc.khz, tsc.incarnation)
        if self.meta.toolstack_version is not None:
            data = self.toolstack()
            out.pack(fmt.I32, -18)
            out.pack(fmt.U32, len(data))
            out.write(data)
        out.pack(fmt.I32, -9)
        out.pack(fmt.I32, 0)

    def batch(self, pfns: range | list[int]) -> None:
        types = (self.types[pfns.start:pfns.stop] if isinstance(pfns, range)
                 else bytes(self.types[p] for p in pfns))
        entries = [pt.BARE_XTAB_ENTRY if t == pt.XTAB else (t << pt.TYPE_SHIFT) | p
                   for p, t in zip(pfns, types, strict=True)]
        self.out.pack(fmt.I32, len(entries))
        self.out.write(self.ulongs(entries))
        data_pfns = [p for p, t in zip(pfns, types, strict=True) if pt.has_data(t)]
        if not data_pfns:
            self.batches += 1
            return
        view, mem = self.view, self.memory
        # Read runs of consecutive pfns with one call each, straight into the buffer.
        start = 0
        for i in range(1, len(data_pfns) + 1):
            if i == len(data_pfns) or data_pfns[i] != data_pfns[i - 1] + 1:
                mem.seek(data_pfns[start] * PAGE_SIZE)
                mem.readinto(view[start * PAGE_SIZE:i * PAGE_SIZE])  # type: ignore[attr-defined]
                start = i
        for i, pfn in enumerate(data_pfns):
            t = self.types[pfn]
            if t != pt.NOTAB or pfn in self.p2m_index:
                self.canonicalise_page(pfn, t, view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
        self.out.write(view[:len(data_pfns) * PAGE_SIZE])
        self.pages_sent += len(data_pfns)
        self.batches += 1

    def canonicalise_page(self, pfn: int, t: int, page: memoryview) -> None:
        level = pt.pt_level(t)
        if level:
            pagetable.normalise(page, level, self.vl.pt_levels)
            try:
                pagetable.rewrite(page, self.vl.pt_levels, self.to_pfn)
            except pagetable.EntryError as e:
                raise StateError(f"domain {self.meta.name!r} is corrupt: page table at pfn "
                                 f"{pfn:#x}: {e}") from None
        elif pfn in self.p2m_index:
            page[:] = p2mtable.page_content(self.meta, self.types, self.p2m_index[pfn],
                                            p2mtable.identity)

    def toolstack(self) -> bytes:
        assert self.meta.toolstack_version is not None
        record = self.layout.physmap_record_size()
        order = self.layout.byte_order
        header = in_order(fmt.TOOLSTACK_HEADER, order)
        parts = [header.pack(self.meta.toolstack_version, len(self.meta.physmap))]
        for entry in self.meta.physmap:
            fields = in_order(fmt.PHYSMAP_FIELDS, order).pack(
                entry.phys_offset, entry.start_addr, entry.size, len(entry.name))
            # libxl copies the name to offset 28 of a sizeof()+namelen buffer: on amd64 the
            # 4 padding bytes end up after the name.
            parts.append((fields + entry.name).ljust(record + len(entry.name), b"\0"))
        return b"".join(parts)

    def vcpu_context(self, vcpu_id: int) -> bytes:
        ctx = bytearray(self.domain.read_vcpu(self.meta, vcpu_id).context)
        rewrite_frames(self.vl, ctx, vcpu_id, self._frame_checker(vcpu_id))
        return bytes(ctx)

    def _frame_checker(self, vcpu_id: int) -> Callable[[int, FrameField], int]:
        def translate(mfn: int, field: FrameField) -> int:
            pfn = self.to_pfn(mfn)
            if pfn is None:
                raise StateError(f"domain {self.meta.name!r} is corrupt: vCPU {vcpu_id} "
                                 f"{field.name} holds frame {mfn:#x}, not the domain's")
            return pfn
        return translate

    def tail(self) -> None:
        holes = [p for run in pt.HOLE_RUN.finditer(self.types) for p in range(*run.span())]
        self.out.pack(fmt.U32, len(holes))
        self.out.write(self.ulongs(holes))
        for vcpu_id in self.meta.vcpu_ids:
            state = self.domain.read_vcpu(self.meta, vcpu_id)
            self.out.write(self.vcpu_context(vcpu_id))
            if self.opts.ext_info and self.meta.extended_contexts:
                self.out.write(state.extended or bytes(128))
            if self.opts.ext_info and self.meta.xsave_size:
                self.out.pack(fmt.XSAVE_HEADER, state.xsave_mask, len(state.xsave))
                self.out.write(state.xsave)
        shared = bytearray(self.domain.shared_info_path.read_bytes())
        offset = SHARED_INFO_FLL_OFFSET[self.meta.guest_width]
        shared[offset:offset + self.vl.word_size] = bytes(self.vl.word_size)
        self.out.write(shared)


def save(domain: DomainDir, out: BinaryIO, opts: SaveOptions) -> SaveStats:
    try:
        meta, _types = validate(domain)  # the rule restore applied before publishing
    except Invalid as e:
        raise StateError(f"domain at {domain.path} is corrupt: {e}") from None
    if opts.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if opts.word_size not in (None, 4, 8) or (opts.word_size and
                                              opts.encoding is not fmt.Encoding.EXTENDED):
        raise UsageError("--word-size 4|8 goes with --encoding extended only")
    if not opts.ext_info:
        if opts.encoding is not fmt.Encoding.NATIVE:
            raise UsageError("--no-ext-info goes with --encoding native only")
        if meta.guest_width != opts.layout.bits:
            raise StateError(f"a {meta.guest_width}-bit guest needs extended info on a "
                             f"{opts.layout.bits}-bit toolstack: drop --no-ext-info")
        if meta.extended_contexts or meta.xsave_size:
            raise StateError(f"domain {meta.name!r} has extended vCPU state, which a stream "
                             "without extended info cannot carry (create it with "
                             "--no-extended-state)")
    writer = StreamWriter(out)
    try:
        with domain.open_memory() as memory:
            saver = _Saver(domain, meta, writer, opts, memory)
            saver.header()
            saver.body()
            saver.tail()
    except FrameFieldError as e:
        raise StateError(f"domain {meta.name!r} is corrupt: {e}") from None
    writer.flush()
    return SaveStats(writer.offset, saver.pages_sent, saver.batches)
