"""`xsmig convert`: any encoding to any other, streaming, guest state unchanged.

The parser of the source (the one restore uses, with the same detection) feeds a sink
that hands each piece to the target's encoder (stream/emit.py, stream/v2writer.py).
Pages, vCPU contexts and shared info are already canonical in every encoding (pfns,
never machine frames), so they pass through byte for byte; only the framing changes.
Memory stays at one batch buffer; a legacy target from a v2 source spools its body to
an unnamed temporary file, because the legacy header needs vCPU 0's context, which v2
sends last. Signals that restore ignores (verify mode, checkpoints, HVM-only chunks,
CPU policies, unknown optional records) are not carried over.

convert is a function on domains: every event also goes to verify's sink (restore's
own checks, xsmig.verify.VerifySink), so convert refuses exactly what restore refuses,
and the target says what restoring the source would give. Holes are written once,
when the body ends, as the pfns whose *final* state is a hole: a v2 source may mark a
pfn unmapped and send it with data later (or the reverse), and a legacy target can
only say "hole" in its tail, which a restorer applies last."""

from __future__ import annotations

import itertools
from typing import BinaryIO, NamedTuple

from xsmig import pagetypes as pt
from xsmig.domain import DomainDir, TscInfo
from xsmig.errors import StreamRefused
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.emit import LegacyEmitter, StreamStart
from xsmig.stream.io import CountingReader
from xsmig.stream.reader import Batch, StreamHeader, StreamParser
from xsmig.stream.v2writer import V2Emitter
from xsmig.stream.writer import make_emitter
from xsmig.verify import VerifySink, remove_scratch, scratch_dir


class ConvertStats(NamedTuple):
    source: fmt.Encoding
    target: fmt.Encoding
    bytes_in: int
    bytes_out: int


class ConvertSink:
    def __init__(self, emitter: LegacyEmitter | V2Emitter, check: VerifySink,
                 expect: fmt.Encoding | None = None) -> None:
        self.emitter = emitter
        self.check = check
        self.expect = expect
        self.header: StreamHeader | None = None
        self._vcpus_started = False
        self._body_done = False
        self._announced = bytearray()  # 1: some record said "hole" for this pfn

    def on_header(self, header: StreamHeader) -> None:
        if self.expect is not None and header.encoding is not self.expect:
            raise StreamRefused(f"the stream is {header.encoding.value} "
                                f"({header.detection.rule}), not {self.expect.value} (--from)", 0)
        self.check.on_header(header)
        self.header = header
        self._announced = bytearray(header.p2m_size)
        legacy_vcpu0 = header.vcpu0_block if header.encoding in fmt.LEGACY_ENCODINGS else None
        if isinstance(self.emitter, V2Emitter):  # libxl's header marks converted streams
            self.emitter.converted = legacy_vcpu0 is not None
        self.emitter.begin(StreamStart(header.p2m_size, header.guest, header.frame_list,
                                       header.extended_contexts,
                                       max(header.xsave_limit - 16, 0), legacy_vcpu0))

    def on_batch(self, batch: Batch) -> None:
        # XTAB entries carry no data; holes reach the target through on_unmapped (legacy
        # batches give them no pfn at all).
        if pt.XTAB in batch.types:
            keep = [i for i, t in enumerate(batch.types) if t != pt.XTAB]
            self.emitter.pages([batch.pfns[i] for i in keep],
                               bytes(batch.types[i] for i in keep), batch.data)
        else:
            self.emitter.pages(batch.pfns, batch.types, batch.data)
        # After the pages are written out: the check rewrites page tables in place.
        self.check.on_batch(batch)

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        self.check.on_chunk(offset, chunk_id, name, value)
        if name == fmt.EV_VCPU_INFO:
            assert isinstance(value, list)
            self.emitter.vcpu_ids(value)
        elif name == fmt.EV_TSC_INFO:
            assert isinstance(value, TscInfo)
            self.emitter.tsc(value)
        elif name == fmt.EV_TOOLSTACK:
            assert isinstance(value, tuple)
            self.emitter.toolstack(*value)
        elif name == fmt.EV_VCPU_MSRS:
            raise StreamRefused("the stream carries vCPU MSRs, which xsmig's encodings do "
                                "not keep", offset)

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        self.check.on_unmapped(offset, pfns)
        announced = self._announced
        for pfn in pfns:
            announced[pfn] = 1

    def _end_body(self) -> None:
        """The holes, once: pfns some record called a hole and that are holes now."""
        if self._body_done:
            return
        self._body_done = True
        final = self.check.types.translate(pt.UNMAPPED)  # 1 where the pfn is a hole now
        size = len(final)
        hole = (int.from_bytes(self._announced, "little") & int.from_bytes(final, "little")
                ).to_bytes(size, "little")  # C-level AND of two 0/1 byte strings
        self.emitter.holes(list(itertools.compress(range(len(hole)), hole)))

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        self.check.on_vcpu(offset, vcpu_id, ctx, ext, xsave_mask, xsave)
        self._end_body()
        if not self._vcpus_started:
            # A v2 source knows the extended state only now: tell the encoder before it
            # writes a legacy header.
            self._vcpus_started = True
            header, start = self.header, self.emitter.start
            assert header is not None and start is not None
            start.extended_contexts = header.extended_contexts
            start.xsave_size = max(header.xsave_limit - 16, 0)
        self.emitter.vcpu(vcpu_id, ctx, ext, xsave_mask, xsave)

    def on_shared_info(self, offset: int, data: bytes) -> None:
        self.check.on_shared_info(offset, data)
        self._end_body()
        self.emitter.shared_info(data)


def convert(source: BinaryIO, out: BinaryIO, target: fmt.Encoding, *, abi: Layout,
            word_size: int | None = None, source_width: int | None = None,
            expect: fmt.Encoding | None = None, own: Layout | None = None,
            source_byte_order: str | None = None,
            max_pages: int = fmt.MAX_P2M_SIZE,
            v2_format: fmt.V2Format = fmt.V2Format.LIBXL) -> ConvertStats:
    """Read any stream from `source`, write it to `out` in `target` (legacy targets with
    the ABI `abi`, extended with `word_size` if given; v2 in `v2_format`'s framing).
    Raises what restore would raise for the same input, before the last bytes are
    written."""
    emitter = make_emitter(out, target, abi, word_size=word_size,
                           xen_version=fmt.V2_CONVERTER_VERSION, v2_format=v2_format)
    counting = CountingReader(source)
    scratch = scratch_dir("xsmig-convert-")
    check = VerifySink(DomainDir(scratch / "domain"))
    sink = ConvertSink(emitter, check, expect)
    try:
        header = StreamParser(counting, own=own, source_width=source_width,  # type: ignore[arg-type]
                              source_byte_order=source_byte_order,
                              max_pages=max_pages).parse(sink)
        check.finish()  # restore's verdict on the whole domain, before END is written
    finally:
        check.close()
        remove_scratch(scratch)
    emitter.end()
    return ConvertStats(header.encoding, target, counting.count, emitter.offset)
