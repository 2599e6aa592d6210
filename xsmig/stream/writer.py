"""Save a domain as a stream in any encoding, batch by batch: memory use does not
grow with the domain, and page data moves through one preallocated buffer.

The saver reads and canonicalises the domain; the encoders in emit.py (legacy) and
v2writer.py (v2) lay the bytes out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress
from typing import BinaryIO, NamedTuple

from xsmig import p2mtable, pagetable
from xsmig import pagetypes as pt
from xsmig.domain import PAGE_SIZE, SHARED_INFO_FLL_OFFSET, DomainDir, DomainMeta
from xsmig.errors import StateError, UsageError
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.emit import Emitter, LegacyEmitter, StreamStart
from xsmig.stream.emit import stream_layout as _stream_layout
from xsmig.stream.v2writer import V2Emitter, physmap_problem
from xsmig.validate import Invalid, pt_target, pt_targets, pt_targets_lanes, validate
from xsmig.vcpu import FrameField, FrameFieldError, rewrite_frames


class SaveOptions(NamedTuple):
    encoding: fmt.Encoding
    layout: Layout  # the saving toolstack's ABI
    ext_info: bool = True
    rounds: int = 1  # >1 resends a share of the pages, as live migration's later rounds do
    word_size: int | None = None  # extended only: override the sinf word size
    v2_format: fmt.V2Format = fmt.V2Format.LIBXL  # v2 only: libxl framing or bare libxc


class SaveStats(NamedTuple):
    bytes: int
    pages_sent: int
    batches: int


def stream_layout(opts: SaveOptions) -> Layout:
    return _stream_layout(opts.encoding, opts.layout, opts.word_size)


def make_emitter(out: BinaryIO, encoding: fmt.Encoding, abi: Layout, *, ext_info: bool = True,
                 word_size: int | None = None,
                 xen_version: tuple[int, int] = fmt.V2_XEN_VERSION,
                 v2_format: fmt.V2Format = fmt.V2Format.LIBXL) -> LegacyEmitter | V2Emitter:
    if encoding is fmt.Encoding.V2:
        return V2Emitter(out, xen_version=xen_version, v2_format=v2_format)
    return LegacyEmitter(out, encoding, abi, ext_info=ext_info, word_size=word_size)


class _Saver:
    def __init__(self, domain: DomainDir, meta: DomainMeta, out: Emitter,
                 opts: SaveOptions, memory: BinaryIO) -> None:
        self.domain = domain
        self.memory = memory
        self.meta = meta
        self.out = out
        self.opts = opts
        self.types = domain.read_types()
        self.frames = meta.frame_map()
        self.to_pfn = pt_target(self.frames, self.types)
        self.to_pfns = pt_targets(self.frames, self.types)
        self.to_pfn_lanes = pt_targets_lanes(self.frames, self.types)
        self.vl = meta.vcpu_layout
        self.p2m_index = {pfn: i for i, pfn in enumerate(meta.p2m_frames)}
        self.p2m_mask = bytearray(meta.p2m_size)  # 1 at each p2m page (validated: in range)
        for pfn in meta.p2m_frames:
            self.p2m_mask[pfn] = 1
        self.buf = bytearray(fmt.MAX_BATCH * PAGE_SIZE)
        self.view = memoryview(self.buf)
        self.pages_sent = 0
        self.batches = 0


    # -- sections --

    def header(self) -> None:
        meta = self.meta
        buffer = meta.xsave_size + fmt.XSAVE_BUFFER_HDR.size if meta.xsave_size else 0
        self.out.begin(StreamStart(meta.p2m_size, self.vl, meta.p2m_frames,
                                   meta.extended_contexts, buffer, self.vcpu_context(0)))

    def all_pages(self) -> None:
        p2m = self.meta.p2m_size
        for first in range(0, p2m, fmt.MAX_BATCH):
            self.batch(range(first, min(first + fmt.MAX_BATCH, p2m)))

    def send(self, pfns: list[int]) -> None:
        """Pages again (a live round): pfns ascending, any types."""
        for i in range(0, len(pfns), fmt.MAX_BATCH):
            self.batch(pfns[i:i + fmt.MAX_BATCH])

    def body(self) -> None:
        self.all_pages()
        p2m = self.meta.p2m_size
        for round_no in range(1, self.opts.rounds):
            # Later rounds resend a seeded share of the pages ("dirtied" while sending).
            stride = 3 + round_no
            again = list(compress(range(round_no % stride, p2m, stride),
                                  self.types[round_no % stride::stride].translate(pt.HAS_DATA)))
            self.send(again)
        self.body_end()

    def body_end(self) -> None:
        self.out.vcpu_ids(self.meta.vcpu_ids)
        self.out.tsc(self.meta.tsc)
        if self.meta.toolstack_version is not None:
            self.out.toolstack(self.meta.toolstack_version, self.meta.physmap)

    def batch(self, pfns: range | list[int]) -> None:
        types = (bytes(self.types[pfns.start:pfns.stop]) if isinstance(pfns, range)
                 else bytes(map(self.types.__getitem__, pfns)))
        has_data = types.translate(pt.HAS_DATA)
        whole = 0 not in has_data  # every entry carries its page (the usual)
        data_pfns: range | list[int]
        runs: Iterable[tuple[int, int]]
        if whole and isinstance(pfns, range):
            # A whole range (all_pages): one run, and the p2m pages in it found by a
            # C-level scan of their mask; no list of the pfns, no look at them.
            data_pfns, runs = pfns, ((0, len(pfns)),)
            p2m: Iterable[int] = [m.start() - pfns.start for m in
                                  pt.ONE.finditer(self.p2m_mask, pfns.start, pfns.stop)]
            data_types = types
        else:
            data_pfns = list(compress(pfns, has_data))
            runs = pt.pfn_runs(data_pfns)
            p2m = map(data_pfns.index, self.p2m_index.keys() & set(data_pfns))
            data_types = types if whole else bytes(compress(types, has_data))
        view, mem = self.view, self.memory
        # Read runs of consecutive pfns with one call each, straight into the buffer.
        for start, end in runs:
            mem.seek(data_pfns[start] * PAGE_SIZE)
            mem.readinto(view[start * PAGE_SIZE:end * PAGE_SIZE])  # type: ignore[attr-defined]
        # Only page tables and the guest's p2m pages change: found by C-level scans.
        special = {m.start() for m in pt.PAGETABLE.finditer(data_types)}
        special.update(p2m)
        for i in special:
            pfn = data_pfns[i]
            self.canonicalise_page(pfn, self.types[pfn], view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
        self.out.pages(pfns, types, view[:len(data_pfns) * PAGE_SIZE])
        self.pages_sent += len(data_pfns)
        self.batches += 1

    def canonicalise_page(self, pfn: int, t: int, page: memoryview) -> None:
        level = pt.pt_level(t)
        if level:
            pagetable.normalise(page, level, self.vl.pt_levels)
            try:
                pagetable.rewrite(page, self.vl.pt_levels, self.to_pfns, self.to_pfn_lanes)
            except pagetable.EntryError as e:
                raise StateError(f"domain {self.meta.name!r} is corrupt: page table at pfn "
                                 f"{pfn:#x}: {e}") from None
        elif pfn in self.p2m_index:
            page[:] = p2mtable.page_content(self.meta, self.types, self.p2m_index[pfn],
                                            p2mtable.identity)

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
        if self.out.tail_holes:
            self.out.holes([p for run in pt.HOLE_RUN.finditer(self.types)
                            for p in range(*run.span())])
        for vcpu_id in self.meta.vcpu_ids:
            state = self.domain.read_vcpu(self.meta, vcpu_id)
            self.out.vcpu(vcpu_id, self.vcpu_context(vcpu_id), state.extended,
                          fmt.HOST_XFEATURE_MASK, state.xsave)
        shared = bytearray(self.domain.shared_info_path.read_bytes())
        offset = SHARED_INFO_FLL_OFFSET[self.meta.guest_width]
        shared[offset:offset + self.vl.word_size] = bytes(self.vl.word_size)
        self.out.shared_info(bytes(shared))
        self.out.end()


def save(domain: DomainDir, out: BinaryIO, opts: SaveOptions,
         live: Callable[[_Saver], None] | None = None) -> SaveStats:
    """`live`: sends the pages in its own rounds (xsmig/live.py), then calls body_end();
    the vCPU state and the tail follow once it returns."""
    try:
        # The rule restore applied before publishing. Page-table entries: the rewrite in
        # canonicalise_page translates each with the same rule (pt_targets) and fails the
        # save on the first it refuses, so checking them here too would translate every
        # entry twice (docs/performance.md). Output to a file is then discarded; a pipe
        # sees a cut stream, which every reader refuses.
        meta, _types = validate(domain, page_tables=False)
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
    if opts.encoding is fmt.Encoding.V2:
        problem = physmap_problem(opts.v2_format, meta.toolstack_version, meta.physmap)
        if problem:  # before a byte is written
            raise StateError(f"domain {meta.name!r}: {problem}")
    elif opts.v2_format is not fmt.V2Format.LIBXL:
        raise UsageError("--v2-format goes with --encoding v2 only")
    emitter = make_emitter(out, opts.encoding, opts.layout, ext_info=opts.ext_info,
                           word_size=opts.word_size, v2_format=opts.v2_format)
    try:
        with domain.open_memory() as memory:
            saver = _Saver(domain, meta, emitter, opts, memory)
            saver.header()
            if live is None:
                saver.body()
            else:
                live(saver)
            saver.tail()
    except FrameFieldError as e:
        raise StateError(f"domain {meta.name!r} is corrupt: {e}") from None
    return SaveStats(emitter.offset, saver.pages_sent, saver.batches)
