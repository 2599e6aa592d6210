"""`xsmig verify`: check a stream without restoring it.

The same parser as restore (so every structural check, bound and order rule is the
one restore applies, in every encoding), feeding a checking sink that repeats what the
restore sink checks about the domain without writing anything: page-table entries name
pfns inside the p2m, vCPU frame fields name pages of the right type, the p2m frame list
names plain pages. Memory: one batch buffer and a byte per pfn, as restore."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from xsmig import pagetypes as pt
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.io import CountingReader
from xsmig.stream.reader import (
    Batch,
    StreamHeader,
    StreamParser,
    record_types,
    rewrite_tables,
)
from xsmig.validate import check_vcpu_pfn, first_hole, hole_message
from xsmig.vcpu import FrameField, FrameFieldError, rewrite_frames


class VerifySink:
    """restore's parser with a sink that checks and counts, and writes nothing."""

    def __init__(self) -> None:
        self.header: StreamHeader | None = None
        self.types = bytearray()
        self.batches = 0
        self.pages_with_data = 0
        self.vcpus: list[int] = []
        self.warnings: list[str] = []
        # Page tables are checked against the final page types at the end, as restore
        # checks the domain it built: their pages wait in an unnamed spool file (disk in
        # proportion to the stream's page tables, as restore's is to the whole domain).
        self.pt_pages: dict[int, tuple[int, int]] = {}  # pfn -> (spool offset, stream offset)
        self.spool: BinaryIO | None = None

    def on_header(self, header: StreamHeader) -> None:
        self.header = header
        self.types = bytearray([pt.XTAB]) * header.p2m_size

    def _pfns_in_range(self, pfns: list[int]) -> list[int]:
        assert self.header
        size = self.header.p2m_size
        return [p if p < size else -1 for p in pfns]

    def on_batch(self, batch: Batch) -> None:
        assert self.header
        self.batches += 1
        data_pfns = record_types(batch, self.types)
        self.pages_with_data += len(data_pfns)
        levels = self.header.guest.pt_levels
        # identity rewrite: checks every present entry, changes nothing
        for pfn, page, offset in rewrite_tables(batch, self.types, data_pfns, levels,
                                                self._pfns_in_range):
            self._keep(pfn, page, offset)

    def _keep(self, pfn: int, page: memoryview, offset: int) -> None:
        if self.spool is None:
            import tempfile  # only streams with page tables need it: not at start-up
            self.spool = tempfile.TemporaryFile(prefix="xsmig-verify-")  # noqa: SIM115
        self.spool.seek(0, 2)
        self.pt_pages[pfn] = (self.spool.tell(), offset)
        self.spool.write(page)

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        if name == fmt.EV_VCPU_MSRS:
            self.warnings.append(f"byte {offset}: vCPU MSRs (valid; xsmig restore refuses "
                                 "them, its hosts keep no MSRs)")
        elif isinstance(value, dict) and "skipped" in value:
            self.warnings.append(f"byte {offset}: {name} of {value['skipped']} bytes skipped")

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        for pfn in pfns:
            self.types[pfn] = pt.XTAB

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        assert self.header
        self.vcpus.append(vcpu_id)
        try:
            rewrite_frames(self.header.guest, bytearray(ctx), vcpu_id, self._frame(vcpu_id))
        except FrameFieldError as e:
            raise StreamError(str(e), offset) from None

    def _frame(self, vcpu_id: int) -> Callable[[int, FrameField], int]:
        assert self.header
        p2m, vl = self.header.p2m_size, self.header.guest

        def check(pfn: int, f: FrameField) -> int:
            if pfn >= p2m:  # restore's own words and rule (xsmig.validate)
                raise FrameFieldError(f"vCPU {vcpu_id} {f.name} names pfn {pfn:#x}, "
                                      f"beyond p2m_size {p2m:#x}")
            return check_vcpu_pfn(vl, self.types, vcpu_id, pfn, f, pfn)
        return check

    def on_shared_info(self, offset: int, data: bytes) -> None:
        pass

    def finish(self) -> None:
        assert self.header
        for index, pfn in enumerate(self.header.frame_list):
            if self.types[pfn] != pt.NOTAB:
                raise StreamError(f"p2m frame list entry {index} names pfn {pfn:#x} of type "
                                  f"{pt.type_name(self.types[pfn])}, not a plain page")
        self._check_page_tables()

    def _check_page_tables(self) -> None:
        """restore's check of the domain it built (validate.first_hole), on the stream:
        every entry of every final page table maps a page that is not a hole."""
        assert self.header
        page = memoryview(bytearray(fmt.PAGE_SIZE))
        for match in pt.PAGETABLE.finditer(self.types):
            pfn = match.start()
            spool_at, stream_at = self.pt_pages[pfn]  # a page-table type comes with data
            assert self.spool
            self.spool.seek(spool_at)
            self.spool.readinto(page)  # type: ignore[attr-defined]
            hit = first_hole(page, pt.pt_level(self.types[pfn]), self.header.guest.pt_levels,
                             self._pfns_in_range, self.types)
            if hit:
                entry, target = hit
                raise StreamError("restored domain would be invalid: "
                                  + hole_message(pfn, entry, f"pfn {target:#x}"),
                                  stream_at + 8 * entry)

    def close(self) -> None:
        if self.spool:
            self.spool.close()


def verify_stream(f: BinaryIO, *, source_width: int | None = None, own: Layout | None = None,
                  profile: str = "current", source_byte_order: str | None = None
                  ) -> dict[str, Any]:
    """A verdict as data: {"valid": bool, ...}; never raises for a bad stream."""
    counting = CountingReader(f)
    sink = VerifySink()
    notes: list[str] = []
    report: dict[str, Any] = {"valid": False, "warnings": sink.warnings, "notes": notes}
    try:
        header = StreamParser(counting, profile=profile, own=own,  # type: ignore[arg-type]
                              source_width=source_width, note=notes.append,
                              source_byte_order=source_byte_order,
                              lenient=sink.warnings.append).parse(sink)
        sink.finish()
    except (StreamError, StreamRefused) as e:
        sink.close()
        kind = "malformed" if isinstance(e, StreamError) else "refused"
        report["error"] = {"kind": kind, "message": str(e), "offset": e.offset,
                           "exit_code": e.exit_code}
        if sink.header:
            report.update(_summary(sink.header, sink))
        return report
    sink.close()
    report["valid"] = True
    report.update(_summary(header, sink))
    report["bytes"] = counting.count
    return report


def _summary(header: StreamHeader, sink: VerifySink) -> dict[str, Any]:
    return {"encoding": header.encoding.value, "detection": header.detection.rule,
            "v2": header.v2, "guest_width": header.guest.guest_width,
            "p2m_size": header.p2m_size, "batches": sink.batches,
            "pages_with_data": sink.pages_with_data, "vcpus": sink.vcpus,
            "extended_contexts": header.extended_contexts,
            "xsave_area": max(header.xsave_limit - fmt.XSAVE_RECORD_HDR, 0)}


def render(report: dict[str, Any]) -> str:
    if not report["valid"]:
        return f"invalid stream: {report['error']['message']}"
    return (f"valid {report['encoding']} stream ({report['detection']}): "
            f"{report['guest_width']}-bit guest, {report['p2m_size']} pages "
            f"({report['pages_with_data']} with data) in {report['batches']} batches, "
            f"vCPUs {_ids(report['vcpus'])}, {report['bytes']} bytes")


def _ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids) if len(ids) <= 8 else f"{len(ids)} (0..{ids[-1]})"
