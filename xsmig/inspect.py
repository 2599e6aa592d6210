"""Decode a stream without restoring it: what `xsmig inspect` prints."""

from __future__ import annotations

from collections import Counter
from typing import Any, BinaryIO

from xsmig import pagetypes as pt
from xsmig.domain import TscInfo
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.io import CountingReader
from xsmig.stream.reader import Batch, StreamHeader, StreamParser

MAX_LISTED = 64


class InspectSink:
    def __init__(self, max_chunks: int = 200) -> None:
        self.header: StreamHeader | None = None
        self.chunks: list[dict[str, Any]] = []
        self.max_chunks = max_chunks
        self.omitted = 0
        self.page_types: Counter[str] = Counter()
        self.batches = 0
        self.pages_with_data = 0
        self.tail: dict[str, Any] = {"vcpus": []}

    def _chunk(self, entry: dict[str, Any]) -> None:
        if len(self.chunks) < self.max_chunks:
            self.chunks.append(entry)
        else:
            self.omitted += 1

    def on_header(self, header: StreamHeader) -> None:
        self.header = header

    def on_batch(self, batch: Batch) -> None:
        counts = Counter(pt.type_name(t) for t in batch.types)
        self.page_types.update(counts)
        self.batches += 1
        with_data = len(batch.data) // 4096
        self.pages_with_data += with_data
        self._chunk({"offset": batch.offset, "kind": "batch", "count": len(batch.pfns),
                     "pages_with_data": with_data, "types": dict(sorted(counts.items()))})

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        entry: dict[str, Any] = {"offset": offset, "kind": name, "id": chunk_id}
        if name == fmt.EV_VCPU_INFO:
            assert isinstance(value, list)
            entry["vcpus"] = len(value)
            entry["vcpu_ids"] = value[:MAX_LISTED]  # a report stays small whatever the map
        elif name == fmt.EV_TSC_INFO:
            assert isinstance(value, TscInfo)
            entry["tsc"] = value._asdict()
        elif name == fmt.EV_TOOLSTACK:
            assert isinstance(value, tuple)
            entry["toolstack_version"] = value[0]
            entry["physmap"] = [p.to_json() | {"name": p.name.rstrip(b"\0").decode("latin-1")}
                                for p in value[1]]
        elif value is not None:
            entry["value"] = value
        self._chunk(entry)

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        # Legacy: once per chunk of the tail's list; v2: XTAB entries of PAGE_DATA records.
        if not (self.header and self.header.encoding is fmt.Encoding.V2):
            self.tail.setdefault("offset", offset)
        self.tail["unmapped_pfns"] = self.tail.get("unmapped_pfns", 0) + len(pfns)

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        self.tail["vcpus"].append({"id": vcpu_id, "offset": offset, "context": len(ctx),
                                   "extended": len(ext or b""), "xsave": len(xsave)})

    def on_shared_info(self, offset: int, data: bytes) -> None:
        self.tail["shared_info_offset"] = offset

    def report(self, total: int) -> dict[str, Any]:
        h = self.header
        assert h is not None
        return {
            "encoding": h.encoding.value,
            "word_size": h.layout.ulong_size,
            "toolstack_width": h.layout.bits,
            "byte_order": h.layout.byte_order,
            "detection": h.detection.rule,
            "stream_info": h.stream_info,
            "v2": h.v2,
            "writer": h.writer,
            "extended_info_section": [b._asdict() for b in h.xblocks],
            "p2m_size": h.p2m_size,
            "guest_width": h.guest.guest_width,
            "ext_info": h.ext_info,
            "ext_blocks": [b._asdict() for b in h.ext_blocks],
            "extended_contexts": h.extended_contexts,
            "xsave_limit": h.xsave_limit,
            "p2m_frame_list": len(h.frame_list),
            "batches": self.batches,
            "pages_by_type": dict(sorted(self.page_types.items())),
            "pages_with_data": self.pages_with_data,
            "chunks": self.chunks,
            "chunks_omitted": self.omitted,
            "tail": self.tail,
            "bytes": total,
        }


def inspect_stream(f: BinaryIO, *, profile: str = "current", source_width: int | None = None,
                   source_byte_order: str | None = None,
                   own: Layout | None = None) -> dict[str, Any]:
    counting = CountingReader(f)
    sink = InspectSink()
    StreamParser(counting, profile=profile, own=own,  # type: ignore[arg-type]
                 source_width=source_width, source_byte_order=source_byte_order).parse(sink)
    return sink.report(counting.count)


def render_text(report: dict[str, Any]) -> str:
    lines = [f"encoding      {report['encoding']} ({report['detection']})"]
    if report.get("v2"):
        v2 = report["v2"]
        lines.append("word size     none: v2 fields have fixed widths")
        if v2.get("framing") == "libxl":
            lines.append(f"libxl header  version {v2['libxl_version']}, options "
                         f"{v2['libxl_options']:#x} (the libxc stream inside LIBXC_CONTEXT)")
        else:
            lines.append("framing       bare libxc stream")
        if v2.get("xl"):
            xl = v2["xl"]
            lines.append(f"xl header     mandatory flags {xl['mandatory_flags']:#x}, config "
                         f"{xl['config_bytes']} bytes")
        lines.append(f"v2 headers    version {v2['version']}, options {v2['options']:#x}, "
                     f"domain type {v2['domain_type']}, page_shift {v2['page_shift']}, "
                     f"Xen {v2['xen_major']}.{v2['xen_minor']}")
    else:
        lines.append(f"word size     {report['word_size']} bytes ({report['toolstack_width']}-bit "
                     f"ulongs, {report.get('byte_order', 'little')}-endian)")
    if report["stream_info"]:
        lines.append(f"stream info   {report['stream_info']}")
    if report["writer"]:
        lines.append(f"writer        {report['writer']}")
    for b in report["extended_info_section"]:
        lines.append(f"  xblock {b['id']!r:8} at {b['offset']:>8}  {b['size']} bytes "
                     f"flags {b['flags']:#x}")
    lines += [
        f"p2m_size      {report['p2m_size']} pages",
        f"guest width   {report['guest_width']}-bit",
        f"ext-info      {'yes' if report['ext_info'] else 'no'}",
    ]
    for b in report["ext_blocks"]:
        lines.append(f"  block {b['id']!r:8} at {b['offset']:>8}  {b['size']} bytes")
    lines += [
        f"p2m frames    {report['p2m_frame_list']}",
        f"batches       {report['batches']}, {report['pages_with_data']} pages with data",
        "pages         " + ", ".join(f"{k} {v}" for k, v in report["pages_by_type"].items()),
        "chunks:",
    ]
    for c in report["chunks"]:
        extra = {k: v for k, v in c.items() if k not in ("offset", "kind")}
        lines.append(f"  {c['offset']:>10}  {c['kind']:<20} {extra}")
    if report["chunks_omitted"]:
        lines.append(f"  ... {report['chunks_omitted']} more")
    tail = report["tail"]
    where = f"tail at {tail.get('offset')}" if report.get("v2") is None else "records"
    lines.append(f"{where}: {tail.get('unmapped_pfns', 0)} unmapped pfns, "
                 f"{len(tail['vcpus'])} vCPUs, shared info at {tail.get('shared_info_offset')}")
    lines.append(f"total         {report['bytes']} bytes")
    return "\n".join(lines)
