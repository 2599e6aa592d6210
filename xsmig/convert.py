"""`xsmig convert`: any encoding to any other, streaming, guest state unchanged.

The parser of the source (the one restore uses, with the same detection) feeds a sink
that hands each piece to the target's encoder (stream/emit.py, stream/v2writer.py).
Pages, vCPU contexts and shared info are already canonical in every encoding (pfns,
never machine frames), so they pass through byte for byte; only the framing changes.
Memory stays at one batch buffer; a legacy target from a v2 source spools its body to
an unnamed temporary file, because the legacy header needs vCPU 0's context, which v2
sends last. Signals that restore ignores (verify mode, checkpoints, HVM-only chunks,
CPU policies, unknown optional records) are not carried over."""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

from xsmig import pagetypes as pt
from xsmig.domain import TscInfo
from xsmig.errors import StreamRefused
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.emit import LegacyEmitter, StreamStart
from xsmig.stream.io import CountingReader
from xsmig.stream.reader import Batch, StreamHeader, StreamParser
from xsmig.stream.v2writer import V2Emitter
from xsmig.stream.writer import make_emitter


class ConvertStats(NamedTuple):
    source: fmt.Encoding
    target: fmt.Encoding
    bytes_in: int
    bytes_out: int


class ConvertSink:
    def __init__(self, emitter: LegacyEmitter | V2Emitter,
                 expect: fmt.Encoding | None = None) -> None:
        self.emitter = emitter
        self.expect = expect
        self.header: StreamHeader | None = None
        self._vcpus_started = False

    def on_header(self, header: StreamHeader) -> None:
        if self.expect is not None and header.encoding is not self.expect:
            raise StreamRefused(f"the stream is {header.encoding.value} "
                                f"({header.detection.rule}), not {self.expect.value} (--from)", 0)
        self.header = header
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

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
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
        self.emitter.holes(pfns)

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
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
        self.emitter.shared_info(data)


def convert(source: BinaryIO, out: BinaryIO, target: fmt.Encoding, *, abi: Layout,
            word_size: int | None = None, source_width: int | None = None,
            expect: fmt.Encoding | None = None, own: Layout | None = None,
            source_byte_order: str | None = None,
            v2_format: fmt.V2Format = fmt.V2Format.LIBXL) -> ConvertStats:
    """Read any stream from `source`, write it to `out` in `target` (legacy targets with
    the ABI `abi`, extended with `word_size` if given; v2 in `v2_format`'s framing)."""
    emitter = make_emitter(out, target, abi, word_size=word_size,
                           xen_version=fmt.V2_CONVERTER_VERSION, v2_format=v2_format)
    counting = CountingReader(source)
    sink = ConvertSink(emitter, expect)
    header = StreamParser(counting, own=own, source_width=source_width,  # type: ignore[arg-type]
                          source_byte_order=source_byte_order).parse(sink)
    emitter.end()
    return ConvertStats(header.encoding, target, counting.count, emitter.offset)
