"""Migration v2: xsmig's streams against an independent reading of the spec, and v2
streams edited record by record, each edit either accepted (with the same restore) or
refused with the expected error at the expected byte offset, leaving nothing behind.

Round trips of v2 over every guest kind, saver and restorer ABI are in
test_xsmig_roundtrip.py (ENCODINGS includes v2); golden bytes in test_xsmig_golden.py."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from v2_spec import (
    CHECKPOINT,
    END,
    L_END,
    L_LIBXC,
    L_XENSTORE,
    P2M_FRAMES,
    PAGE_DATA,
    PV_INFO,
    SHARED_INFO,
    STATIC_DATA_END,
    TSC_INFO,
    VCPU_BASIC,
    VCPU_EXTENDED,
    VCPU_MSRS,
    VCPU_XSAVE,
    VERIFY,
    V2Stream,
    libxl_records,
    record,
    spec_check,
    split,
    xen_check,
)
from xsmig_helpers import Guest, digest, expect_error, make, restore_bytes, save_bytes

from xsmig.domain import DomainDir
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import AMD64, I386
from xsmig.store import Store
from xsmig.stream.format import Encoding, V2Format


@pytest.fixture
def guest(store: Store) -> DomainDir:
    return make(store, "src", Guest(pages=200, width=64, vcpus=2, max_vcpu_id=3, seed=9))


def as_v3(data: bytes) -> V2Stream:
    """The libxc stream inside a libxl save, made version 3 (STATIC_DATA_END after
    X86_PV_INFO): the edits below were written against v3, and the reader takes both."""
    s = split(data)
    s.ihdr = s.ihdr[:12] + struct.pack(">I", 3) + s.ihdr[16:]
    s.records.insert(1, (STATIC_DATA_END, b""))
    return s


@pytest.fixture
def stream(guest: DomainDir) -> V2Stream:
    return as_v3(save_bytes(guest, Encoding.V2, AMD64))


@pytest.mark.parametrize("saver", [I386, AMD64], ids=["i386", "amd64"])
@pytest.mark.parametrize("shape", ["standard", "sparse", "pt-heavy"])
@pytest.mark.parametrize("width", [32, 64])
def test_streams_pass_an_independent_spec_check(store: Store, saver: object, shape: str,
                                                 width: int) -> None:
    """Both framings, both interpreter widths: what Xen's own verify-stream-v2 accepts
    (only the record types it knows, version 2), and the spec's order rules."""
    for physmap, v2_format in ((2, V2Format.LIBXL), (0, V2Format.LIBXL), (0, V2Format.LIBXC)):
        src = make(store, "g", Guest(pages=300, width=width, vcpus=3, max_vcpu_id=40, seed=4,
                                     shape=shape, extended=shape != "sparse", physmap=physmap))
        for rounds in (1, 3):
            data = save_bytes(src, Encoding.V2, saver, rounds=rounds,  # type: ignore[arg-type]
                              v2_format=v2_format)
            assert spec_check(data) == [] and xen_check(data) == []
            s = split(data)
            kinds = [t for t, _ in s.records]
            assert kinds[:3] == [PV_INFO, P2M_FRAMES, PAGE_DATA]
            assert kinds[-2:] == [SHARED_INFO, END]
            assert kinds.count(VCPU_BASIC) == 3 and TSC_INFO in kinds
            assert all(t < 0x10 for t in kinds)  # no private, optional or v3 record
            if v2_format is V2Format.LIBXC:
                assert not s.prefix and not s.suffix
                continue
            libxl = [t for t, _ in libxl_records(data)]
            assert libxl == ([L_LIBXC, L_XENSTORE, L_END] if physmap else [L_LIBXC, L_END])
        store.destroy("g")


def restores_as(store: Store, data: bytes, source: DomainDir) -> None:
    restored = restore_bytes(store, data, "copy")
    assert digest(restored) == digest(source)
    store.destroy("copy")


def test_split_and_join_is_the_identity(guest: DomainDir) -> None:
    data = save_bytes(guest, Encoding.V2, I386)
    assert split(data).to_bytes() == data


# -- edits a spec-faithful restorer accepts --

def _v2_without_static_end(s: V2Stream) -> None:
    s.ihdr = s.ihdr[:12] + struct.pack(">I", 2) + s.ihdr[16:]
    del s.records[s.index(STATIC_DATA_END)]


def _insert_before(rtype: int, record: tuple[int, bytes]) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        s.records.insert(s.index(rtype), record)
    return edit


def _split_page_data(s: V2Stream) -> None:
    """One PAGE_DATA of 200 pfns as two of 100 (each with its pages)."""
    i = s.index(PAGE_DATA)
    _, body = s.records[i]
    count = struct.unpack_from("<I", body)[0]
    words = struct.unpack_from(f"<{count}Q", body, 8)
    pages = body[8 + 8 * count:]
    with_data = [w >> 60 not in (0xD, 0xE, 0xF) for w in words]
    cut, at = count // 2, 4096 * sum(with_data[:count // 2])
    first = struct.pack(f"<II{cut}Q", cut, 0, *words[:cut]) + pages[:at]
    second = struct.pack(f"<II{count - cut}Q", count - cut, 0, *words[cut:]) + pages[at:]
    s.records[i:i + 1] = [(PAGE_DATA, first), (PAGE_DATA, second)]


def _merge_page_data(s: V2Stream) -> None:
    """All PAGE_DATA records as one (the spec sets no limit on count)."""
    idx = [i for i, (t, _) in enumerate(s.records) if t == PAGE_DATA]
    words: list[int] = []
    pages = []
    for i in idx:
        body = s.records[i][1]
        count = struct.unpack_from("<I", body)[0]
        words += struct.unpack_from(f"<{count}Q", body, 8)
        pages.append(body[8 + 8 * count:])
    merged = struct.pack(f"<II{len(words)}Q", len(words), 0, *words) + b"".join(pages)
    s.records[idx[0]:idx[-1] + 1] = [(PAGE_DATA, merged)]


ACCEPTED: dict[str, Callable[[V2Stream], None]] = {
    "version 2 without STATIC_DATA_END (inferred at the p2m frames)": _v2_without_static_end,
    "unknown optional record": _insert_before(SHARED_INFO, (0x80001234, b"hello")),
    "VERIFY signal": _insert_before(TSC_INFO, (VERIFY, b"")),
    "zero-length EXTENDED (erratum 1)": _insert_before(
        SHARED_INFO, (VCPU_EXTENDED, struct.pack("<II", 0, 0))),
    "PAGE_DATA split in two": _split_page_data,
    "PAGE_DATA split, then one record of all pfns": lambda s: [_split_page_data(s),
                                                               _merge_page_data(s)],
    "TSC_INFO before the p2m frames": lambda s: s.records.insert(
        s.index(P2M_FRAMES), s.records.pop(s.index(TSC_INFO))),
    "SHARED_INFO right after the static data": lambda s: s.records.insert(
        s.index(P2M_FRAMES), s.records.pop(s.index(SHARED_INFO))),
    "vCPU records interleaved across vCPUs": lambda s: s.records.insert(
        s.index(VCPU_BASIC, 1) + 1, s.records.pop(s.index(VCPU_XSAVE))),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_edits(store: Store, guest: DomainDir, stream: V2Stream, case: str) -> None:
    ACCEPTED[case](stream)
    data = stream.to_bytes()
    assert spec_check(data) == []
    restores_as(store, data, guest)


def test_checkpoint_then_a_second_round(store: Store, guest: DomainDir,
                                        stream: V2Stream) -> None:
    """CHECKPOINT, then pages, TSC, vCPUs and shared info again: the last copy wins."""
    first_vcpu = stream.index(VCPU_BASIC)
    again = [r for r in stream.records[stream.index(PAGE_DATA):-1]]
    stream.records[first_vcpu:first_vcpu] = []
    stream.records[-1:-1] = [(CHECKPOINT, b""), *again]
    data = stream.to_bytes()
    assert spec_check(data) == []
    restores_as(store, data, guest)


# -- edits that must fail: (edit, error type, offset of the error) --

def _patch(rtype: int, pos: int, new: bytes, nth: int = 0) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        i = s.index(rtype, nth)
        t, body = s.records[i]
        s.records[i] = (t, body[:pos] + new + body[pos + len(new):])
    return edit


def _ihdr(pos: int, new: bytes) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        s.ihdr = s.ihdr[:pos] + new + s.ihdr[pos + len(new):]
    return edit


def _dhdr(pos: int, new: bytes) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        s.dhdr = s.dhdr[:pos] + new + s.dhdr[pos + len(new):]
    return edit


def _drop(rtype: int, nth: int = 0) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        del s.records[s.index(rtype, nth)]
    return edit


def _pfn_word(value: Callable[[int], int], entry: int = 5) -> Callable[[V2Stream], None]:
    def edit(s: V2Stream) -> None:
        i = s.index(PAGE_DATA)
        t, body = s.records[i]
        (word,) = struct.unpack_from("<Q", body, 8 + 8 * entry)
        s.records[i] = (t, body[:8 + 8 * entry] + struct.pack("<Q", value(word))
                        + body[16 + 8 * entry:])
    return edit


def at(offset: int) -> Callable[[V2Stream], int]:
    """An offset in the libxc stream's headers, after libxl's prefix."""
    return lambda s: len(s.prefix) + offset


def record_at(rtype: int, plus: int = 0, nth: int = 0) -> Callable[[V2Stream], int]:
    return lambda s: s.offset_of(rtype, nth) + plus


REJECTED: dict[str, tuple[Callable[[V2Stream], None], type[Exception],
                          Callable[[V2Stream], int]]] = {
    "version 4": (_ihdr(12, struct.pack(">I", 4)), StreamRefused, at(12)),
    "reserved option bit": (_ihdr(16, b"\x00\x02"), StreamError, at(16)),
    "big-endian stream": (_ihdr(16, b"\x00\x01"), StreamRefused, at(16)),
    "image header reserved": (_ihdr(20, b"\x00\x00\x00\x01"), StreamError, at(16)),
    "HVM domain": (_dhdr(0, struct.pack("<I", 2)), StreamRefused, at(24)),
    "unknown domain type": (_dhdr(0, struct.pack("<I", 9)), StreamError, at(24)),
    "page_shift 13": (_dhdr(4, struct.pack("<H", 13)), StreamError, at(28)),
    "domain header reserved": (_dhdr(6, b"\x01\x00"), StreamError, at(30)),
    "guest width 5": (_patch(PV_INFO, 0, b"\x05"), StreamError, record_at(PV_INFO, 8)),
    "PV_INFO reserved": (_patch(PV_INFO, 4, b"\x01"), StreamError, record_at(PV_INFO, 10)),
    "v3 without STATIC_DATA_END": (_drop(STATIC_DATA_END), StreamError,
                                   record_at(P2M_FRAMES)),
    "no X86_PV_INFO": (_drop(PV_INFO), StreamError, record_at(STATIC_DATA_END)),
    "p2m frames one short": (_patch(P2M_FRAMES, 4, struct.pack("<I", 1024)), StreamError,
                             record_at(P2M_FRAMES, 4)),
    "p2m frame beyond the p2m": (_patch(P2M_FRAMES, 8, struct.pack("<Q", 10 ** 6)),
                                 StreamError, record_at(P2M_FRAMES, 16)),
    "PAGE_DATA count 0": (_patch(PAGE_DATA, 0, struct.pack("<I", 0)), StreamError,
                          record_at(PAGE_DATA, 8)),
    "PAGE_DATA reserved": (_patch(PAGE_DATA, 4, b"\x01"), StreamError,
                           record_at(PAGE_DATA, 12)),
    "PAGE_DATA count below the pfns": (lambda s: _patch(PAGE_DATA, 0, struct.pack(
        "<I", struct.unpack_from("<I", s.records[s.index(PAGE_DATA)][1])[0] - 1))(s),
                                       StreamError, record_at(PAGE_DATA, 4)),
    "pfn reserved bits 59-52": (_pfn_word(lambda w: w | 1 << 55), StreamError,
                                record_at(PAGE_DATA, 16 + 8 * 5)),
    "page type 6": (_pfn_word(lambda w: (w & (1 << 60) - 1) | 6 << 60), StreamError,
                    record_at(PAGE_DATA, 16 + 8 * 5)),
    "pfn beyond p2m_end_pfn": (_pfn_word(lambda w: w | 0xFFFFF), StreamError,
                               record_at(PAGE_DATA, 16 + 8 * 5)),
    "a page without data claims data": (_pfn_word(lambda w: w & ~(0xF << 60) | 0xE << 60),
                                        StreamError, record_at(PAGE_DATA, 4)),
    "vCPU record before PAGE_DATA": (lambda s: s.records.insert(
        s.index(PAGE_DATA), s.records.pop(s.index(VCPU_BASIC))), StreamError,
        record_at(VCPU_BASIC)),
    "PAGE_DATA after vCPU records": (lambda s: [_split_page_data(s), s.records.insert(
        s.index(SHARED_INFO), s.records.pop(s.index(PAGE_DATA, 1)))], StreamError,
        lambda s: s.offset_of(PAGE_DATA, 1)),
    "BASIC of the wrong size": (lambda s: s.records.__setitem__(
        s.index(VCPU_BASIC), (VCPU_BASIC, s.records[s.index(VCPU_BASIC)][1][:-8])),
        StreamError, record_at(VCPU_BASIC, 4)),
    "vCPU reserved": (_patch(VCPU_BASIC, 4, b"\x01"), StreamError, record_at(VCPU_BASIC, 12)),
    "EXTENDED without BASIC": (_drop(VCPU_BASIC, 1), StreamError, record_at(END)),
    "no vCPU 0": (lambda s: [_drop(r)(s) for r in (VCPU_BASIC, VCPU_EXTENDED, VCPU_XSAVE)],
                  StreamError, record_at(END)),
    "EXTENDED for one vCPU only": (_drop(VCPU_EXTENDED, 1), StreamRefused, record_at(END)),
    "xcr0 not within xcr0_accum": (_patch(VCPU_XSAVE, 16, b"\x01"), StreamRefused,
                                   record_at(VCPU_XSAVE, 16)),
    "xcr0 without x87": (_patch(VCPU_XSAVE, 8, b"\x02"), StreamRefused,
                         record_at(VCPU_XSAVE, 16)),
    "no SHARED_INFO": (_drop(SHARED_INFO), StreamError, record_at(END)),
    "SHARED_INFO short": (lambda s: s.records.__setitem__(
        s.index(SHARED_INFO), (SHARED_INFO, bytes(4088))), StreamError,
        record_at(SHARED_INFO, 4)),
    "TSC_INFO reserved": (_patch(TSC_INFO, 20, b"\x01"), StreamError, record_at(TSC_INFO, 28)),
    "unknown mandatory record": (_insert_before(SHARED_INFO, (0x13, b"")), StreamRefused,
                                 lambda s: s.offset_of(0x13)),
    "HVM_CONTEXT in a PV stream": (_insert_before(SHARED_INFO, (0x9, bytes(8))), StreamError,
                                   lambda s: s.offset_of(0x9)),
    "deprecated TOOLSTACK": (_insert_before(SHARED_INFO, (0xB, bytes(8))), StreamRefused,
                             lambda s: s.offset_of(0xB)),
    "back-channel dirty pfn list": (_insert_before(SHARED_INFO, (0xF, bytes(8))), StreamError,
                                    lambda s: s.offset_of(0xF)),
    "END not empty": (lambda s: s.records.__setitem__(-1, (END, bytes(8))), StreamError,
                      record_at(END, 4)),
    "a second X86_PV_INFO": (_insert_before(STATIC_DATA_END, (PV_INFO, b"\x08\x04" + bytes(6))),
                             StreamError, record_at(PV_INFO, nth=1)),
    "CPUID policy after the static data": (
        _insert_before(P2M_FRAMES, (0x11, bytes(24))), StreamError,
        lambda s: s.offset_of(0x11)),
}


@pytest.mark.parametrize("case", REJECTED)
def test_rejected_edits(store: Store, stream: V2Stream, case: str) -> None:
    edit, error, where = REJECTED[case]
    edit(stream)
    data = stream.to_bytes()
    e = expect_error(error, store, data)  # type: ignore[arg-type]
    assert e.offset == where(stream), str(e)


@pytest.mark.parametrize("layer", ["libxc", "libxl"])
def test_nonzero_padding(store: Store, stream: V2Stream, layer: str) -> None:
    if layer == "libxc":
        _insert_before(SHARED_INFO, (0x80001234, b"hello"))(stream)
        i = stream.index(0x80001234)
        pad_at = stream.offsets[i] + 8 + len(stream.records[i][1])
    else:  # the physmap's EMULATOR_XENSTORE_DATA, after the libxc END
        end = stream.offsets[-1] + 8
        body = struct.unpack_from("<I", stream.suffix, 4)[0]
        assert body % 8 and stream.suffix[:4] == struct.pack("<I", L_XENSTORE)
        pad_at = end + 8 + body
    data = bytearray(stream.to_bytes())
    data[pad_at] = 1
    assert any("padding" in p for p in spec_check(bytes(data)))
    e = expect_error(StreamError, store, bytes(data))
    assert e.offset == pad_at and "padding" in str(e)


@pytest.mark.parametrize("cut", [3, 24, 39, 44, 100, 1000, -9, -1])
def test_truncated(store: Store, stream: V2Stream, cut: int) -> None:
    data = stream.to_bytes()
    e = expect_error(StreamError, store, data[:cut])
    assert "truncated" in str(e) or "fewer than" in str(e)


def test_trailing_data(store: Store, stream: V2Stream) -> None:
    data = stream.to_bytes()
    e = expect_error(StreamError, store, data + bytes(8))
    assert e.offset == len(data) and "END" in str(e)


def test_msrs_are_valid_but_refused_by_restore(store: Store, stream: V2Stream) -> None:
    _insert_before(SHARED_INFO, (VCPU_MSRS, struct.pack("<IIIIQ", 0, 0, 0xC0000080, 0, 5)))(
        stream)
    data = stream.to_bytes()
    assert spec_check(data) == []
    e = expect_error(StreamRefused, store, data)
    assert "MSR" in str(e)


@pytest.mark.parametrize("own", [I386, AMD64], ids=["i386", "amd64"])
def test_legacy_profile_refuses_v2_at_byte_0(store: Store, stream: V2Stream,
                                             own: object) -> None:
    e = expect_error(StreamRefused, store, stream.to_bytes(), own=own, profile="legacy")
    assert e.offset == 0 and "legacy" in str(e)


def test_earlier_xsmig_v2_streams_restore_whole(store: Store, guest: DomainDir) -> None:
    """Version 3 with the private physmap record (optional type 0x8078736D: u32 version,
    u32 count, physmap records packed to 28 + namelen) and no libxl framing, as earlier
    xsmig versions wrote: read, the physmap included."""
    s = as_v3(save_bytes(guest, Encoding.V2, AMD64))
    physmap = guest.read_meta().physmap
    body = struct.pack("<II", 1, len(physmap)) + b"".join(
        struct.pack("<QQQI", p.phys_offset, p.start_addr, p.size, len(p.name)) + p.name
        for p in physmap)
    s.prefix = s.suffix = b""
    s.records.insert(s.index(VCPU_BASIC), (0x8078736D, body))
    restored = restore_bytes(store, s.to_bytes(), "old")
    assert restored.read_meta().physmap == guest.read_meta().physmap
    assert digest(restored) == digest(guest)


def test_hypervisor_and_converter_versions(guest: DomainDir, stream: V2Stream) -> None:
    """A save names Xen 4.6 (the simulated hypervisor); the spec asks a converter for
    xen_major 0 and its own version as xen_minor (checked in test_xsmig_convert)."""
    assert struct.unpack("<II", stream.dhdr[8:]) == (4, 6)


def test_one_record_of_more_than_1024_pfns(store: Store) -> None:
    """Xen writes 1024 pfns per record; a reader must take more (read in slices)."""
    src = make(store, "big", Guest(pages=3000, width=32, vcpus=1, seed=5, shape="sparse"))
    s = split(save_bytes(src, Encoding.V2, I386))
    assert len([t for t, _ in s.records if t == PAGE_DATA]) == 3
    _merge_page_data(s)
    data = s.to_bytes()
    assert spec_check(data) == []
    assert struct.unpack_from("<I", s.records[s.index(PAGE_DATA)][1])[0] == 3000
    restores_as(store, data, src)


def test_huge_record_length_is_malformed_before_reading_pages(store: Store,
                                                               stream: V2Stream) -> None:
    data = bytearray(stream.to_bytes())
    at = stream.offset_of(PAGE_DATA)
    struct.pack_into("<I", data, at + 4, 0xFFFFFFF0)
    e = expect_error(StreamError, store, bytes(data))
    assert e.offset == at + 4 and "must be" in str(e)


def test_inspect_reads_v2(guest: DomainDir, stream: V2Stream) -> None:
    import io

    from xsmig.inspect import inspect_stream, render_text

    report = inspect_stream(io.BytesIO(stream.to_bytes()))
    assert report["encoding"] == "v2" and report["detection"].startswith("R0")
    assert report["v2"] == {"framing": "libxl", "libxl_version": 2, "libxl_options": 0,
                            "version": 3, "options": 0, "domain_type": 1, "page_shift": 12,
                            "xen_major": 4, "xen_minor": 6}
    assert report["p2m_size"] == 200 and report["guest_width"] == 64
    assert [v["id"] for v in report["tail"]["vcpus"]] == guest.read_meta().vcpu_ids
    text = render_text(report)
    assert "v2 headers    version 3" in text and "Xen 4.6" in text


# -- libxl's layer: edits of the records around the libxc stream --

def _libxl_records(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(libxl header, libxl records), LIBXC_CONTEXT's body being the whole libxc stream."""
    s = split(data)
    inner = s.ihdr + s.dhdr + b"".join(record(t, b) for t, b in s.records)
    out, pos = [(1, inner)], 0
    while pos < len(s.suffix):
        rtype, length = struct.unpack_from("<II", s.suffix, pos)
        out.append((rtype, s.suffix[pos + 8:pos + 8 + length]))
        pos += 8 + length + (-length % 8)
    return s.prefix[:16], out


def _libxl_join(head: bytes, records: list[tuple[int, bytes]]) -> bytes:
    return head + b"".join(struct.pack("<II", 1, 0) + b if t == 1 else record(t, b)
                           for t, b in records)


def _xenstore(pairs: list[bytes], emulator: int = 0) -> tuple[int, bytes]:
    return (L_XENSTORE, struct.pack("<II", emulator, 0) + b"\0".join(pairs) + b"\0")


PHYS = [b"physmap/1000/start_addr", b"2000", b"physmap/1000/size", b"3000",
        b"physmap/1000/name", b"vga"]
LIBXL_REJECTED: dict[str, tuple[Callable[[bytes, list[tuple[int, bytes]]],
                                         tuple[bytes, list[tuple[int, bytes]]]],
                                type[Exception], str]] = {
    "libxl version 3": (lambda h, r: (h[:8] + struct.pack(">I", 3) + h[12:], r), StreamRefused,
                        "version 3"),
    "reserved libxl option": (lambda h, r: (h[:12] + struct.pack(">I", 4), r), StreamError,
                              "reserved bits"),
    "big-endian libxl": (lambda h, r: (h[:12] + struct.pack(">I", 1), r), StreamRefused,
                         "big-endian"),
    "no LIBXC_CONTEXT": (lambda h, r: (h, r[1:]), StreamError, "without a LIBXC_CONTEXT"),
    "unknown mandatory libxl record": (lambda h, r: (h, [*r[:-1], (6, b""), r[-1]]),
                                       StreamRefused, "mandatory libxl record type 0x6"),
    "EMULATOR_CONTEXT": (lambda h, r: (h, [*r[:-1], (3, bytes(8)), r[-1]]), StreamRefused,
                         "EMULATOR_CONTEXT"),
    "CHECKPOINT_END": (lambda h, r: (h, [*r[:-1], (4, b""), r[-1]]), StreamRefused,
                       "Remus/COLO"),
    "xenstore data without its NUL": (
        lambda h, r: (h, [*r[:-2], (L_XENSTORE, r[-2][1][:-1]), r[-1]]), StreamError,
        "NUL-terminated"),
    "xenstore: an odd number of strings": (
        lambda h, r: (h, [*r[:-2], _xenstore(PHYS[:-1]), r[-1]]), StreamError,
        "key/value pairs"),
    "xenstore: unknown emulator": (lambda h, r: (h, [*r[:-2], _xenstore(PHYS, 7), r[-1]]),
                                   StreamError, "unknown emulator id 0x7"),
    "physmap entry without its name": (
        lambda h, r: (h, [*r[:-2], _xenstore(PHYS[:4]), r[-1]]), StreamError,
        "lacks its name key"),
    "physmap size not hex": (
        lambda h, r: (h, [*r[:-2], _xenstore([*PHYS[:3], b"0x30", *PHYS[4:]]), r[-1]]),
        StreamError, "not hex"),
    "a key that is not the physmap's": (
        lambda h, r: (h, [*r[:-2], _xenstore([*PHYS, b"vnc/port", b"5900"]), r[-1]]),
        StreamRefused, "vnc/port"),
    "libxl END not empty": (lambda h, r: (h, [*r[:-1], (0, bytes(8))]), StreamError,
                            "END record body is 8 bytes"),
    "data after libxl's END": (lambda h, r: (h, [*r, (0, b"")]), StreamError,
                               "trailing data after the libxl END"),
}


@pytest.mark.parametrize("case", LIBXL_REJECTED)
def test_libxl_layer_rejections(store: Store, guest: DomainDir, case: str) -> None:
    edit, error, words = LIBXL_REJECTED[case]
    head, records = _libxl_records(save_bytes(guest, Encoding.V2, AMD64))
    assert [t for t, _ in records] == [L_LIBXC, L_XENSTORE, L_END]
    data = _libxl_join(*edit(head, records))
    e = expect_error(error, store, data)
    assert words in str(e), str(e)


def test_libxl_layer_accepts_what_the_spec_allows(store: Store, guest: DomainDir) -> None:
    """An unknown optional libxl record and an empty EMULATOR_XENSTORE_DATA are skipped;
    the legacy option bit is informational; restore is unchanged."""
    head, records = _libxl_records(save_bytes(guest, Encoding.V2, AMD64))
    records[1:1] = [(0x80000009, b"opt"), (L_XENSTORE, bytes(8))]
    data = _libxl_join(head[:12] + struct.pack(">I", 2), records)
    restores_as(store, data, guest)
