"""Parse any stream of the family into events for a sink (restore, inspect).

The parser checks structure: every size against a bound before reading, counts,
ids, pfns against p2m_size, the order of sections. What the values mean for a
domain (page-table entries, vCPU frames) is the sink's to check."""

from __future__ import annotations

import itertools
import json
import operator
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple, Protocol

from xsmig import pagetable, words
from xsmig import pagetypes as pt
from xsmig.domain import PhysmapEntry, TscInfo
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import LITTLE, Layout
from xsmig.stream import format as fmt
from xsmig.stream.detect import HEAD_BYTES, Detection, detect
from xsmig.stream.io import StreamReader, in_order
from xsmig.vcpu import BY_SIZE, BY_WIDTH, EXTENDED_CONTEXT_SIZE, MAX_VCPU_ID, VcpuLayout

# Real savers write at most 3 ext-info blocks; a cap keeps a 1 MiB section of empty
# blocks from costing a Block object per 8 bytes (docs/cli.md, "Caps").
MAX_EXT_BLOCKS = 1024
_BITS = [bytes((byte >> i) & 1 for i in range(8)) for byte in range(256)]


class Block(NamedTuple):
    id: str
    offset: int
    size: int
    flags: int = 0


class StreamHeader:
    """What a stream's head said; filled in as the parser reads it."""

    def __init__(self, detection: Detection, layout: Layout, p2m_size: int, guest: VcpuLayout,
                 ext_info: bool) -> None:
        self.detection = detection
        self.layout = layout  # ABI the stream's words and records follow
        self.p2m_size = p2m_size
        self.guest = guest
        self.ext_info = ext_info
        self.ext_blocks: list[Block] = []
        self.xblocks: list[Block] = []  # extended-info section blocks
        self.stream_info: dict[str, int] | None = None
        self.writer: dict[str, object] | None = None
        self.vcpu0_block: bytes | None = None
        self.extended_contexts = False
        # xcnt: 16 + the largest xsave buffer (xcr0, xcr0_accum, area); 0: no xsave
        self.xsave_limit = 0
        self.frame_list: list[int] = []
        self.frame_list_offset = 0  # of the p2m frame list's first entry
        self.v2: dict[str, object] | None = None  # v2 only: the image and domain headers' fields

    @property
    def encoding(self) -> fmt.Encoding:
        return self.detection.encoding


class Batch(NamedTuple):
    offset: int  # of the count
    pfns: list[int]  # pfn of each entry (XTAB entries: their raw pfn bits)
    types: bytes  # type nibble of each entry
    data: memoryview  # 4096 bytes per data-carrying entry, in entry order
    data_offset: int


def record_types(batch: Batch, types: bytearray) -> list[int]:
    """Note each entry's page type in `types` (XTAB entries carry none); return the pfns
    of the entries whose pages the batch carries, in order: what a sink walks."""
    pfns, entry_types = batch.pfns, batch.types
    mapped = entry_types.translate(pt.MAPPED)
    if mapped.count(0) == 0 and pt.is_run(pfns):
        types[pfns[0]:pfns[0] + len(pfns)] = entry_types  # the usual batch: one slice
    else:  # in order, so a pfn sent twice keeps its last type; C-level map, no loop
        deque(map(operator.setitem, itertools.repeat(types), itertools.compress(pfns, mapped),
                  itertools.compress(entry_types, mapped)), maxlen=0)
    return list(itertools.compress(pfns, entry_types.translate(pt.HAS_DATA)))


def rewrite_tables(batch: Batch, types: bytearray, data_pfns: list[int], levels: int,
                   translate: pagetable.Translate,
                   translate_lanes: pagetable.TranslateLanes | None = None
                   ) -> Iterator[tuple[int, memoryview, int]]:
    """Rewrite the batch's page-table pages in place, yielding (pfn, page, stream offset)
    of each; `translate` refuses (-1) a pfn beyond p2m_size, which is malformed here.
    Whether a pfn is a page of the domain is known only at the end of the stream.
    Which pages are tables is the batch's own say, entry by entry: a batch may send a
    pfn twice (noise as a plain page, then the table), and only the table is one."""
    entry_types = batch.types
    data_types = bytes(itertools.compress(entry_types, entry_types.translate(pt.HAS_DATA)))
    for m in pt.PAGETABLE.finditer(data_types):
        i = m.start()
        offset = batch.data_offset + i * fmt.PAGE_SIZE
        page = batch.data[i * fmt.PAGE_SIZE:(i + 1) * fmt.PAGE_SIZE]
        try:
            pagetable.rewrite(page, levels, translate, translate_lanes)
        except pagetable.EntryError as e:
            raise StreamError(f"page table at pfn {data_pfns[i]:#x}: entry {e.index} names "
                              f"pfn {e.frame:#x}, beyond p2m_size", offset + 8 * e.index
                              ) from None
        yield data_pfns[i], page, offset


class StreamSink(Protocol):
    def on_header(self, header: StreamHeader) -> None: ...
    def on_batch(self, batch: Batch) -> None: ...
    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None: ...
    def on_unmapped(self, offset: int, pfns: list[int]) -> None: ...  # once per chunk
    # xsave_mask: the legacy stream's xfeature_mask (the saving host's; 0 from v2); xsave:
    # Xen's buffer (u64 xcr0, u64 xcr0_accum, the area), b"" when the vCPU has none.
    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None: ...
    def on_shared_info(self, offset: int, data: bytes) -> None: ...


def _with_width_hint(e: StreamError | StreamRefused, detection: Detection
                     ) -> StreamError | StreamRefused:
    """A stream read in the own width by the mail's rule failed: say how to read it."""
    text = str(e)
    if e.offset is not None:
        text = text.removesuffix(e.where.format(e.offset))
    other = 96 - (detection.width or 64)
    return type(e)(f"{text} (read as this toolstack's own {detection.width}-bit width, the "
                   f"mail's rule for streams without extended info; give --source-width "
                   f"{other} if a {other}-bit toolstack wrote it)", e.offset)


def _note_on_stderr(text: str) -> None:
    print(f"xsmig: note: {text}", file=sys.stderr)


class StreamParser:
    def __init__(self, f: BinaryIO, *, profile: str = "current", own: Layout | None = None,
                 source_width: int | None = None, max_pages: int = fmt.MAX_P2M_SIZE,
                 source_byte_order: str | None = None,
                 note: Callable[[str], None] | None = None,
                 lenient: Callable[[str], None] | None = None) -> None:
        self._f = f
        self._lenient = lenient  # v2: report what xsmig cannot hold instead of refusing
        self._note = note or _note_on_stderr
        self._profile = profile
        self._own = own or Layout.native()
        self._source_width = source_width
        self._source_byte_order = source_byte_order
        self._max_pages = max_pages
        self._buf = bytearray(fmt.MAX_BATCH * fmt.PAGE_SIZE)  # reused by every batch
        self._scratch = memoryview(self._buf)
        self._last_map: tuple[bytes, list[int]] = (b"", [])

    def parse(self, sink: StreamSink) -> StreamHeader:
        head = self._f.read(HEAD_BYTES) or b""
        while len(head) < HEAD_BYTES:  # pipes may deliver fewer bytes than asked
            more = self._f.read(HEAD_BYTES - len(head))
            if not more:
                break
            head += more
        detection = detect(head, profile=self._profile, own=self._own,
                           source_width=self._source_width,
                           source_byte_order=self._source_byte_order)
        r = StreamReader(self._f, head)
        framing: dict[str, object] = {}
        if detection.framing == "xl":
            # an `xl save` file: xl's header, then a stream these rules detect again
            from xsmig.stream.libxl import read_xl_header

            framing["xl"] = xl = read_xl_header(r)
            inner = r.peek(HEAD_BYTES)
            detection = detect(inner, profile=self._profile, own=self._own,
                               source_width=self._source_width,
                               source_byte_order=self._source_byte_order)
            is_libxl = detection.framing == fmt.V2Format.LIBXL
            if detection.framing == "xl" or is_libxl != xl["libxl"]:
                raise StreamError(f"the xl header says {'a libxl' if xl['libxl'] else 'a legacy'}"
                                  f" stream follows, but {detection.rule}", r.offset)
            detection = detection._replace(rule=f"{fmt.rule('R0X')}, then {detection.rule}")
        if detection.encoding is fmt.Encoding.V2:
            from xsmig.stream.v2reader import V2Parser  # v2reader builds on this module

            v2 = V2Parser(r, detection, self._scratch, max_pages=self._max_pages,
                          lenient=self._lenient)
            if detection.framing == fmt.V2Format.LIBXL:
                from xsmig.stream.libxl import LibxlParser

                return LibxlParser(r, detection, v2).parse(sink, {**framing,
                                                                  "framing": "libxl"})
            v2.framing = {**framing, "framing": "libxc"}
            return v2.parse(sink)
        try:
            header = self._header(r, detection)
            sink.on_header(header)
            vcpu_ids = self._body(r, header, sink)
            self._tail(r, header, vcpu_ids, sink)
            if not r.at_eof():
                raise StreamError("trailing data after the shared-info page", r.offset)
        except (StreamError, StreamRefused) as e:
            if detection.rule.startswith("R6"):
                raise _with_width_hint(e, detection) from None
            raise
        if detection.note:
            # Once the stream has passed every check: a failure says it in its own line,
            # so stderr keeps one line either way.
            self._note(detection.note)
        return header

    # -- header --

    def _ulong(self, r: StreamReader, layout: Layout, what: str) -> int:
        return int.from_bytes(r.read(layout.ulong_size, what), layout.byte_order)  # type: ignore[arg-type]

    def _header(self, r: StreamReader, detection: Detection) -> StreamHeader:
        xblocks: list[Block] = []
        stream_info = writer = None
        if detection.encoding is fmt.Encoding.NATIVE:
            assert detection.width is not None
            layout = Layout.native_stream(detection.width, detection.byte_order, self._own)
        else:
            r.read(4, "escape")
            if detection.encoding is fmt.Encoding.ESCAPED:
                layout = Layout.clean(8, detection.byte_order)
            else:
                stream_info, writer = self._extended_section(r, xblocks)
                layout = Layout.clean(stream_info["word_size"],
                                      fmt.BYTE_ORDERS[stream_info["byte_order"]])
        r.byte_order = layout.byte_order  # of every integer from here on

        at = r.offset
        p2m_size = self._ulong(r, layout, "p2m_size")
        if not 0 < p2m_size <= fmt.MAX_P2M_SIZE:
            if self._profile == "legacy":
                raise StreamRefused(
                    f"p2m_size {p2m_size:#x} is not valid for this legacy-profile restorer, "
                    f"which reads only native streams of its own {layout.bits}-bit width", at)
            raise StreamError(f"p2m_size {p2m_size:#x} out of range", at)
        if p2m_size > self._max_pages:
            raise StreamRefused(f"p2m_size {p2m_size} pages exceeds this host's cap of "
                                f"{self._max_pages} pages (--max-pages)", at)

        header = StreamHeader(detection, layout, p2m_size, BY_WIDTH[layout.bits], False)
        header.xblocks, header.stream_info, header.writer = xblocks, stream_info, writer
        at = r.offset
        first = self._ulong(r, layout, "ext-info signature or p2m frame list")
        if first == layout.ulong_all_ones:
            header.ext_info = True
            self._ext_info(r, header)
            frames: list[int] = []
        else:
            frames = [first]
        if detection.ext_info is not None and detection.ext_info != header.ext_info:
            raise StreamError("extended info does not match what the first bytes said", at)

        n = -(-p2m_size // header.guest.frames_per_page())
        at = header.frame_list_offset = r.offset - (layout.ulong_size if frames else 0)
        for chunk in r.read_list(max(n - len(frames), 0), layout.ulong_code, "p2m frame list"):
            frames.extend(chunk)
        if max(frames) >= p2m_size:
            bad = next(i for i, p in enumerate(frames) if p >= p2m_size)
            raise StreamError(f"p2m frame list entry {bad} is pfn {frames[bad]:#x}, beyond "
                              f"p2m_size {p2m_size:#x}", at + bad * layout.ulong_size)
        header.frame_list = frames
        return header

    def _extended_section(self, r: StreamReader,
                          blocks: list[Block]) -> tuple[dict[str, int], dict[str, object] | None]:
        stream_info: dict[str, int] | None = None
        writer: dict[str, object] | None = None
        while True:
            at = r.offset
            bid, flags, reserved, length = r.unpack(fmt.XBLOCK, "extended-info block header")
            name = bid.decode("latin-1")
            if len(blocks) >= fmt.MAX_XBLOCKS:
                raise StreamError(f"more than {fmt.MAX_XBLOCKS} extended-info blocks", at)
            if flags & ~fmt.XBLOCK_KNOWN_FLAGS or reserved:
                raise StreamError(f"extended-info block {name!r}: unknown flags or reserved "
                                  "bits set", at)
            if length > fmt.MAX_XBLOCK:
                raise StreamError(f"extended-info block {name!r} of {length} bytes exceeds "
                                  f"{fmt.MAX_XBLOCK}", at)
            blocks.append(Block(name, at, length, flags))
            if not stream_info and bid != fmt.SINF:
                raise StreamError("the extended-info section must start with a sinf block", at)
            payload = r.read(length, f"extended-info block {name!r}")
            if bid == fmt.SINF:
                if stream_info:
                    raise StreamError("a second sinf block", at)
                stream_info = self._stream_info(payload, at)
            elif bid == fmt.XEND:
                if length:
                    raise StreamError("the end block must be empty", at)
                assert stream_info is not None
                return stream_info, writer
            elif bid == fmt.WRITER:
                try:
                    decoded = json.loads(payload)
                except (ValueError, RecursionError):  # optional: undecodable is ignored
                    decoded = None
                # Informational only: keep scalar fields, so nothing nested reaches a
                # report (json.dumps and repr recurse in Python).
                writer = ({str(k): v for k, v in decoded.items()
                           if isinstance(v, str | int | float | bool) or v is None}
                          if isinstance(decoded, dict) else None)
            elif not flags & fmt.XBLOCK_OPTIONAL:
                raise StreamRefused(f"unknown mandatory extended-info block {name!r}", at)

    def _stream_info(self, payload: bytes, at: int) -> dict[str, int]:
        if len(payload) < fmt.SINF_V1.size:
            raise StreamError(f"sinf block of {len(payload)} bytes, need {fmt.SINF_V1.size}", at)
        word, order, version, required, optional, guest = fmt.SINF_V1.unpack_from(payload)
        if word not in (4, 8):
            raise StreamError(f"sinf word size {word}: must be 4 or 8", at)
        if order not in (fmt.BYTE_ORDER_LITTLE, fmt.BYTE_ORDER_BIG):
            raise StreamError(f"sinf byte order {order}: must be 0 (little) or 1 (big)", at)
        if version < fmt.SINF_VERSION:
            raise StreamError(f"sinf version {version}", at)
        if required & ~fmt.REQUIRED_FEATURES_KNOWN:
            raise StreamRefused(f"stream requires unknown features {required:#x}", at)
        if guest != fmt.GUEST_X86_PV:
            raise StreamRefused(f"guest type {guest} is not x86 PV", at)
        return {"word_size": word, "byte_order": order, "version": version,
                "required_features": required, "optional_features": optional,
                "guest_type": guest}

    def _ext_info(self, r: StreamReader, header: StreamHeader) -> None:
        at = r.offset
        (total,) = r.unpack(fmt.U32, "ext-info size")
        if total > fmt.MAX_EXT_INFO:
            raise StreamError(f"ext-info of {total} bytes exceeds {fmt.MAX_EXT_INFO}", at)
        end = r.offset + total
        while r.offset < end:
            at = r.offset
            if end - at < fmt.EXT_BLOCK.size:
                raise StreamError("ext-info block header overruns the ext-info size", at)
            bid, size = r.unpack(fmt.EXT_BLOCK, "ext-info block header")
            name = bid.decode("latin-1")
            if size > end - r.offset:
                raise StreamError(f"ext-info block {name!r} of {size} bytes overruns the "
                                  "ext-info size", at)
            if len(header.ext_blocks) >= MAX_EXT_BLOCKS:
                raise StreamError(f"more than {MAX_EXT_BLOCKS} ext-info blocks", at)
            header.ext_blocks.append(Block(name, at, size))
            payload = r.read(size, f"ext-info block {name!r}")
            if bid == fmt.EXT_VCPU:
                guest = BY_SIZE.get(size)
                if guest is None:
                    raise StreamError(f"vcpu block of {size} bytes: a context is 2800 (32-bit "
                                      "guest) or 5168 (64-bit guest) bytes", at)
                header.guest = guest
                header.vcpu0_block = payload
            elif bid == fmt.EXT_EXTV:
                header.extended_contexts = True
            elif bid == fmt.EXT_XCNT:
                if size != 4:
                    raise StreamError(f"xcnt block of {size} bytes, not 4", at)
                (header.xsave_limit,) = in_order(fmt.U32, r.byte_order).unpack(payload)
                if not fmt.XSAVE_HEADER.size + fmt.XSAVE_BUFFER_HDR.size < header.xsave_limit \
                        <= 1 << 20:
                    raise StreamError(f"xcnt {header.xsave_limit} out of range (16 + Xen's "
                                      "buffer: 16 bytes of xcr0 and xcr0_accum, then the "
                                      "area)", at)
            # Unknown blocks are skipped, as Xen 4.5's restorer does.

    # -- body --

    def _body(self, r: StreamReader, header: StreamHeader, sink: StreamSink) -> list[int]:
        vcpu_ids = [0]
        while True:
            at = r.offset
            (count,) = r.unpack(fmt.I32, "chunk id or batch count")
            if count == fmt.BODY_END:
                return vcpu_ids
            if 0 < count <= fmt.MAX_BATCH:
                sink.on_batch(self._batch(r, header, count, at))
            elif count > fmt.MAX_BATCH:
                raise StreamError(f"batch of {count} pages exceeds {fmt.MAX_BATCH}", at)
            elif count not in fmt.LEGACY_CHUNKS:
                raise StreamError(f"unknown chunk id {count}", at)
            elif not fmt.LEGACY_CHUNKS[count].supported:
                raise StreamRefused("Remus compressed streams are not supported", at)
            else:
                chunk = fmt.LEGACY_CHUNKS[count]
                kind = chunk.payload
                if kind is fmt.Payload.VCPU_INFO:
                    vcpu_ids = self._vcpu_info(r, at, header.layout)
                    sink.on_chunk(at, count, chunk.name, vcpu_ids)
                elif kind is fmt.Payload.TSC_INFO:
                    mode, nsec, khz, incarnation = r.unpack(fmt.TSC_INFO, chunk.name)
                    sink.on_chunk(at, count, chunk.name, TscInfo(mode, nsec, khz, incarnation))
                elif kind is fmt.Payload.TOOLSTACK:
                    sink.on_chunk(at, count, chunk.name, self._toolstack(r, header))
                elif kind is fmt.Payload.NONE:
                    sink.on_chunk(at, count, chunk.name, None)
                else:
                    _pad, value = r.unpack(fmt.HVM_CHUNK, chunk.name)
                    sink.on_chunk(at, count, chunk.name, value)

    def _batch(self, r: StreamReader, header: StreamHeader, count: int, at: int) -> Batch:
        layout = header.layout
        raw = r.read(count * layout.ulong_size, "batch pfn list")
        words = _words("I", raw, layout)
        if layout.ulong_size == 8:
            high = words[1::2] if layout.byte_order == LITTLE else words[0::2]
            if max(high):
                bad = next(i for i, w in enumerate(high) if w)
                raise StreamError(f"batch entry {bad} has bits 63-32 set",
                                  at + 4 + bad * layout.ulong_size)
            words = words[0::2] if layout.byte_order == LITTLE else words[1::2]
        types, pfns = split_batch_words(words)
        if 0 in types.translate(pt.VALID_NIBBLE):
            bad = types.translate(pt.VALID_NIBBLE).index(0)
            raise StreamError(f"batch entry {bad} has unused page type {types[bad]:#x}",
                              at + 4 + bad * layout.ulong_size)
        checked = pfns if pt.XTAB not in types else list(
            itertools.compress(pfns, types.translate(pt.MAPPED)))
        if checked and max(checked) >= header.p2m_size:
            bad = next(i for i, (p, t) in enumerate(zip(pfns, types, strict=True))
                       if t != pt.XTAB and p >= header.p2m_size)
            raise StreamError(f"batch entry {bad}: pfn {pfns[bad]:#x} beyond p2m_size "
                              f"{header.p2m_size:#x}", at + 4 + bad * layout.ulong_size)
        n_data = types.translate(pt.HAS_DATA).count(1)
        data = self._scratch[:n_data * fmt.PAGE_SIZE]
        data_offset = r.offset
        r.readinto(data, "batch page data")
        return Batch(at, pfns, types, data, data_offset)

    def _vcpu_info(self, r: StreamReader, at: int, layout: Layout) -> list[int]:
        (max_id,) = r.unpack(fmt.I32, "vcpu_info max_vcpu_id")
        if not 0 <= max_id <= MAX_VCPU_ID:
            raise StreamError(f"max_vcpu_id {max_id} out of range 0..{MAX_VCPU_ID}", at + 4)
        raw = r.read((max_id // 64 + 1) * 8, "vcpu_info map")
        if layout.byte_order != LITTLE:  # the bit decoding below reads little-endian words
            raw = words.dump(words.load("Q", raw, layout.byte_order), "Q", LITTLE)
        # One 0/1 byte per bit (little-endian bit order), then the set positions: C loops
        # only, as a stream may repeat a 4096-vCPU map thousands of times.
        if raw != self._last_map[0]:  # a repeated map (hostile or not) is decoded once
            bits = b"".join(map(_BITS.__getitem__, raw))
            self._last_map = (raw, list(itertools.compress(range(len(bits)), bits)))
        ids = self._last_map[1][:]
        if not ids or ids[0] != 0:
            raise StreamError("vcpu_info map lacks vCPU 0", at + 8)
        if ids[-1] > max_id:
            raise StreamError(f"vcpu_info map names vCPU {ids[-1]} above max_vcpu_id {max_id}",
                              at + 8)
        return ids

    def _toolstack(self, r: StreamReader, header: StreamHeader
                   ) -> tuple[int, list[PhysmapEntry]]:
        at = r.offset
        (length,) = r.unpack(fmt.U32, "toolstack length")
        if length > fmt.MAX_TOOLSTACK:
            raise StreamError(f"toolstack chunk of {length} bytes exceeds {fmt.MAX_TOOLSTACK}",
                              at)
        data = r.read(length, "toolstack data")
        base = at + 4
        if length < fmt.TOOLSTACK_HEADER.size:
            raise StreamError("toolstack chunk too short", base)
        order = header.layout.byte_order
        version, count = in_order(fmt.TOOLSTACK_HEADER, order).unpack_from(data)
        record = header.layout.physmap_record_size()
        try:
            return version, _physmap(data, count, record, order, base)
        except StreamError:
            # A 32-bit native stream names its width, not its uint64 alignment: i386
            # pads physmap records to 28 bytes, armhf to 32. The one that fits decides.
            if (header.encoding is not fmt.Encoding.NATIVE or header.layout.bits != 32
                    or self._profile == "legacy"):
                raise
            other = 32 if record == 28 else 28
            try:
                entries = _physmap(data, count, other, order, base)
            except StreamError:
                raise StreamError("toolstack chunk fits neither the 28- nor the 32-byte "
                                  "physmap record of a 32-bit toolstack", base) from None
            header.layout = Layout("armhf" if other == 32 else "i386", 4,
                                   8 if other == 32 else 4, order)
            return version, entries

    # -- tail --

    def _tail(self, r: StreamReader, header: StreamHeader, vcpu_ids: list[int],
              sink: StreamSink) -> None:
        at = r.offset
        (count,) = r.unpack(fmt.U32, "unmapped pfn count")
        if count > header.p2m_size:
            raise StreamError(f"{count} unmapped pfns for a p2m_size of {header.p2m_size}", at)
        done = 0
        for chunk in r.read_list(count, header.layout.ulong_code, "unmapped pfn list"):
            if max(chunk) >= header.p2m_size:
                bad = next(i for i, p in enumerate(chunk) if p >= header.p2m_size)
                raise StreamError(f"unmapped pfn {chunk[bad]:#x} beyond p2m_size",
                                  at + 4 + (done + bad) * header.layout.ulong_size)
            sink.on_unmapped(at, chunk.tolist())  # once per chunk: sinks accumulate
            done += len(chunk)
        if not count:
            sink.on_unmapped(at, [])
        for vcpu_id in vcpu_ids:
            at = r.offset
            ctx = r.read(header.guest.size, f"vCPU {vcpu_id} context")
            ext = (r.read(EXTENDED_CONTEXT_SIZE, f"vCPU {vcpu_id} extended context")
                   if header.extended_contexts else None)
            mask, xsave = 0, b""
            if header.xsave_limit:
                xat = r.offset
                mask, size = r.unpack(fmt.XSAVE_HEADER, f"vCPU {vcpu_id} xsave header")
                if size > header.xsave_limit - fmt.XSAVE_HEADER.size:
                    raise StreamError(f"vCPU {vcpu_id} xsave buffer of {size} bytes exceeds "
                                      f"xcnt", xat + 8)
                xsave = r.read(size, f"vCPU {vcpu_id} xsave buffer")
                if size:  # 0: a vCPU that never used xsave
                    _check_xsave_buffer(vcpu_id, mask, xsave, xat + 16)
            sink.on_vcpu(at, vcpu_id, ctx, ext, mask, xsave)
        at = r.offset
        sink.on_shared_info(at, r.read(fmt.PAGE_SIZE, "shared info"))


def _check_xsave_buffer(vcpu_id: int, mask: int, xsave: bytes, at: int) -> None:
    """Xen's buffer starts with xcr0 and xcr0_accum, and the hypervisor keeps x87 in xcr0,
    xcr0 within xcr0_accum and xcr0_accum within the host's mask. xsmig before the buffer
    was Xen's (issue 15) wrote the area alone after the same xfeature_mask/size header: its area's
    first 16 bytes fail these rules (docs/stream-format.md, "The xsave buffer"), and
    such a stream is refused, naming the cause, rather than restored with a wrong xcr0."""
    if len(xsave) > fmt.XSAVE_BUFFER_HDR.size:
        xcr0, accum = fmt.XSAVE_BUFFER_HDR.unpack_from(xsave)
        if xcr0 & fmt.XCR0_X87 and not xcr0 & ~accum and not accum & ~mask:
            return
        what = (f"xcr0 {xcr0:#x}, xcr0_accum {accum:#x}, xfeature_mask {mask:#x}: not x87 "
                "in xcr0 within xcr0_accum within the host's mask")
    else:
        what = f"{len(xsave)} bytes, no room for xcr0, xcr0_accum and an area"
    raise StreamRefused(f"vCPU {vcpu_id} xsave buffer is not Xen's ({what}); earlier xsmig "
                        "versions wrote the xsave area without its 16-byte xcr0/xcr0_accum "
                        "header, and such streams are not read: save the domain again with this "
                        "version", at)


def parse_toolstack(data: bytes, layout: Layout, base: int) -> tuple[int, list[PhysmapEntry]]:
    """libxl's toolstack data (stream offset `base`), its records padded as `layout` pads."""
    if len(data) < fmt.TOOLSTACK_HEADER.size:
        raise StreamError("toolstack chunk too short", base)
    order = layout.byte_order
    version, count = in_order(fmt.TOOLSTACK_HEADER, order).unpack_from(data)
    return version, _physmap(data, count, layout.physmap_record_size(), order, base)


_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))  # bytes.translate tables
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))
_TOP = 3 if sys.byteorder == LITTLE else 0  # the most significant byte of a host u32


def split_batch_words(words: array[int]) -> tuple[bytes, list[int]]:
    """A legacy batch's 32-bit words (host order) -> (type nibble of each, pfn of each):
    the type is the top byte's high nibble, so byte slices and translate tables split
    them in C, as v2reader.split_pfn_words does; no Python loop over the words."""
    raw = bytearray(words.tobytes())
    top = bytes(raw[_TOP::4])
    raw[_TOP::4] = top.translate(_LOW_NIBBLE)
    pfns = array("I")
    pfns.frombytes(raw)
    return top.translate(_HIGH_NIBBLE), pfns.tolist()


def _words(code: str, raw: bytes, layout: Layout) -> array[int]:
    """An array of the stream's integers, in the running host's order."""
    return words.load(code, raw, layout.byte_order)


def _physmap(data: bytes, count: int, record: int, order: str, base: int
             ) -> list[PhysmapEntry]:
    fields = in_order(fmt.PHYSMAP_FIELDS, order)
    length = len(data)
    pos = fmt.TOOLSTACK_HEADER.size
    entries = []
    for i in range(count):
        if pos + record > length:
            raise StreamError(f"toolstack physmap entry {i} overruns the chunk", base + pos)
        phys, start, size, namelen = fields.unpack_from(data, pos)
        if namelen > fmt.MAX_PHYSMAP_NAME or pos + record + namelen > length:
            raise StreamError(f"toolstack physmap entry {i}: bad name length {namelen}",
                              base + pos + 24)
        name_at = pos + fields.size  # the name starts at offset 28 on any ABI
        entries.append(PhysmapEntry(phys, start, size, data[name_at:name_at + namelen]))
        pos += record + namelen
    if pos != length:
        raise StreamError(f"toolstack chunk has {length - pos} bytes after its entries "
                          "(wrong ABI?)", base + pos)
    return entries
