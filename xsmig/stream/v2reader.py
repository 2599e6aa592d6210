"""Parse a v2 stream (Xen's migration stream v2/v3, x86 PV) into the same sink events as
the legacy parser, so restore, inspect, verify and convert take either.

Checked as the spec says, each with the byte offset: the headers and their reserved
fields, record lengths (exact where the spec fixes them) and zero padding, the PV
record order (X86_PV_INFO, STATIC_DATA_END in v3, X86_PV_P2M_FRAMES, PAGE_DATA, vCPU
records), page types, pfns against the p2m range, and at END a BASIC record for every
vCPU that has any record, vCPU 0 among them. vCPU records are kept until END (bounded
in total, as Xen's restorer keeps them) because the spec lets them come in any order."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from xsmig import pagetypes as pt
from xsmig import words
from xsmig.domain import TscInfo
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.detect import Detection
from xsmig.stream.io import StreamReader
from xsmig.stream.reader import Batch, StreamHeader, StreamSink, parse_toolstack
from xsmig.vcpu import BY_WIDTH, EXTENDED_CONTEXT_SIZE, MAX_VCPU_ID, VcpuLayout

_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))  # bytes.translate tables
_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))
_NONZERO = re.compile(b"[^\x00]")


def split_pfn_words(raw: bytes | bytearray | memoryview) -> tuple[bytes, list[int], int | None]:
    """PAGE_DATA's little-endian pfn words -> (type of each, pfn of each, index of the
    first word with reserved bits 59-52 set or None). Bits 63-60 are byte 7's high
    nibble, bits 59-52 byte 7's low and byte 6's high nibble: byte slices and
    translate tables split them in C, with no Python loop over the words."""
    count = len(raw) // 8
    top, next_top = bytes(raw[7::8]), bytes(raw[6::8])
    hits = [m.start() for half in (top.translate(_LOW_NIBBLE), next_top.translate(_HIGH_NIBBLE))
            if (m := _NONZERO.search(half))]
    masked = bytearray(raw)
    masked[7::8] = bytes(count)
    masked[6::8] = next_top.translate(_LOW_NIBBLE)
    return top.translate(_HIGH_NIBBLE), words.load("Q", masked).tolist(), min(hits, default=None)


_CPUID_LEAF = 24  # xen_cpuid_leaf_t: leaf, subleaf, a, b, c, d
_MSR_ENTRY = 16  # xen_msr_entry_t: idx, flags, val


class _Vcpu:
    __slots__ = ("basic", "basic_at", "ext", "others", "xsave")

    def __init__(self) -> None:
        self.basic: bytes | None = None
        self.basic_at = 0
        self.ext: bytes | None = None
        self.xsave: bytes | None = None  # Xen's buffer: xcr0, xcr0_accum, the area
        self.others: list[str] = []  # names of records seen, for messages


def read_padding(r: StreamReader, length: int, name: str, layer: str = "") -> None:
    """The zero padding that follows a record of ``length`` bytes, in both v2 layers
    (libxc's records and libxl's around them): refused unless zero, at its own offset."""
    pad = fmt.v2_padding(length)
    if pad:
        at = r.offset
        if any(r.read(pad, f"{name} padding")):
            raise StreamError(f"non-zero padding after the {layer}{name} record", at)


class V2Parser:
    def __init__(self, r: StreamReader, detection: Detection, scratch: memoryview, *,
                 max_pages: int = fmt.MAX_P2M_SIZE,
                 lenient: Callable[[str], None] | None = None) -> None:
        self.r = r
        # lenient (verify): state the spec allows but xsmig's domains cannot hold is
        # reported through this callable instead of refused.
        self.lenient = lenient
        self.detection = detection
        self.scratch = scratch  # MAX_BATCH pages, shared with the legacy parser
        self.pfn_buf = memoryview(bytearray(8 * fmt.MAX_BATCH))
        self.max_pages = max_pages
        self.version = 0
        self.info: dict[str, object] = {}
        self.framing: dict[str, object] = {"framing": "libxc"}  # what wraps the libxc stream
        self.guest: VcpuLayout | None = None
        self.static_end = False
        self.header: StreamHeader | None = None
        self.pages_seen = False
        self.vcpu_seen = False  # since the last CHECKPOINT
        self.vcpus: dict[int, _Vcpu] = {}
        self.vcpu_bytes = 0
        self.shared: tuple[int, bytes] | None = None
        self.records = 0

    # -- headers --

    def _headers(self) -> None:
        r = self.r
        base = r.offset  # 0, or after libxl's header and LIBXC_CONTEXT record
        marker, ident, version, options, res1, res2 = r.unpack(fmt.V2_IHDR, "image header")
        if marker != fmt.V2_MARKER or ident != fmt.V2_ID:
            raise StreamError("not a v2 image header", base)
        if version not in fmt.V2_VERSIONS:
            raise StreamRefused(f"v2 image version {version}: this reader knows versions 2 "
                                "and 3", base + 12)
        if options & fmt.V2_OPT_RESERVED or res1 or res2:
            raise StreamError(f"reserved bits set in the image header (options {options:#x}, "
                              f"reserved {res1:#x} {res2:#x})", base + 16)
        if options & fmt.V2_OPT_BIG_ENDIAN:
            raise StreamRefused("big-endian v2 streams are not supported", base + 16)
        at = r.offset
        dtype, shift, res, major, minor = r.unpack(fmt.V2_DHDR, "domain header")
        if dtype != fmt.V2_DOMAIN_X86_PV:
            if dtype in fmt.V2_DOMAIN_TYPES:
                raise StreamRefused(f"domain type {fmt.V2_DOMAIN_TYPES[dtype]}: xsmig "
                                    "restores x86 PV guests only", at)
            raise StreamError(f"unknown domain type {dtype:#x}", at)
        if res:
            raise StreamError(f"reserved bits set in the domain header ({res:#x})", at + 6)
        if shift != fmt.V2_PAGE_SHIFT:
            raise StreamError(f"page_shift {shift}: x86 pages are 2^12 bytes", at + 4)
        self.version = version
        self.info = {**self.framing, "version": version, "options": options, "domain_type": dtype,
                     "page_shift": shift, "xen_major": major, "xen_minor": minor}

    # -- records --

    def parse(self, sink: StreamSink, *, framed: bool = False) -> StreamHeader:
        """Read the libxc stream up to its END. framed (inside libxl records): stop there,
        leaving the vCPUs and shared info for finish(), once libxl's records are read
        (their physmap must reach a sink before the vCPUs, as in every encoding)."""
        self._headers()
        r = self.r
        while True:
            at = r.offset
            rtype, length = r.unpack(fmt.V2_RHDR, "record header")
            self.records += 1
            rec = fmt.V2_RECORDS.get(rtype)
            if rec is None:
                if not rtype & fmt.V2_OPTIONAL:
                    raise StreamRefused(f"unknown mandatory record type {rtype:#x}", at)
                r.skip(length, f"optional record {rtype:#x}", self.scratch)
                self._padding(length, f"optional record {rtype:#x}")
                sink.on_chunk(at, rtype, fmt.v2_record_name(rtype), {"skipped": length})
                continue
            if length > rec.max_length:
                raise StreamError(f"{rec.name} record of {length} bytes exceeds "
                                  f"{rec.max_length}", at + 4)
            if rec.exact is not None and length != rec.exact:
                raise StreamError(f"{rec.name} record body is {length} bytes, must be "
                                  f"{rec.exact}", at + 4)
            if rec.role is fmt.Role.END:
                self._padding(length, rec.name)
                self._check_end(at)
                if framed:
                    assert self.header is not None
                    return self.header
                return self.finish(sink, check_eof=True)
            self._record(rec, at, length, sink)
            self._padding(length, rec.name)

    def _padding(self, length: int, name: str) -> None:
        read_padding(self.r, length, name)

    def _order(self, rec: fmt.Record, at: int, *, after_p2m: bool = True) -> None:
        if self.version >= 3 and not self.static_end:
            raise StreamError(f"{rec.name} before STATIC_DATA_END (required in a v3 stream)",
                              at)
        if after_p2m and self.header is None:
            raise StreamError(f"{rec.name} before X86_PV_P2M_FRAMES", at)

    def _record(self, rec: fmt.Record, at: int, length: int, sink: StreamSink) -> None:
        r, role = self.r, rec.role
        if role is fmt.Role.PAGES:
            self._order(rec, at)
            if self.vcpu_seen:
                raise StreamError("PAGE_DATA after vCPU records (the spec orders PAGE_DATA "
                                  "before the vCPU records)", at)
            self._pages(at, length, sink)
        elif role is fmt.Role.PV_INFO:
            if self.guest is not None:
                raise StreamError("a second X86_PV_INFO record", at)
            if self.static_end:
                raise StreamError("X86_PV_INFO after the static data", at)
            width, levels, res1, res2 = r.unpack(fmt.V2_PV_INFO, rec.name)
            if width not in (4, 8) or levels not in (3, 4):
                raise StreamError(f"X86_PV_INFO guest width {width} / {levels} page-table "
                                  "levels: must be 4|8 and 3|4", at + 8)
            if res1 or res2:
                raise StreamError("reserved bits set in X86_PV_INFO", at + 10)
            guest = BY_WIDTH[width * 8]
            if guest.pt_levels != levels:
                raise StreamRefused(f"a {width * 8}-bit guest with {levels}-level page tables "
                                    f"is not one xsmig models ({guest.pt_levels} levels)", at + 9)
            self.guest = guest
        elif role is fmt.Role.STATIC_END:
            if self.static_end:
                raise StreamError("STATIC_DATA_END after the static data ended", at)
            if self.guest is None:
                raise StreamError("STATIC_DATA_END before X86_PV_INFO", at)
            self.static_end = True
        elif role is fmt.Role.STATIC:
            if self.static_end:
                raise StreamError(f"{rec.name} after the static data", at)
            unit = _CPUID_LEAF if rec.type == fmt.REC_X86_CPUID_POLICY else _MSR_ENTRY
            if length % unit:
                raise StreamError(f"{rec.name} of {length} bytes is no whole number of "
                                  f"{unit}-byte entries", at + 4)
            r.skip(length, rec.name, self.scratch)
            sink.on_chunk(at, rec.type, rec.name.lower(), {"entries": length // unit})
        elif role is fmt.Role.P2M_FRAMES:
            self._p2m_frames(at, length, sink)
        elif role is fmt.Role.VCPU:
            self._order(rec, at)
            if not self.pages_seen:
                raise StreamError(f"{rec.name} before any PAGE_DATA", at)
            self._vcpu(rec, at, length, sink)
        elif role is fmt.Role.SHARED_INFO:
            self._order(rec, at, after_p2m=False)  # kept until END: no dependency
            self.shared = (at, r.read(length, rec.name))
        elif role is fmt.Role.TSC_INFO:
            self._order(rec, at, after_p2m=False)
            mode, khz, nsec, incarnation, res = r.unpack(fmt.V2_TSC_INFO, rec.name)
            if res:
                raise StreamError("reserved bits set in X86_TSC_INFO", at + 28)
            sink.on_chunk(at, rec.type, fmt.EV_TSC_INFO, TscInfo(mode, nsec, khz, incarnation))
        elif role is fmt.Role.TOOLSTACK:  # earlier xsmig versions' private record
            value = parse_toolstack(r.read(length, rec.name), Layout.clean(8), at + 8)
            sink.on_chunk(at, rec.type, fmt.EV_TOOLSTACK, value)
        elif role is fmt.Role.SIGNAL:
            if rec.type == fmt.REC_CHECKPOINT:
                self.vcpu_seen = False  # a new round of pages may follow
                self._checkpoint_at = at
            sink.on_chunk(at, rec.type, rec.name.lower(), None)
        elif role is fmt.Role.DEPRECATED:
            raise StreamRefused(f"{rec.name} record (deprecated by the spec): not supported", at)
        else:
            where = ("a back-channel record in a forward stream"
                     if rec.type == fmt.REC_CHECKPOINT_DIRTY_PFN_LIST else "not valid for x86 PV")
            raise StreamError(f"{rec.name} record: {where}", at)

    def _p2m_frames(self, at: int, length: int, sink: StreamSink) -> None:
        r = self.r
        if self.guest is None:
            raise StreamError("X86_PV_P2M_FRAMES before X86_PV_INFO", at)
        if self.header is not None:
            raise StreamRefused("a second X86_PV_P2M_FRAMES record: xsmig takes the p2m "
                                "frame list once", at)
        if self.version >= 3 and not self.static_end:
            raise StreamError("X86_PV_P2M_FRAMES before STATIC_DATA_END (required in a v3 "
                              "stream)", at)
        self.static_end = True  # v2: the spec infers STATIC_DATA_END here
        if length < fmt.V2_P2M_FRAMES_HDR.size or length % 8:
            raise StreamError(f"X86_PV_P2M_FRAMES of {length} bytes: 8 + 8 per frame", at + 4)
        start, end = r.unpack(fmt.V2_P2M_FRAMES_HDR, "X86_PV_P2M_FRAMES")
        if start > end:
            raise StreamError(f"p2m_start_pfn {start:#x} above p2m_end_pfn {end:#x}", at + 8)
        if start:
            raise StreamRefused(f"p2m_start_pfn {start:#x}: xsmig takes the whole p2m from "
                                "pfn 0", at + 8)
        p2m_size = end + 1
        if p2m_size > fmt.MAX_P2M_SIZE:
            raise StreamError(f"p2m_end_pfn {end:#x}: more than {fmt.MAX_P2M_SIZE:#x} pages",
                              at + 12)
        if p2m_size > self.max_pages:
            raise StreamRefused(f"p2m_size {p2m_size} pages exceeds this host's cap of "
                                f"{self.max_pages} pages (--max-pages)", at + 12)
        assert self.guest is not None
        fpp = self.guest.frames_per_page()
        n = end // fpp - start // fpp + 1
        if (length - 8) // 8 != n:
            raise StreamError(f"X86_PV_P2M_FRAMES carries {(length - 8) // 8} frames; pfns "
                              f"{start:#x}..{end:#x} need {n}", at + 4)
        base = r.offset
        frames = list(words.load("Q", r.read(8 * n, "p2m frame pfns")))
        if max(frames) >= p2m_size:
            bad = next(i for i, p in enumerate(frames) if p >= p2m_size)
            raise StreamError(f"p2m frame {bad} is pfn {frames[bad]:#x}, beyond p2m_end_pfn "
                              f"{end:#x}", base + 8 * bad)
        self.header = StreamHeader(self.detection, Layout.clean(8), p2m_size, self.guest, False)
        self.header.frame_list, self.header.v2 = frames, self.info
        self.header.frame_list_offset = base  # errors about entry i blame base + 8 * i
        sink.on_header(self.header)

    def _pages(self, at: int, length: int, sink: StreamSink) -> None:
        r, header = self.r, self.header
        assert header is not None
        if length < fmt.V2_PAGE_DATA_HDR.size + 8:
            raise StreamError(f"PAGE_DATA of {length} bytes: a count, and at least one pfn",
                              at + 4)
        count, res = r.unpack(fmt.V2_PAGE_DATA_HDR, "PAGE_DATA")
        if count == 0:
            raise StreamError("PAGE_DATA with count 0 (must be > 0)", at + 8)
        if res:
            raise StreamError("reserved bits set in PAGE_DATA", at + 12)
        if length < 8 + 8 * count:
            raise StreamError(f"PAGE_DATA of {length} bytes cannot hold {count} pfns", at + 8)
        if count > max(fmt.MAX_BATCH, header.p2m_size):
            raise StreamRefused(f"PAGE_DATA of {count} pfns, more than the p2m's "
                                f"{header.p2m_size} pages", at + 8)
        base = r.offset
        # Xen writes up to 1024 pfns per record (read into the preallocated buffer); the
        # spec sets no limit, so a larger record is read in slices of 1024 entries.
        raw = (self.pfn_buf[:8 * count] if count <= fmt.MAX_BATCH
               else memoryview(bytearray(8 * count)))
        r.readinto(raw, "PAGE_DATA pfns")
        types, pfns, bad = split_pfn_words(raw)
        if bad is not None:
            raise StreamError(f"PAGE_DATA pfn[{bad}] has reserved bits 59-52 set",
                              base + 8 * bad)
        valid = types.translate(pt.VALID_NIBBLE)
        if 0 in valid:
            bad = valid.index(0)
            raise StreamError(f"PAGE_DATA pfn[{bad}] has unused page type {types[bad]:#x}",
                              base + 8 * bad)
        if max(pfns) >= header.p2m_size:
            bad = next(i for i, p in enumerate(pfns) if p >= header.p2m_size)
            raise StreamError(f"PAGE_DATA pfn[{bad}] is {pfns[bad]:#x}, beyond p2m_end_pfn "
                              f"{header.p2m_size - 1:#x}", base + 8 * bad)
        has_data = types.translate(pt.HAS_DATA)
        n_data = has_data.count(1)
        expected = 8 + 8 * count + fmt.PAGE_SIZE * n_data
        if length != expected:
            raise StreamError(f"PAGE_DATA of {count} pfns, {n_data} with data, must be "
                              f"{expected} bytes, not {length}", at + 4)
        self.pages_seen = True
        for first in range(0, count, fmt.MAX_BATCH):
            last = min(first + fmt.MAX_BATCH, count)
            data = self.scratch[:has_data.count(1, first, last) * fmt.PAGE_SIZE]
            data_offset = r.offset
            r.readinto(data, "PAGE_DATA pages")
            sink.on_batch(Batch(at, pfns[first:last], types[first:last], data, data_offset))
            if pt.XTAB in types[first:last]:
                sink.on_unmapped(at, list(itertools.compress(
                    pfns[first:last], types[first:last].translate(pt.UNMAPPED))))

    def _vcpu(self, rec: fmt.Record, at: int, length: int, sink: StreamSink) -> None:
        r, guest = self.r, self.guest
        assert guest is not None
        if length < fmt.V2_VCPU_HDR.size:
            raise StreamError(f"{rec.name} of {length} bytes: no vcpu_id", at + 4)
        vcpu_id, res = r.unpack(fmt.V2_VCPU_HDR, rec.name)
        if res:
            raise StreamError(f"reserved bits set in {rec.name}", at + 12)
        if vcpu_id > MAX_VCPU_ID:
            raise StreamRefused(f"{rec.name} for vCPU {vcpu_id}: this host allows ids up to "
                                f"{MAX_VCPU_ID}", at + 8)
        size = length - fmt.V2_VCPU_HDR.size
        state = self.vcpus.setdefault(vcpu_id, _Vcpu())
        state.others.append(rec.name)
        self.vcpu_seen = True
        if rec.type == fmt.REC_X86_PV_VCPU_BASIC:
            if size != guest.size:
                raise StreamError(f"X86_PV_VCPU_BASIC of {size} bytes; a {guest.guest_width}-"
                                  f"bit guest's context is {guest.size}", at + 4)
            if state.basic is not None and state.basic_at > self._checkpoint_at:
                raise StreamError(f"a second X86_PV_VCPU_BASIC for vCPU {vcpu_id}", at)
            self._account(size, at)
            state.basic, state.basic_at = r.read(size, rec.name), at
        elif size == 0:
            return  # erratum 1: variable records with zero content are ignored
        elif rec.type == fmt.REC_X86_PV_VCPU_EXTENDED:
            if size != EXTENDED_CONTEXT_SIZE:
                raise StreamError(f"X86_PV_VCPU_EXTENDED of {size} bytes, not "
                                  f"{EXTENDED_CONTEXT_SIZE}", at + 4)
            self._account(size, at)
            state.ext = r.read(size, rec.name)
        elif rec.type == fmt.REC_X86_PV_VCPU_XSAVE:
            if size < fmt.V2_XSAVE_HDR.size:
                raise StreamError(f"X86_PV_VCPU_XSAVE of {size} bytes: shorter than its "
                                  "xcr0/xcr0_accum header", at + 4)
            if size == fmt.V2_XSAVE_HDR.size:
                raise StreamError("X86_PV_VCPU_XSAVE with xcr0 and xcr0_accum but no xsave "
                                  "area", at + 4)
            self._account(size, at)
            state.xsave = r.read(size, rec.name)  # Xen's buffer, as the legacy tail has it
            xcr0, accum = fmt.V2_XSAVE_HDR.unpack_from(state.xsave)
            if not xcr0 & fmt.XCR0_X87 or xcr0 & ~accum:
                # what Xen's hypervisor refuses to load (XEN_DOMCTL_setvcpuextstate)
                self.unrepresentable(f"vCPU {vcpu_id}: xcr0 {xcr0:#x} lacks x87 or is not "
                                      f"within xcr0_accum {accum:#x}", at + 16)
        else:  # MSRS
            if size % fmt.V2_MSR.size:
                raise StreamError(f"X86_PV_VCPU_MSRS of {size} bytes is no whole number of "
                                  f"{fmt.V2_MSR.size}-byte entries", at + 4)
            data = r.read(size, rec.name)
            for i, (_index, reserved, _value) in enumerate(fmt.V2_MSR.iter_unpack(data)):
                if reserved:
                    raise StreamError(f"X86_PV_VCPU_MSRS entry {i}: reserved bits set",
                                      at + 16 + i * fmt.V2_MSR.size + 4)
            sink.on_chunk(at, rec.type, fmt.EV_VCPU_MSRS, (vcpu_id, size // fmt.V2_MSR.size))

    _checkpoint_at = -1

    def unrepresentable(self, message: str, at: int) -> None:
        if self.lenient is None:
            raise StreamRefused(message, at)
        self.lenient(f"byte {at}: {message} (valid; xsmig restore refuses it)")

    def _account(self, size: int, at: int) -> None:
        self.vcpu_bytes += size
        if self.vcpu_bytes > fmt.MAX_V2_VCPU_BYTES:
            raise StreamRefused(f"vCPU records exceed {fmt.MAX_V2_VCPU_BYTES} bytes in all",
                                at)

    def _check_end(self, at: int) -> None:
        header = self.header
        if self.guest is None:
            raise StreamError("END without an X86_PV_INFO record", at)
        if header is None:
            raise StreamError("END without an X86_PV_P2M_FRAMES record", at)
        if self.shared is None:
            raise StreamError("END without a SHARED_INFO record", at)
        for vcpu_id, state in sorted(self.vcpus.items()):
            if state.basic is None:
                raise StreamError(f"vCPU {vcpu_id} has {state.others[0]} but no "
                                  "X86_PV_VCPU_BASIC record", at)
        if 0 not in self.vcpus:
            raise StreamError("END without an X86_PV_VCPU_BASIC record for vCPU 0", at)
        with_ext = {i for i, s in self.vcpus.items() if s.ext is not None}
        if with_ext and with_ext != set(self.vcpus):
            missing = min(set(self.vcpus) - with_ext)
            self.unrepresentable(f"vCPU {missing} lacks the X86_PV_VCPU_EXTENDED record the "
                                  "others have; xsmig keeps extended state for all or none", at)
        buffers = [len(s.xsave) for s in self.vcpus.values() if s.xsave is not None]
        header.extended_contexts = bool(with_ext)
        header.xsave_limit = max(buffers) + fmt.XSAVE_HEADER.size if buffers else 0

    def finish(self, sink: StreamSink, *, check_eof: bool) -> StreamHeader:
        """The vCPUs and shared info, kept until END, to the sink."""
        header = self.header
        assert header is not None and self.shared is not None
        ids = sorted(self.vcpus)
        sink.on_chunk(self.vcpus[0].basic_at, fmt.REC_X86_PV_VCPU_BASIC, fmt.EV_VCPU_INFO, ids)
        for vcpu_id in ids:
            state = self.vcpus[vcpu_id]
            assert state.basic is not None
            sink.on_vcpu(state.basic_at, vcpu_id, state.basic, state.ext, 0,
                         state.xsave or b"")
        sink.on_shared_info(*self.shared)
        if check_eof and not self.r.at_eof():
            raise StreamError("trailing data after the END record", self.r.offset)
        return header
