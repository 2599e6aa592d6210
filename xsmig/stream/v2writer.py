"""The v2 encoder (Xen's migration stream v2 for an x86 PV guest), in libxl's framing
(what `xl save` and `xl migrate` send; the default) or bare libxc.

libxl: header (LibxlFmt, version 2), LIBXC_CONTEXT, the libxc stream up to and including
its END, EMULATOR_XENSTORE_DATA with the physmap keys (when there is a physmap), END.
libxc, as Xen's PV saver orders it: image header (version 2), domain header,
X86_PV_INFO, X86_PV_P2M_FRAMES, PAGE_DATA*, X86_TSC_INFO, then per vCPU BASIC [EXTENDED]
[XSAVE], SHARED_INFO, END. Every record is padded to 8 bytes. Only record types the
specs define are written: Xen's own verifier refuses any other."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import BinaryIO

from xsmig import lanes, words
from xsmig import pagetypes as pt
from xsmig.domain import PhysmapEntry, TscInfo
from xsmig.errors import StreamRefused
from xsmig.stream import format as fmt
from xsmig.stream.emit import StreamStart
from xsmig.stream.io import StreamWriter
from xsmig.vcpu import EXTENDED_CONTEXT_SIZE

_PAD = bytes(fmt.V2_ALIGN)


def page_data_words(pfns: Sequence[int], types: bytes) -> bytes:
    """PAGE_DATA's words, (type << 60) | pfn, little-endian: the pfns as the lanes of one
    int (xsmig/lanes.py; a range needs no list), each type ORed into its word's byte 7
    by a byte slice; no step per entry."""
    n = len(types)
    values = (lanes.iota(pfns.start, n) if isinstance(pfns, range) and pfns.step == 1
              else lanes.from_bytes(words.dump(pfns, "Q")))
    spread = bytearray(8 * n)
    spread[7::8] = types.translate(pt.HIGH_NIBBLE)  # bits 63-60 (V2_TYPE_SHIFT)
    return lanes.to_bytes(values | lanes.from_bytes(spread), n)


class V2Emitter:
    tail_holes = False  # holes are XTAB entries of PAGE_DATA records

    def __init__(self, out: BinaryIO, *, xen_version: tuple[int, int] = fmt.V2_XEN_VERSION,
                 v2_format: fmt.V2Format = fmt.V2Format.LIBXL, converted: bool = False
                 ) -> None:
        self.out = StreamWriter(out)
        self.xen_version = xen_version
        self.v2_format = v2_format
        self.converted = converted  # from a legacy stream: libxl's "legacy" option bit
        self.start: StreamStart | None = None
        self._xenstore = b""

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
        if self.v2_format is fmt.V2Format.LIBXL:
            options = fmt.LIBXL_OPT_LEGACY if self.converted else 0
            out.pack(fmt.LIBXL_HDR, fmt.LIBXL_IDENT, fmt.LIBXL_VERSION, options)
            self.record(fmt.LREC_LIBXC_CONTEXT)
        out.pack(fmt.V2_IHDR, fmt.V2_MARKER, fmt.V2_ID, fmt.V2_VERSION, 0, 0, 0)
        out.pack(fmt.V2_DHDR, fmt.V2_DOMAIN_X86_PV, fmt.V2_PAGE_SHIFT, 0, *self.xen_version)
        guest = start.guest
        self.record(fmt.REC_X86_PV_INFO,
                    fmt.V2_PV_INFO.pack(guest.word_size, guest.pt_levels, 0, 0))
        frames = struct.pack(f"<{len(start.frame_list)}Q", *start.frame_list)
        self.record(fmt.REC_X86_PV_P2M_FRAMES,
                    fmt.V2_P2M_FRAMES_HDR.pack(0, start.p2m_size - 1), frames)

    def pages(self, pfns: Sequence[int], types: bytes, data: memoryview) -> None:
        if not pfns:
            return  # count is strictly > 0
        self.record(fmt.REC_PAGE_DATA, fmt.V2_PAGE_DATA_HDR.pack(len(pfns), 0),
                    page_data_words(pfns, types), data)

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
        problem = physmap_problem(self.v2_format, version, physmap)
        if problem:
            raise StreamRefused(problem)
        self._xenstore = xenstore_physmap(physmap)

    def vcpu(self, vcpu_id: int, ctx: bytes, ext: bytes | None, mask: int,
             xsave: bytes) -> None:
        assert self.start is not None
        head = fmt.V2_VCPU_HDR.pack(vcpu_id, 0)
        self.record(fmt.REC_X86_PV_VCPU_BASIC, head, ctx)
        if self.start.extended_contexts:
            self.record(fmt.REC_X86_PV_VCPU_EXTENDED, head,
                        ext or bytes(EXTENDED_CONTEXT_SIZE))
        if self.start.xsave_size and xsave:
            # Xen's buffer as it is (xcr0, xcr0_accum, the area); none for a vCPU without
            # xsave state. mask, a legacy host's xfeature_mask, has no place in v2.
            self.record(fmt.REC_X86_PV_VCPU_XSAVE, head, xsave)

    def shared_info(self, data: bytes) -> None:
        self.record(fmt.REC_SHARED_INFO, data)

    def end(self) -> None:
        self.record(fmt.REC_END)  # libxc's: before anything of libxl's that follows
        if self.v2_format is fmt.V2Format.LIBXL:
            if self._xenstore:
                self.record(fmt.LREC_EMULATOR_XENSTORE_DATA,
                            fmt.LIBXL_EMULATOR_HDR.pack(fmt.EMULATOR_UNKNOWN, 0), self._xenstore)
            self.record(fmt.LREC_END)
        self.out.flush()


def physmap_problem(v2_format: fmt.V2Format, version: int | None,
                    physmap: Sequence[PhysmapEntry]) -> str | None:
    """Why a v2 stream of this format cannot carry this toolstack data; None if it can.
    An empty physmap is no state (Xen's converter drops it): nothing to carry."""
    if not physmap:
        return None
    if v2_format is fmt.V2Format.LIBXC:
        return (f"the domain has {len(physmap)} physmap entries, which the bare libxc v2 "
                "format cannot carry (Xen carries them in libxl's EMULATOR_XENSTORE_DATA): "
                "use --v2-format libxl")
    if version != fmt.PHYSMAP_TOOLSTACK_VERSION:
        return (f"libxl toolstack data version {version}: only version "
                f"{fmt.PHYSMAP_TOOLSTACK_VERSION}'s physmap has xenstore keys")
    offsets = set()
    for entry in physmap:
        if entry.phys_offset in offsets:
            return (f"two physmap entries at phys_offset {entry.phys_offset:#x}: xenstore "
                    "keys are per phys_offset")
        offsets.add(entry.phys_offset)
        if not entry.name.endswith(b"\0") or b"\0" in entry.name[:-1]:
            return (f"physmap entry {entry.phys_offset:#x}: its name is not one "
                    "NUL-terminated string, as a xenstore value needs")
    return None


def xenstore_physmap(physmap: Sequence[PhysmapEntry]) -> bytes:
    """The physmap as EMULATOR_XENSTORE_DATA's key/value strings, as Xen's
    convert-legacy-stream writes them (read_libxl_toolstack): per entry, in order,
    physmap/<phys_offset>/start_addr, /size (lower-case hex) and /name (without its NUL),
    each key and value NUL-terminated."""
    out = []
    for entry in physmap:
        root = fmt.PHYSMAP_KEY.format(entry.phys_offset, "{}")
        for key, value in ((root.format("start_addr"), b"%x" % entry.start_addr),
                           (root.format("size"), b"%x" % entry.size),
                           (root.format("name"), entry.name[:-1])):
            out += [key.encode(), b"\0", value, b"\0"]
    return b"".join(out)
