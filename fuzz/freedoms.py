"""Rewrite a valid stream into another valid stream of the same domain, using the
freedoms the formats allow (issue 16): the property tests' and the quick campaign's
generator of legal-but-unusual inputs.

Legacy (native, escaped, extended): batches split and reordered at will, pages sent
again (a plain page of noise first, the real page later), pages sent with data and
then listed unmapped in the tail (data then holes), bare XTAB entries in batches, the
optional chunks (vcpu_info, tsc_info, toolstack, verify mode, last checkpoint, HVM
values restore ignores) anywhere in the body and repeated, unknown ext-info blocks and
the ext-info blocks after vcpu in any order, unknown optional blocks in the
extended-info section.

v2 (the libxc stream, bare or inside libxl's framing): PAGE_DATA records split, merged
and reordered, pages sent again, holes then data (an XTAB entry first, the page later)
and data then holes, vCPU records in any order,
zero-length EXTENDED/XSAVE records (erratum 1), SHARED_INFO, X86_TSC_INFO and the
toolstack record anywhere after the static data, unknown optional records anywhere
after the headers.

Every rewrite restores to the digest of the original stream's restore: the final state
of each pfn is the original's. `random.Random` drives every choice (hypothesis passes
one from st.randoms(), the quick campaign a seeded one)."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

from xsmig import pagetypes as pt
from xsmig.stream import format as fmt
from xsmig.stream.io import in_order
from xsmig.stream.reader import Batch, StreamHeader, StreamParser

Entry = tuple[int, int, bytes]  # pfn, type, page (b"" for a type without data)


class _Recorder:
    """Where a legacy stream's parts are, and every page entry it carries."""

    def __init__(self) -> None:
        self.header: StreamHeader | None = None
        self.items: list[tuple[str, int]] = []  # (kind, offset) of batches and chunks
        self.entries: list[Entry] = []
        self.tail_at: int | None = None
        self.unmapped: list[int] = []

    def on_header(self, header: StreamHeader) -> None:
        self.header = header

    def on_batch(self, batch: Batch) -> None:
        self.items.append(("batch", batch.offset))
        data, k = bytes(batch.data), 0
        for pfn, t in zip(batch.pfns, batch.types, strict=True):
            if t == pt.XTAB:
                continue
            if pt.HAS_DATA[t]:
                self.entries.append((pfn, t, data[k * 4096:(k + 1) * 4096]))
                k += 1
            else:
                self.entries.append((pfn, t, b""))

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        if self.tail_at is None:
            self.items.append(("chunk", offset))

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        if self.tail_at is None:
            self.tail_at = offset
        self.unmapped.extend(pfns)

    def on_vcpu(self, *args: Any) -> None:
        pass

    def on_shared_info(self, offset: int, data: bytes) -> None:
        pass


def _final_holes(p2m_size: int, entries: list[Entry], unmapped: list[int]) -> list[int]:
    types = bytearray([pt.XTAB]) * p2m_size
    for pfn, t, _ in entries:
        types[pfn] = t
    for pfn in unmapped:
        types[pfn] = pt.XTAB
    return [p for p in range(p2m_size) if types[p] == pt.XTAB]


def _sequence(rnd: random.Random, entries: list[Entry], holes: list[int]
              ) -> tuple[list[Entry], list[int]]:
    """The page entries to send, in order, and the pfns to call holes at the end:
    noise first for some pages, duplicates, data for some holes (listed as holes later)."""
    real = entries[:]
    rnd.shuffle(real)
    early: list[Entry] = []
    with_data = [e for e in entries if e[2]]
    for pfn, _t, _d in rnd.sample(with_data, min(len(with_data), rnd.randint(0, 6))):
        early.append((pfn, pt.NOTAB, rnd.randbytes(4096)))  # sent again, later for real
    late_holes = rnd.sample(holes, min(len(holes), rnd.randint(0, 6)))
    for pfn in late_holes:
        early.append((pfn, rnd.choice([pt.NOTAB, pt.XALLOC]), b""))
        if early[-1][1] == pt.NOTAB:
            early[-1] = (pfn, pt.NOTAB, rnd.randbytes(4096))
    for entry in rnd.sample(entries, min(len(entries), rnd.randint(0, 4))):
        real.insert(rnd.randint(0, len(real)), entry)  # the same page twice
    rnd.shuffle(early)
    return early + real, late_holes


def _batches(rnd: random.Random, seq: list[Entry], limit: int) -> list[list[Entry]]:
    out, i = [], 0
    while i < len(seq):
        n = rnd.choice([1, 2, 3, rnd.randint(1, limit), limit])
        out.append(seq[i:i + n])
        i += n
    return out


def legacy(data: bytes, rnd: random.Random) -> bytes:
    """A legacy stream rewritten with the freedoms above."""
    rec = _Recorder()
    header = StreamParser(io.BytesIO(data)).parse(rec)
    assert rec.tail_at is not None and rec.items
    layout = header.layout
    order = layout.byte_order
    i32, u32 = in_order(fmt.I32, order), in_order(fmt.U32, order)

    def ulongs(values: list[int]) -> bytes:
        return struct.pack(f"{layout.endian}{len(values)}{layout.ulong_code}", *values)

    body_end = rec.tail_at - 4
    bounds = [off for _, off in rec.items] + [body_end]
    chunks = [data[bounds[i]:bounds[i + 1]] for i, (kind, _) in enumerate(rec.items)
              if kind == "chunk"]
    # Chunks restore reads and ignores; 8 bytes of HVM value after a 4-byte pad.
    extra = [i32.pack(fmt.CHUNK_ENABLE_VERIFY_MODE), i32.pack(fmt.CHUNK_LAST_CHECKPOINT),
             i32.pack(fmt.CHUNK_HVM_CONSOLE_PFN) + bytes(4) + struct.pack("<Q", 7)]
    chunks += [rnd.choice(chunks + extra) for _ in range(rnd.randint(0, 3))]
    holes = _final_holes(header.p2m_size, rec.entries, rec.unmapped)
    seq, late_holes = _sequence(rnd, rec.entries, holes)
    parts: list[bytes] = []
    for batch in _batches(rnd, seq, fmt.MAX_BATCH):
        words = [(t << pt.TYPE_SHIFT) | p for p, t, _ in batch]
        for _ in range(min(rnd.choice([0, 0, 1, 2]), fmt.MAX_BATCH - len(words))):
            words.insert(rnd.randint(0, len(words)), pt.BARE_XTAB_ENTRY)  # carry nothing
        pages = b"".join(d for p, t, d in batch if pt.HAS_DATA[t])
        parts.append(i32.pack(len(words)) + ulongs(words) + pages)
    for chunk in chunks:
        parts.insert(rnd.randint(0, len(parts)), chunk)
    prefix = _header_freedoms(data[:bounds[0]], header, rnd)
    n = len(rec.unmapped)
    rest = data[rec.tail_at + 4 + n * layout.ulong_size:]
    tail = sorted(set(rec.unmapped) | set(late_holes))
    if rnd.random() < 0.3:
        rnd.shuffle(tail)
    return (prefix + b"".join(parts) + i32.pack(fmt.BODY_END) + u32.pack(len(tail))
            + ulongs(tail) + rest)


def _header_freedoms(prefix: bytes, header: StreamHeader, rnd: random.Random) -> bytes:
    """Optional blocks where they may stand: unknown optional blocks in the extended-info
    section (after sinf), unknown ext-info blocks after the vcpu block and the other
    ext-info blocks in any order (the vcpu block stays first: detection may read its
    id to prove the width)."""
    out = prefix
    if header.ext_blocks:
        blocks = header.ext_blocks
        order = header.layout.byte_order
        u32, ext = in_order(fmt.U32, order), in_order(fmt.EXT_BLOCK, order)
        start = blocks[0].offset
        end = blocks[-1].offset + fmt.EXT_BLOCK.size + blocks[-1].size
        raw = [out[b.offset:b.offset + fmt.EXT_BLOCK.size + b.size] for b in blocks]
        first, rest = raw[:1], raw[1:]
        rest += [ext.pack(b"junk", n) + rnd.randbytes(n)
                 for n in (rnd.choice([0, 4, 13]) for _ in range(rnd.randint(0, 2)))]
        rnd.shuffle(rest)
        section = b"".join(first + rest)
        out = out[:start - 4] + u32.pack(len(section)) + section + out[end:]
    if header.xblocks and rnd.random() < 0.7:
        sinf = header.xblocks[0]
        at = sinf.offset + fmt.XBLOCK.size + sinf.size
        extra = b"".join(fmt.XBLOCK.pack(b"opt" + bytes([0x61 + i]), fmt.XBLOCK_OPTIONAL, 0, n)
                         + rnd.randbytes(n)
                         for i, n in enumerate(rnd.choice([0, 5, 64])
                                               for _ in range(rnd.randint(1, 3))))
        out = out[:at] + extra + out[at:]
    return out


def _page_record(entries: list[tuple[int, int, bytes]]) -> tuple[int, bytes]:
    words = [(t << fmt.V2_TYPE_SHIFT) | p for p, t, _ in entries]
    body = (struct.pack("<II", len(entries), 0) + struct.pack(f"<{len(words)}Q", *words)
            + b"".join(d for _, t, d in entries if pt.HAS_DATA[t]))
    return fmt.REC_PAGE_DATA, body


def v2(data: bytes, rnd: random.Random) -> bytes:
    """A v2 stream rewritten with the freedoms above."""
    ihdr, dhdr = data[:24], data[24:40]
    records: list[tuple[int, bytes]] = []
    pos = 40
    while pos < len(data):
        rtype, length = struct.unpack_from("<II", data, pos)
        records.append((rtype, data[pos + 8:pos + 8 + length]))
        pos += 8 + length + (-length % 8)
    head_end = next(i for i, (t, _) in enumerate(records) if t == fmt.REC_X86_PV_P2M_FRAMES)
    head = records[:head_end + 1]
    _start, end = fmt.V2_P2M_FRAMES_HDR.unpack_from(head[-1][1])
    p2m_size = end + 1
    entries: list[Entry] = []
    xtabs: list[int] = []
    vcpu_recs: list[tuple[int, bytes]] = []
    floating: list[tuple[int, bytes]] = []
    vcpu_types = {fmt.REC_X86_PV_VCPU_BASIC, fmt.REC_X86_PV_VCPU_EXTENDED,
                  fmt.REC_X86_PV_VCPU_XSAVE}
    for rtype, body in records[head_end + 1:]:
        if rtype == fmt.REC_PAGE_DATA:
            count = struct.unpack_from("<I", body)[0]
            words = struct.unpack_from(f"<{count}Q", body, 8)
            k = 8 + 8 * count
            for w in words:
                t, p = w >> fmt.V2_TYPE_SHIFT, w & ((1 << 52) - 1)
                if t == pt.XTAB:
                    xtabs.append(p)
                elif pt.HAS_DATA[t]:
                    entries.append((p, t, body[k:k + 4096]))
                    k += 4096
                else:
                    entries.append((p, t, b""))
        elif rtype in vcpu_types:
            vcpu_recs.append((rtype, body))
        elif rtype != fmt.REC_END:
            floating.append((rtype, body))
    holes = _final_holes(p2m_size, entries, xtabs)
    seq, late_holes = _sequence(rnd, entries, holes)
    # holes then data: XTAB entries for pages sent later, in records of their own (xsmig
    # applies a record's XTAB entries after its pages)
    early_x = [(e[0], pt.XTAB, b"") for e in rnd.sample(entries, min(len(entries),
                                                                   rnd.randint(0, 6)))]
    rnd.shuffle(late_holes)
    final_x = [(p, pt.XTAB, b"") for p in late_holes] + [(p, pt.XTAB, b"") for p in xtabs
                                                         if p not in late_holes]
    pages = [_page_record(b) for group in (early_x, seq, final_x)
             for b in _batches(rnd, group, rnd.choice([64, fmt.MAX_BATCH]))]
    rnd.shuffle(vcpu_recs)
    ids = sorted({struct.unpack_from("<I", b)[0] for t, b in vcpu_recs})
    for _ in range(rnd.randint(0, 3)):  # erratum 1: zero-content records are ignored
        rtype = rnd.choice([fmt.REC_X86_PV_VCPU_EXTENDED, fmt.REC_X86_PV_VCPU_XSAVE])
        vcpu_recs.insert(rnd.randint(0, len(vcpu_recs)),
                         (rtype, struct.pack("<II", rnd.choice(ids), 0)))
    stream = pages + vcpu_recs
    for record in floating:
        stream.insert(rnd.randint(0, len(stream)), record)
    out = head + stream
    for _ in range(rnd.randint(0, 4)):  # unknown optional records, after the headers
        out.insert(rnd.randint(0, len(out)), (fmt.V2_OPTIONAL | rnd.randint(0x100, 0xFFFF),
                                              rnd.randbytes(rnd.choice([0, 3, 8, 20]))))
    out.append((fmt.REC_END, b""))
    parts = [ihdr, dhdr]
    for rtype, rbody in out:
        parts.append(struct.pack("<II", rtype, len(rbody)) + rbody + bytes(-len(rbody) % 8))
    return b"".join(parts)


_LIBXC_MARK = b"\xff" * 8 + b"XENF"


def _libxc_span(data: bytes) -> tuple[int, int]:
    """Where the libxc stream is: all of a bare one; inside libxl's framing (libxl's
    header and records before it, its END record's end after), the libxc records are
    rewritten and libxl's kept as they are."""
    start = data.find(_LIBXC_MARK) if data[:8] == b"LibxlFmt" else 0
    pos = start + 40
    while True:
        rtype, length = struct.unpack_from("<II", data, pos)
        pos += 8 + length + (-length % 8)
        if rtype == fmt.REC_END:
            return start, pos


def rewrite(data: bytes, rnd: random.Random) -> bytes:
    if data[:12] != _LIBXC_MARK and data[:8] != b"LibxlFmt":
        return legacy(data, rnd)
    start, end = _libxc_span(data)
    return data[:start] + v2(data[start:end], rnd) + data[end:]
