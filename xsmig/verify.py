"""`xsmig verify`: check a stream without publishing anything.

verify is restore without the publication: the same parser (same detection, bounds,
order rules, --max-pages) feeding restore's own sink (xsmig.restore.RestoreSink) into a
private scratch directory, then the same final check (RestoreSink.finish, i.e.
xsmig.validate). So for every input verify and restore give the same verdict, the same
message and the same byte offset, by construction rather than by a second copy of
the rules. Only page-table pages are written to the scratch directory (the validator
reads no other page), with the vCPU state and the sparse memory file restore writes:
memory is one batch buffer and a byte per pfn, disk follows the stream's page tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from xsmig.domain import PAGE_SIZE, DomainDir
from xsmig.errors import StateError, StreamError, StreamRefused
from xsmig.layout import Layout
from xsmig.restore import RestoreSink
from xsmig.stream import format as fmt
from xsmig.stream.io import CountingReader
from xsmig.stream.reader import Batch, StreamHeader, StreamParser, record_types, rewrite_tables

MAX_WARNINGS = 64  # kept in the verdict; the rest are only counted


class VerifySink(RestoreSink):
    """restore's sink, writing only what restore's final check reads, and counting."""

    def __init__(self, domain: DomainDir) -> None:
        super().__init__(domain, "verify", 0)
        self.batches = 0
        self.pages_with_data = 0
        self.vcpus: list[int] = []
        self.warnings: list[str] = []
        self.warnings_total = 0

    def warn(self, text: str) -> None:
        self.warnings_total += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)

    def on_batch(self, batch: Batch) -> None:
        assert self.header and self.memory and self.frames
        self.batches += 1
        data_pfns = record_types(batch, self.types)
        self.pages_with_data += len(data_pfns)
        for pfn, page, offset in rewrite_tables(batch, self.types, data_pfns,
                                                self.header.guest.pt_levels, self._to_mfns):
            self.pt_offsets[pfn] = offset
            self.memory.seek(pfn * PAGE_SIZE)
            self.memory.write(page)

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        super().on_chunk(offset, chunk_id, name, value)
        if isinstance(value, dict) and "skipped" in value:
            if len(self.warnings) >= MAX_WARNINGS:  # counted only: no text to build
                self.warnings_total += 1
                return
            self.warn(f"byte {offset}: {name} of {value['skipped']} bytes skipped")

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        super().on_vcpu(offset, vcpu_id, ctx, ext, xsave_mask, xsave)
        self.vcpus.append(vcpu_id)


def scratch_dir(prefix: str) -> Path:
    import tempfile  # only when a stream is checked: not at start-up
    try:
        return Path(tempfile.mkdtemp(prefix=prefix))
    except OSError as e:
        raise StateError(f"cannot make a scratch directory in {tempfile.gettempdir()}: "
                         f"{e.strerror or e}") from None


def remove_scratch(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def verify_stream(f: BinaryIO, *, source_width: int | None = None, own: Layout | None = None,
                  profile: str = "current", source_byte_order: str | None = None,
                  max_pages: int = fmt.MAX_P2M_SIZE) -> dict[str, Any]:
    """A verdict as data: {"valid": bool, ...}; never raises for a bad stream (only a
    StateError for the system: a stalled input, no scratch space)."""
    counting = CountingReader(f)
    notes: list[str] = []
    scratch = scratch_dir("xsmig-verify-")
    sink = VerifySink(DomainDir(scratch / "domain"))
    report: dict[str, Any] = {"valid": False, "warnings": sink.warnings, "notes": notes}
    try:
        header = StreamParser(counting, profile=profile, own=own,  # type: ignore[arg-type]
                              source_width=source_width, note=notes.append,
                              source_byte_order=source_byte_order,
                              max_pages=max_pages).parse(sink)
        sink.finish()
    except (StreamError, StreamRefused) as e:
        kind = "malformed" if isinstance(e, StreamError) else "refused"
        report["error"] = {"kind": kind, "message": str(e), "offset": e.offset,
                           "exit_code": e.exit_code}
        if sink.header:
            report.update(_summary(sink.header, sink))
        return report
    except OSError as e:
        raise StateError(f"cannot verify: scratch directory {scratch}: "
                         f"{e.strerror or e}") from None
    finally:
        sink.close()
        remove_scratch(scratch)
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
            "xsave_area": max(header.xsave_limit - fmt.XSAVE_RECORD_HDR, 0),
            "warnings_total": sink.warnings_total}


def render(report: dict[str, Any]) -> str:
    if not report["valid"]:
        return f"invalid stream: {report['error']['message']}"
    return (f"valid {report['encoding']} stream ({report['detection']}): "
            f"{report['guest_width']}-bit guest, {report['p2m_size']} pages "
            f"({report['pages_with_data']} with data) in {report['batches']} batches, "
            f"vCPUs {_ids(report['vcpus'])}, {report['bytes']} bytes")


def _ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids) if len(ids) <= 8 else f"{len(ids)} (0..{ids[-1]})"



