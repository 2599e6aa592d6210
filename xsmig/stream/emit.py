"""Encoders: turn a domain's state, given piece by piece in stream order, into the bytes
of one encoding. `save` feeds them from a domain, `convert` from a parser of another
stream; neither knows the layouts, which live here and in format.py.

Events come in this order: begin, pages*, (vcpu_ids, tsc, toolstack, holes in any
order), vcpu* in ascending id, shared_info, end."""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Sequence
from typing import BinaryIO, Protocol

from xsmig import __version__, lanes, layout, words
from xsmig import pagetypes as pt
from xsmig.domain import PhysmapEntry, TscInfo
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.io import StreamWriter, in_order
from xsmig.vcpu import EXTENDED_CONTEXT_SIZE, VcpuLayout


class StreamStart:
    """What the first bytes of every encoding need to say about the domain."""

    __slots__ = ("extended_contexts", "frame_list", "guest", "p2m_size", "vcpu0", "xsave_size")

    def __init__(self, p2m_size: int, guest: VcpuLayout, frame_list: list[int],
                 extended_contexts: bool, xsave_size: int, vcpu0: bytes | None) -> None:
        self.p2m_size = p2m_size
        self.guest = guest
        self.frame_list = frame_list
        self.extended_contexts = extended_contexts
        self.xsave_size = xsave_size  # largest xsave buffer (xcnt - 16); 0: no vCPU uses xsave
        self.vcpu0 = vcpu0  # vCPU 0's canonical context; None: not known yet (LegacyEmitter)


class Emitter(Protocol):
    tail_holes: bool  # True: holes go in a tail list; False: XTAB entries in the batches

    def begin(self, start: StreamStart) -> None: ...
    def pages(self, pfns: Sequence[int], types: bytes, data: memoryview) -> None: ...
    def holes(self, pfns: Sequence[int]) -> None: ...
    def vcpu_ids(self, ids: list[int]) -> None: ...
    def tsc(self, tsc: TscInfo) -> None: ...
    def toolstack(self, version: int, physmap: Sequence[PhysmapEntry]) -> None: ...
    # mask: the source's xfeature_mask (0: none known); xsave: Xen's buffer (xcr0,
    # xcr0_accum, area) or b"".
    def vcpu(self, vcpu_id: int, ctx: bytes, ext: bytes | None, mask: int,
             xsave: bytes) -> None: ...
    def shared_info(self, data: bytes) -> None: ...
    def end(self) -> None: ...


_ALL_ONES = {4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


def batch_words(pfns: Sequence[int], types: bytes, layout: Layout) -> bytes:
    """A legacy batch's pfn list: (type << 28) | pfn per entry (a hole's pfn is 0, as
    Xen's bare XTAB entry), as ulongs of the stream's layout. The words are the lanes of
    one int (xsmig/lanes.py; a range of pfns needs no list), each type goes into its
    word's byte 3 by a byte slice: a few C-level operations, no step per entry."""
    n, width = len(types), layout.ulong_size
    if isinstance(pfns, range) and pfns.step == 1:  # a whole run of pfns: all_pages()
        values = lanes.iota(pfns.start, n, width)
    else:
        values = lanes.from_bytes(words.dump(pfns, "I" if width == 4 else "Q"))
    spread = bytearray(width * n)
    if pt.XTAB in types:  # holes: pfn 0 (lanes of 0/1, times all ones, mask the pfns)
        spread[0::width] = types.translate(pt.MAPPED)
        values &= lanes.from_bytes(spread) * _ALL_ONES[width]
        spread[0::width] = bytes(n)
    # pfns are below 2^28: the top nibble of byte 3 is free, OR adds the type to it
    spread[3::width] = types.translate(pt.HIGH_NIBBLE)
    out = (values | lanes.from_bytes(spread)).to_bytes(width * n, "little")
    if layout.byte_order == "little":
        return out
    swapped = array("I" if width == 4 else "Q")
    swapped.frombytes(out)
    swapped.byteswap()  # each word's bytes reversed: little- to big-endian, on any host
    return swapped.tobytes()


def toolstack_payload(layout: Layout, version: int, physmap: Sequence[PhysmapEntry]) -> bytes:
    """libxl's toolstack data: {u32 version, u32 count}, then each physmap record."""
    record = layout.physmap_record_size()
    order = layout.byte_order
    parts = [in_order(fmt.TOOLSTACK_HEADER, order).pack(version, len(physmap))]
    for entry in physmap:
        fields = in_order(fmt.PHYSMAP_FIELDS, order).pack(
            entry.phys_offset, entry.start_addr, entry.size, len(entry.name))
        # libxl copies the name to offset 28 of a sizeof()+namelen buffer: on amd64 the
        # 4 padding bytes end up after the name.
        parts.append((fields + entry.name).ljust(record + len(entry.name), b"\0"))
    return b"".join(parts)


def stream_layout(encoding: fmt.Encoding, abi: Layout, word_size: int | None = None) -> Layout:
    """The ABI a stream's words and records follow, for a writer of ABI `abi`."""
    if encoding is fmt.Encoding.NATIVE:
        return abi
    if encoding is fmt.Encoding.EXTENDED:
        return Layout.clean(word_size or abi.ulong_size, abi.byte_order)
    if encoding is fmt.Encoding.ESCAPED:
        return Layout.clean(8, abi.byte_order)
    return Layout.clean(8)  # v2 has no ulong; its packed records match clean(8), little-endian


class LegacyEmitter:
    """native, escaped and extended: the legacy PV layout behind an optional prefix.

    The header carries vCPU 0's context and the extended-state flags; when begin() does
    not know them yet (a v2 source gives them at its end), the body is spooled to an
    unnamed temporary file and the header written once the first vCPU arrives: memory
    stays constant, the disk holds one copy of the body."""

    tail_holes = True

    def __init__(self, out: BinaryIO, encoding: fmt.Encoding, abi: Layout, *,
                 ext_info: bool = True, word_size: int | None = None) -> None:
        self._final = StreamWriter(out)
        self.out = self._final
        self.encoding = encoding
        self.abi = abi
        self.layout = stream_layout(encoding, abi, word_size)
        self.ext_info = ext_info
        self.start: StreamStart | None = None
        self._spool: BinaryIO | None = None
        self._ids: list[int] = [0]
        self._tsc: TscInfo | None = None
        self._toolstack: bytes | None = None
        self._holes: list[int] = []
        self._body_closed = False

    @property
    def offset(self) -> int:
        return self._final.offset + (self.out.offset if self._spool else 0)

    def ulongs(self, values: Sequence[int]) -> bytes:
        return struct.pack(f"{self.layout.endian}{len(values)}{self.layout.ulong_code}", *values)

    def begin(self, start: StreamStart) -> None:
        self.start = start
        if start.vcpu0 is None and self.ext_info:
            # imported here: tempfile (and shutil below) cost every command's start-up
            # under QEMU, and only a conversion to a legacy encoding spools
            import tempfile
            self._spool = tempfile.TemporaryFile(prefix="xsmig-convert-")  # noqa: SIM115
            self.out = StreamWriter(self._spool)
            self.out.byte_order = self.layout.byte_order  # the spool holds only the body
        else:
            self._header(self._final)

    def _header(self, out: StreamWriter) -> None:
        start = self.start
        assert start is not None
        if self.encoding is not fmt.Encoding.NATIVE:
            out.pack(fmt.U32, fmt.ESCAPE)
        if self.encoding is fmt.Encoding.EXTENDED:
            order = fmt.BYTE_ORDERS.index(self.layout.byte_order)
            required = fmt.SINF_REQ_XEN_XSAVE if start.xsave_size else 0
            sinf = fmt.SINF_V1.pack(self.layout.ulong_size, order,
                                    fmt.SINF_VERSION, required, 0, fmt.GUEST_X86_PV)
            writer = json.dumps({"xsmig": __version__, "abi": self.abi.name,
                                 "machine": layout.machine()}).encode()
            for bid, flags, payload in [(fmt.SINF, 0, sinf),
                                        (fmt.WRITER, fmt.XBLOCK_OPTIONAL, writer),
                                        (fmt.XEND, 0, b"")]:
                out.pack(fmt.XBLOCK, bid, flags, 0, len(payload))
                out.write(payload)
        # The extended-info section is little-endian on every ABI (it declares the order);
        # every integer after it, and all of a native or escaped stream, is in the ABI's.
        out.byte_order = self.layout.byte_order
        out.write(self.ulongs([start.p2m_size]))
        if self.ext_info:
            assert start.vcpu0 is not None
            blocks = [(fmt.EXT_VCPU, start.vcpu0)]
            if start.extended_contexts:
                blocks.append((fmt.EXT_EXTV, b""))
            if start.xsave_size:
                xcnt = in_order(fmt.U32, self.layout.byte_order).pack(start.xsave_size + 16)
                blocks.append((fmt.EXT_XCNT, xcnt))
            out.write(self.ulongs([self.layout.ulong_all_ones]))
            out.pack(fmt.U32, sum(fmt.EXT_BLOCK.size + len(data) for _, data in blocks))
            for bid, data in blocks:
                out.pack(fmt.EXT_BLOCK, bid, len(data))
                out.write(data)
        out.write(self.ulongs(start.frame_list))

    def pages(self, pfns: Sequence[int], types: bytes, data: memoryview) -> None:
        if not pfns:
            return  # a zero count would end the body
        self.out.pack(fmt.I32, len(pfns))
        self.out.write(batch_words(pfns, types, self.layout))
        self.out.write(data)

    def holes(self, pfns: Sequence[int]) -> None:
        self._holes.extend(pfns)

    def vcpu_ids(self, ids: list[int]) -> None:
        self._ids = ids

    def tsc(self, tsc: TscInfo) -> None:
        self._tsc = tsc

    def toolstack(self, version: int, physmap: Sequence[PhysmapEntry]) -> None:
        self._toolstack = toolstack_payload(self.layout, version, physmap)

    def _close_body(self) -> None:
        if self._body_closed:
            return
        self._body_closed = True
        out, ids = self.out, self._ids
        words = [0] * (max(ids) // 64 + 1)
        for vcpu_id in ids:
            words[vcpu_id // 64] |= 1 << (vcpu_id % 64)
        out.pack(fmt.I32, fmt.CHUNK_VCPU_INFO)
        out.pack(fmt.I32, max(ids))
        out.write(struct.pack(f"{self.layout.endian}{len(words)}Q", *words))
        if self._tsc is not None:
            tsc = self._tsc
            out.pack(fmt.I32, fmt.CHUNK_TSC_INFO)
            out.pack(fmt.TSC_INFO, tsc.mode, tsc.nsec, tsc.khz, tsc.incarnation)
        if self._toolstack is not None:
            out.pack(fmt.I32, fmt.CHUNK_TOOLSTACK)
            out.pack(fmt.U32, len(self._toolstack))
            out.write(self._toolstack)
        out.pack(fmt.I32, fmt.CHUNK_LAST_CHECKPOINT)
        out.pack(fmt.I32, fmt.BODY_END)
        holes = sorted(set(self._holes))
        out.pack(fmt.U32, len(holes))
        out.write(self.ulongs(holes))

    def _unspool(self, vcpu0: bytes) -> None:
        """Write the header now that vCPU 0 is known, then the spooled body."""
        assert self.start is not None and self._spool is not None
        self.start.vcpu0 = vcpu0
        self._header(self._final)
        self._spool.seek(0)
        import shutil
        shutil.copyfileobj(self._spool, self._final._f, 1 << 20)
        self._final.offset += self.out.offset
        self._spool.close()
        self._spool = None
        self.out = self._final

    def vcpu(self, vcpu_id: int, ctx: bytes, ext: bytes | None, mask: int,
             xsave: bytes) -> None:
        assert self.start is not None
        self._close_body()
        if self._spool is not None:
            self._unspool(ctx)
        out = self.out
        out.write(ctx)
        if self.ext_info and self.start.extended_contexts:
            out.write(ext or bytes(EXTENDED_CONTEXT_SIZE))
        if self.ext_info and self.start.xsave_size:
            # xfeature_mask is the saving host's; it holds every feature a vCPU used.
            accum = fmt.XSAVE_BUFFER_HDR.unpack_from(xsave)[1] if xsave else 0
            out.pack(fmt.XSAVE_HEADER, (mask or fmt.HOST_XFEATURE_MASK) | accum, len(xsave))
            out.write(xsave)

    def shared_info(self, data: bytes) -> None:
        self._close_body()
        self.out.write(data)

    def end(self) -> None:
        self._final.flush()
