"""Golden byte-level tests: tiny guests saved in each encoding by each ABI, walked field
by field against ../shared/reference/xen-stream-facts.md and docs/stream-format.md
with expectations written out here, plus a SHA-256 per stream in tests/golden/streams.json
so that any change of the byte format shows up. Regenerate the hashes, after a deliberate
format change only, with XSMIG_UPDATE_GOLDEN=1."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from xsmig_helpers import Guest, make, page, save_bytes

from xsmig import layout
from xsmig.domain import DomainDir
from xsmig.layout import AMD64, I386, Layout
from xsmig.store import Store
from xsmig.stream import emit
from xsmig.stream import format as fmt
from xsmig.stream.format import Encoding

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "streams.json"
LAYOUTS = {"i386": I386, "amd64": AMD64}
GUESTS = {
    "guest64": Guest(pages=64, width=64, vcpus=1, seed=1),
    "guest32": Guest(pages=64, width=32, vcpus=1, seed=1),
    "sparse64": Guest(pages=160, width=64, vcpus=1, seed=1, shape="sparse"),
    "sparse32": Guest(pages=160, width=32, vcpus=1, seed=1, shape="sparse"),
}
# Facts: vcpu_guest_context sizes and offsets (section 4 of the facts file).
VCPU_SIZE = {64: 0x1430, 32: 0xAF0}
EDX = {64: 616, 32: 524}
CR3 = {64: 5008, 32: 2728}
GDT_ENTS = {64: 4960, 32: 2704}
GDT_FRAMES = {64: 4832, 32: 2640}
TOP_TYPE = {64: 0x4, 32: 0x3}
FLL = {64: 3096, 32: 2320}  # xsmig's shared-info frame-list-list offset
XSAVE_AREA = 832  # synth's xsave area: xcnt = 848


@pytest.fixture(autouse=True)
def fixed_writer_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optional wrtr block names the xsmig version and machine: pin both, so the
    golden hashes hold on every host and release."""
    monkeypatch.setattr(emit, "__version__", "golden")
    monkeypatch.setattr(layout, "machine", lambda: "golden")  # the writer block names it


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DomainDir]:
    store = Store(tmp_path_factory.mktemp("golden"))
    return {name: make(store, name, guest, host_id=3) for name, guest in GUESTS.items()}


class Walk:
    """A cursor over the stream that reads fields as the facts file lays them out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        assert len(out) == n, f"stream ends at {len(self.data)}, wanted {n} at {self.pos}"
        self.pos += n
        return out

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def i32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])


@dataclass
class Expect:
    word: int  # bytes per ulong in this stream
    physmap_record: int  # sizeof(libxl__physmap_info) as the writer's ABI pads it


def walk_legacy(w: Walk, domain: DomainDir, ex: Expect) -> None:
    """From p2m_size to the end: the legacy layout with ulongs of ex.word bytes."""
    meta = domain.read_meta()
    types = domain.read_types()
    gw = meta.guest_width
    vsize = VCPU_SIZE[gw]
    xsave = meta.xsave_size != 0  # synth: sparse guests use no xsave
    p2m = meta.p2m_size
    assert w.u(ex.word) == p2m  # p2m_size
    assert w.take(ex.word) == b"\xff" * ex.word  # ext-info signature ~0UL
    total = w.u(4)
    assert total == (vsize + 8) + 8 + (12 if xsave else 0)
    ext_start = w.pos
    assert w.take(4) == b"vcpu"
    assert w.u(4) == vsize
    vcpu_block = w.take(vsize)
    assert w.take(8) == b"extv" + bytes(4)
    if xsave:
        assert w.take(4) == b"xcnt"
        assert w.u(4) == 4
        assert w.u(4) == XSAVE_AREA + 32  # xcnt: mask, size, then xcr0, xcr0_accum, area
    assert w.pos - ext_start == total
    # vCPU0's frames are pfns in the stream: start info is pfn 1, cr3 names the top table.
    assert int.from_bytes(vcpu_block[EDX[gw]:EDX[gw] + gw // 8], "little") == 1
    cr3 = int.from_bytes(vcpu_block[CR3[gw]:CR3[gw] + gw // 8], "little")
    root = cr3 >> 12 if gw == 64 else ((cr3 >> 12) | (cr3 << 20)) & 0xFFFFFFFF
    assert root < p2m and types[root] & 0x7 == TOP_TYPE[gw], (hex(cr3), types[root])
    gdt_ents = int.from_bytes(vcpu_block[GDT_ENTS[gw]:GDT_ENTS[gw] + gw // 8], "little")
    for j in range(-(-gdt_ents // 512)):
        at = GDT_FRAMES[gw] + j * gw // 8
        assert types[int.from_bytes(vcpu_block[at:at + gw // 8], "little")] == 0
    # p2m frame list: ceil(p2m / FPP) = 1 entry, a ulong holding a pfn
    assert [w.u(ex.word)] == meta.p2m_frames
    # one batch of all pfns
    assert w.i32() == p2m
    with_data = []
    for pfn in range(p2m):
        entry = w.u(ex.word)
        assert entry >> 32 == 0  # bits 63-32 zero on 8-byte words
        if types[pfn] == 0xF:
            assert entry == 0xF0000000  # a hole is a bare XTAB entry
            continue
        assert entry >> 28 == types[pfn] and entry & 0x0FFFFFFF == pfn
        if types[pfn] not in (0xD, 0xE):
            with_data.append(pfn)
    for pfn in with_data:
        data = w.take(4096)
        level = types[pfn] & 0x7
        if 1 <= level <= 4:
            entries = struct.unpack("<512Q", data)
            mask = 0xFFFFFFFFFF if gw == 64 else 0xFFFFFFFF
            present = [e for e in entries if e & 1]
            assert present and all((e >> 12) & mask < p2m for e in present)
            if gw == 32 and level == 3:
                assert entries[4:] == (0,) * 508 and all(e & 0x26 == 0 for e in entries[:4])
            if gw == 64 and level == 4:
                assert entries[256:272] == (0,) * 16
        elif pfn in meta.p2m_frames:
            words_fmt = f"<{p2m}Q" if gw == 64 else f"<{p2m}I"
            ones = (1 << gw) - 1
            expected = tuple(ones if types[p] == 0xF else p for p in range(p2m))
            assert struct.unpack_from(words_fmt, data) == expected
        else:
            assert data == page(domain, pfn)
    assert w.i32() == fmt.CHUNK_VCPU_INFO
    assert w.i32() == 0  # max_vcpu_id
    assert w.u(8) == 1  # vcpumap
    assert w.i32() == fmt.CHUNK_TSC_INFO
    assert struct.unpack("<IQII", w.take(20)) == (meta.tsc.mode, meta.tsc.nsec, meta.tsc.khz,
                                                  meta.tsc.incarnation)
    assert w.i32() == fmt.CHUNK_TOOLSTACK
    length = w.u(4)
    start = w.pos
    assert (w.u(4), w.u(4)) == (1, len(meta.physmap))
    for pm in meta.physmap:
        record = w.take(ex.physmap_record + len(pm.name))
        assert struct.unpack_from("<QQQI", record) == (pm.phys_offset, pm.start_addr, pm.size,
                                                       len(pm.name))
        assert record[28:28 + len(pm.name)] == pm.name  # the name at offset 28 on any ABI
        assert record[28 + len(pm.name):] == bytes(ex.physmap_record - 28)
    assert w.pos - start == length
    assert w.i32() == fmt.CHUNK_LAST_CHECKPOINT
    assert w.i32() == fmt.BODY_END
    holes = [p for p in range(p2m) if types[p] == 0xF]
    assert w.u(4) == len(holes)
    assert [w.u(ex.word) for _ in holes] == holes
    assert w.take(vsize) == vcpu_block  # the tail's vCPU0 is the block's context
    assert w.take(128) == domain.vcpu_path(0, "ext").read_bytes()
    if xsave:
        # xfeature_mask: the saving host's (x87..AVX-512, PKRU), then Xen's buffer
        buffer = domain.vcpu_path(0, "xsave").read_bytes()  # u64 xcr0, u64 xcr0_accum, area
        xcr0, accum = struct.unpack_from("<QQ", buffer)
        assert xcr0 & 1 and not xcr0 & ~accum and len(buffer) == 16 + XSAVE_AREA
        assert w.u(8) == 0x2FF
        assert w.u(8) == 16 + XSAVE_AREA
        assert w.take(16 + XSAVE_AREA) == buffer
    shared = w.take(4096)
    assert shared[FLL[gw]:FLL[gw] + gw // 8] == bytes(gw // 8)
    assert shared[:FLL[gw]] == domain.shared_info_path.read_bytes()[:FLL[gw]]
    assert w.pos == len(w.data), "trailing bytes"


# The facts file's chunk ids (section 2), written out: the walker above uses the format's
# names, and this table pins the names to the numbers.
FACTS_CHUNKS = {
    "enable_verify_mode": -1, "vcpu_info": -2, "tsc_info": -7, "last_checkpoint": -9,
    "compressed_data": -12, "enable_compression": -13, "toolstack": -18,
}
FACTS_HVM_CHUNKS = {-3, -4, -8, -10, -11, -14, -15, -16, -17, -19, -20}


def test_format_table_has_the_facts_chunk_ids() -> None:
    named = {c.name: c.id for c in fmt.LEGACY_CHUNKS.values()
             if c.payload is not fmt.Payload.HVM_VALUE}
    assert named == FACTS_CHUNKS
    assert fmt.HVM_CHUNKS == FACTS_HVM_CHUNKS
    assert (fmt.CHUNK_VCPU_INFO, fmt.CHUNK_TSC_INFO, fmt.CHUNK_LAST_CHECKPOINT,
            fmt.CHUNK_TOOLSTACK, fmt.BODY_END) == (-2, -7, -9, -18, 0)


# The spec's record numbers, written out (libxc-migration-stream.pandoc, "Records").
SPEC_RECORDS = {
    "END": 0x0, "PAGE_DATA": 0x1, "X86_PV_INFO": 0x2, "X86_PV_P2M_FRAMES": 0x3,
    "X86_PV_VCPU_BASIC": 0x4, "X86_PV_VCPU_EXTENDED": 0x5, "X86_PV_VCPU_XSAVE": 0x6,
    "SHARED_INFO": 0x7, "X86_TSC_INFO": 0x8, "HVM_CONTEXT": 0x9, "HVM_PARAMS": 0xA,
    "TOOLSTACK": 0xB, "X86_PV_VCPU_MSRS": 0xC, "VERIFY": 0xD, "CHECKPOINT": 0xE,
    "CHECKPOINT_DIRTY_PFN_LIST": 0xF, "STATIC_DATA_END": 0x10, "X86_CPUID_POLICY": 0x11,
    "X86_MSR_POLICY": 0x12,
}


def test_format_table_has_the_specs_record_numbers() -> None:
    mine = {r.name: r.type for r in fmt.V2_RECORDS.values() if not r.type & 0x80000000}
    assert mine == SPEC_RECORDS
    assert all(getattr(fmt, f"REC_{name}") == number for name, number in SPEC_RECORDS.items())


class V2Walk(Walk):
    def record(self) -> tuple[int, bytes]:
        """One record: header, body, and zero padding to a multiple of 8."""
        rtype, length = struct.unpack("<II", self.take(8))
        body = self.take(length)
        assert self.take(-length % 8) == bytes(-length % 8)
        return rtype, body


def walk_v2(w: Walk, domain: DomainDir) -> None:
    """Xen's v2 PV layout, field by field: headers big-endian then little-endian records."""
    meta = domain.read_meta()
    types = domain.read_types()
    gw = meta.guest_width
    p2m = meta.p2m_size
    # libxl's header, big-endian: ident "LibxlFmt", version 2, options 0 (little-endian,
    # not converted); then LIBXC_CONTEXT: type 1, empty
    assert w.take(8) == b"LibxlFmt"
    assert w.take(8) == bytes.fromhex("00000002 00000000")
    assert w.take(8) == struct.pack("<II", 1, 0)
    assert w.take(8) == b"\xff" * 8  # marker
    assert w.take(4) == b"XENF"
    assert w.take(4) == bytes.fromhex("00000002")  # version 2, big-endian
    assert w.take(8) == bytes(8)  # options: little-endian, no reserved bits; reserved
    assert struct.unpack("<IHHII", w.take(16)) == (1, 12, 0, 4, 6)  # x86 PV, 4 KiB, Xen 4.6
    v = V2Walk(w.data)
    v.pos = w.pos
    rec = {name: SPEC_RECORDS[name] for name in SPEC_RECORDS}
    assert v.record() == (rec["X86_PV_INFO"], bytes([gw // 8, 4 if gw == 64 else 3]) +
                          bytes(6))
    rtype, body = v.record()  # version 2: no STATIC_DATA_END (inferred here)
    fpp = 512 if gw == 64 else 1024
    assert rtype == rec["X86_PV_P2M_FRAMES"]
    assert struct.unpack("<II", body[:8]) == (0, p2m - 1)
    assert list(struct.unpack(f"<{len(body) // 8 - 1}Q", body[8:])) == meta.p2m_frames
    assert len(meta.p2m_frames) == -(-p2m // fpp)
    rtype, body = v.record()
    assert rtype == rec["PAGE_DATA"]
    assert struct.unpack("<II", body[:8]) == (p2m, 0)
    words = struct.unpack(f"<{p2m}Q", body[8:8 + 8 * p2m])
    assert [x >> 60 for x in words] == list(types)  # type nibble in bits 63-60
    assert [x & ((1 << 52) - 1) for x in words] == list(range(p2m))  # real pfns, holes too
    with_data = [p for p in range(p2m) if types[p] not in (0xD, 0xE, 0xF)]
    assert len(body) == 8 + 8 * p2m + 4096 * len(with_data)
    for i, pfn in enumerate(with_data):
        data = body[8 + 8 * p2m + 4096 * i:8 + 8 * p2m + 4096 * (i + 1)]
        if types[pfn] == 0 and pfn not in meta.p2m_frames:
            assert data == page(domain, pfn)
    rtype, body = v.record()
    assert rtype == rec["X86_TSC_INFO"]
    assert struct.unpack("<IIQII", body) == (meta.tsc.mode, meta.tsc.khz, meta.tsc.nsec,
                                             meta.tsc.incarnation, 0)
    rtype, body = v.record()
    assert rtype == rec["X86_PV_VCPU_BASIC"]
    assert body[:8] == bytes(8)  # vcpu_id 0, reserved
    assert len(body) == 8 + VCPU_SIZE[gw]
    assert int.from_bytes(body[8 + EDX[gw]:8 + EDX[gw] + gw // 8], "little") == 1
    rtype, body = v.record()
    assert rtype == rec["X86_PV_VCPU_EXTENDED"]
    assert body == bytes(8) + domain.vcpu_path(0, "ext").read_bytes()
    if meta.xsave_size:
        rtype, body = v.record()
        assert rtype == rec["X86_PV_VCPU_XSAVE"]
        # vcpu_id 0, reserved; Xen's buffer: u64 xcr0, u64 xcr0_accum, the area
        assert body == bytes(8) + domain.vcpu_path(0, "xsave").read_bytes()
    rtype, body = v.record()
    assert rtype == rec["SHARED_INFO"] and len(body) == 4096
    assert body[FLL[gw]:FLL[gw] + gw // 8] == bytes(gw // 8)
    assert v.record() == (rec["END"], b"")  # libxc's END, before libxl's records
    # EMULATOR_XENSTORE_DATA: emulator "unknown" (0), index 0, then NUL-terminated
    # key/value strings, as Xen's convert-legacy-stream writes the physmap
    kv = b"".join(b"physmap/%x/start_addr\0%x\0physmap/%x/size\0%x\0physmap/%x/name\0%s\0"
                  % (pm.phys_offset, pm.start_addr, pm.phys_offset, pm.size, pm.phys_offset,
                     pm.name[:-1]) for pm in meta.physmap)
    assert meta.physmap and v.record() == (2, struct.pack("<II", 0, 0) + kv)
    assert v.record() == (0, b"")  # libxl's END
    assert v.pos == len(v.data), "trailing bytes"


CASES = [(g, e, s) for g in GUESTS for e in Encoding for s in LAYOUTS
         if e in (Encoding.NATIVE, Encoding.V2) or not g.startswith("sparse")]


def test_sparse_guests_exercise_holes(guests: dict[str, DomainDir]) -> None:
    for name in ("sparse32", "sparse64"):
        types = guests[name].read_types()
        assert {0xF, 0xE, 0xD} <= set(types), name  # hole, allocate-only, broken


def case_id(guest: str, encoding: Encoding, saver: str) -> str:
    return f"{encoding.value}-{saver}-{guest}"


@pytest.mark.parametrize("guest,encoding,saver", CASES, ids=[case_id(*c) for c in CASES])
def test_stream_bytes(guests: dict[str, DomainDir], guest: str, encoding: Encoding,
                      saver: str) -> None:
    domain = guests[guest]
    layout: Layout = LAYOUTS[saver]
    data = save_bytes(domain, encoding, layout)
    w = Walk(data)
    if encoding is Encoding.NATIVE:
        walk_legacy(w, domain, Expect(layout.ulong_size, 28 if saver == "i386" else 32))
        return
    if encoding is Encoding.V2:
        walk_v2(w, domain)
        return
    assert w.take(4) == b"\xff\xff\xff\xff"
    if encoding is Encoding.ESCAPED:
        walk_legacy(w, domain, Expect(8, 28))
        return
    assert w.take(12) == b"sinf" + bytes(4) + struct.pack("<I", 16)
    word = layout.ulong_size
    # required features: bit 0 (Xen's xsave buffer) exactly when xsave state travels
    required = fmt.SINF_REQ_XEN_XSAVE if domain.read_meta().xsave_size else 0
    assert w.take(16) == bytes([word, 0]) + struct.pack("<HIII", 1, required, 0, 1)
    assert w.take(4) == b"wrtr"
    assert (w.u(2), w.u(2)) == (1, 0)  # optional, reserved zero
    who = json.loads(w.take(w.u(4)))
    assert who == {"xsmig": "golden", "abi": saver, "machine": "golden"}
    assert w.take(12) == b"end " + bytes(8)
    walk_legacy(w, domain, Expect(word, 28))


def test_native_prefixes_spelt_out(guests: dict[str, DomainDir]) -> None:
    """The first bytes, literally, as the facts file's header table gives them."""
    i386 = save_bytes(guests["guest64"], Encoding.NATIVE, I386)
    assert i386[:20] == (bytes.fromhex("40000000" "ffffffff") + (5168 + 8 + 8 + 12)
                         .to_bytes(4, "little") + b"vcpu" + bytes.fromhex("30140000"))
    i386_32 = save_bytes(guests["guest32"], Encoding.NATIVE, I386)
    assert i386_32[8:20] == (2800 + 28).to_bytes(4, "little") + b"vcpu" + bytes.fromhex(
        "f00a0000")
    amd64 = save_bytes(guests["guest64"], Encoding.NATIVE, AMD64)
    assert amd64[:28] == (bytes.fromhex("4000000000000000" "ffffffffffffffff")
                          + (5196).to_bytes(4, "little") + b"vcpu" + bytes.fromhex("30140000"))
    escaped = save_bytes(guests["guest64"], Encoding.ESCAPED, I386)
    assert escaped[:20] == bytes.fromhex("ffffffff" "4000000000000000" "ffffffffffffffff")


def golden_hashes(guests: dict[str, DomainDir]) -> dict[str, str]:
    return {case_id(*c): hashlib.sha256(save_bytes(guests[c[0]], c[1], LAYOUTS[c[2]]))
            .hexdigest() for c in CASES}


def test_golden_hashes(guests: dict[str, DomainDir]) -> None:
    hashes = golden_hashes(guests)
    if os.environ.get("XSMIG_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    assert json.loads(GOLDEN.read_text()) == hashes


@pytest.mark.parametrize("encoding", Encoding)
def test_streams_carry_no_host_values(tmp_path: Path, encoding: Encoding) -> None:
    """The same guest created on hosts with different frames saves to identical bytes."""
    streams = set()
    for host_id, name in [(1, "g"), (7, "g"), (123456, "other-name")]:
        domain = make(Store(tmp_path / f"h{host_id}"), name, GUESTS["sparse32"]
                      if encoding is Encoding.NATIVE else GUESTS["guest64"], host_id=host_id)
        streams.add(save_bytes(domain, encoding, AMD64))
    assert len(streams) == 1


@pytest.mark.parametrize("guest", GUESTS)
def test_v2_does_not_depend_on_the_writer_abi(guests: dict[str, DomainDir], guest: str) -> None:
    """No native-width field anywhere: i386 and amd64 writers give the same v2 bytes."""
    assert (save_bytes(guests[guest], Encoding.V2, I386)
            == save_bytes(guests[guest], Encoding.V2, AMD64))


@pytest.mark.parametrize("width", [32, 64])
def test_v2_libxc_is_the_libxl_streams_inner_stream(store: Store, width: int) -> None:
    """--v2-format libxc writes exactly the bytes between libxl's LIBXC_CONTEXT record and
    its END (a guest without physmap: no EMULATOR_XENSTORE_DATA); both pinned by hash."""
    g = make(store, "bare", Guest(pages=64, width=width, seed=1, physmap=0))
    libxl = save_bytes(g, Encoding.V2, I386)
    libxc = save_bytes(g, Encoding.V2, AMD64, v2_format=fmt.V2Format.LIBXC)
    assert libxl[:24] == b"LibxlFmt" + bytes.fromhex("00000002 00000000") + \
        struct.pack("<II", 1, 0)
    assert libxl[24:-8] == libxc and libxl[-8:] == bytes(8)
    assert libxc[:8] == b"\xff" * 8 and libxc[-8:] == bytes(8)  # libxc's END
    assert hashlib.sha256(libxc).hexdigest() == {
        32: "f1e6720123481b722cee1a78587ffda7958fc173ae602de4d004e252965f80a3",
        64: "093af784e602d0a8ba1f5f875a7fcf11bdb20904f6ea5d2a8e030670bc5df4b9"}[width]
