"""The v2 encoder (Xen's migration stream v2/v3 for an x86 PV guest).

Order written, as Xen's PV saver does: image header, domain header, X86_PV_INFO,
STATIC_DATA_END, X86_PV_P2M_FRAMES, PAGE_DATA*, X86_TSC_INFO, XSMIG_TOOLSTACK, then per
vCPU BASIC [EXTENDED] [XSAVE], SHARED_INFO, END. Every record is padded to 8 bytes."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import BinaryIO

from xsmig import pagetypes as pt
from xsmig import words
from xsmig.domain import PhysmapEntry, TscInfo
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.emit import StreamStart, toolstack_payload
from xsmig.stream.io import StreamWriter
from xsmig.vcpu import EXTENDED_CONTEXT_SIZE

_PAD = bytes(fmt.V2_ALIGN)


class V2Emitter:
    tail_holes = False  # holes are XTAB entries of PAGE_DATA records

    def __init__(self, out: BinaryIO, *, xen_version: tuple[int, int] = fmt.V2_XEN_VERSION
                 ) -> None:
        self.out = StreamWriter(out)
        self.xen_version = xen_version
        self.start: StreamStart | None = None

    @property
    def offset(self) -> int:
        return self.out.offset

    def record(self, rtype: int, *parts: bytes | bytearray | memoryview) -> None:
        length = sum(len(p) for p in parts)
        self.out.pack(fmt.V2_RHDR, rtype, length)
        for part in parts:
            self.out.write(part)
        pad = fmt.v2_padding(length)
        if pad:
            self.out.write(_PAD[:pad])

    def begin(self, start: StreamStart) -> None:
        self.start = start
        out = self.out
        out.pack(fmt.V2_IHDR, fmt.V2_MARKER, fmt.V2_ID, fmt.V2_VERSION, 0, 0, 0)
        out.pack(fmt.V2_DHDR, fmt.V2_DOMAIN_X86_PV, fmt.V2_PAGE_SHIFT, 0, *self.xen_version)
        guest = start.guest
        self.record(fmt.REC_X86_PV_INFO,
                    fmt.V2_PV_INFO.pack(guest.word_size, guest.pt_levels, 0, 0))
        self.record(fmt.REC_STATIC_DATA_END)
        frames = struct.pack(f"<{len(start.frame_list)}Q", *start.frame_list)
        self.record(fmt.REC_X86_PV_P2M_FRAMES,
                    fmt.V2_P2M_FRAMES_HDR.pack(0, start.p2m_size - 1), frames)

    def pages(self, pfns: Sequence[int], types: bytes, data: memoryview) -> None:
        if not pfns:
            return  # count is strictly > 0
        entries = [(t << fmt.V2_TYPE_SHIFT) | p for p, t in zip(pfns, types, strict=True)]
        self.record(fmt.REC_PAGE_DATA, fmt.V2_PAGE_DATA_HDR.pack(len(pfns), 0),
                    words.dump(entries, "Q"), data)

    def holes(self, pfns: Sequence[int]) -> None:
        for i in range(0, len(pfns), fmt.MAX_BATCH):
            chunk = pfns[i:i + fmt.MAX_BATCH]
            self.pages(chunk, bytes([pt.XTAB]) * len(chunk), memoryview(b""))

    def vcpu_ids(self, ids: list[int]) -> None:
        pass  # implied: a vCPU is online when it has an X86_PV_VCPU_BASIC record

    def tsc(self, tsc: TscInfo) -> None:
        self.record(fmt.REC_X86_TSC_INFO,
                    fmt.V2_TSC_INFO.pack(tsc.mode, tsc.khz, tsc.nsec, tsc.incarnation, 0))

    def toolstack(self, version: int, physmap: Sequence[PhysmapEntry]) -> None:
        self.record(fmt.REC_XSMIG_TOOLSTACK,
                    toolstack_payload(Layout.clean(8), version, physmap))

    def vcpu(self, vcpu_id: int, ctx: bytes, ext: bytes | None, mask: int,
             xsave: bytes) -> None:
        assert self.start is not None
        head = fmt.V2_VCPU_HDR.pack(vcpu_id, 0)
        self.record(fmt.REC_X86_PV_VCPU_BASIC, head, ctx)
        if self.start.extended_contexts:
            self.record(fmt.REC_X86_PV_VCPU_EXTENDED, head,
                        ext or bytes(EXTENDED_CONTEXT_SIZE))
        if self.start.xsave_size:
            # Xen's buffer: xcr0 and xcr0_accum, then the area. The simulated vCPU keeps one
            # feature mask, which is both.
            self.record(fmt.REC_X86_PV_VCPU_XSAVE, head, fmt.V2_XSAVE_HDR.pack(mask, mask),
                        xsave)

    def shared_info(self, data: bytes) -> None:
        self.record(fmt.REC_SHARED_INFO, data)

    def end(self) -> None:
        self.record(fmt.REC_END)
        self.out.flush()
