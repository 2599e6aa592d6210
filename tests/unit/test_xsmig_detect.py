"""The detection table (docs/stream-format.md section 4), row by row, on hand-built heads.

Expected encodings, widths and rules are written out here: the test must not trust
detect's own constants to say what the answer is."""

from __future__ import annotations

import struct

import pytest

from xsmig.errors import StreamError, StreamRefused, UsageError
from xsmig.layout import AMD64, I386
from xsmig.stream.detect import detect
from xsmig.stream.format import Encoding

FF4 = b"\xff\xff\xff\xff"
FF8 = FF4 * 2


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def pad(head: bytes) -> bytes:
    return head.ljust(24, b"\x5a")


# (head, encoding, width, rule prefix, ext_info)
ACCEPTED = {
    "R1 extended": (FF4 + b"sinf" + b"\0" * 16, Encoding.EXTENDED, None, "R1", None),
    "R2 escaped": (FF4 + u64(64) + FF8 + u32(5196), Encoding.ESCAPED, 64, "R2", None),
    "R2 escaped max p2m": (FF4 + u64(0x0FFFFFFF) + FF8 + u32(0), Encoding.ESCAPED, 64, "R2",
                           None),
    "R2 escaped no ext-info": (FF4 + u64(1) + u64(0) + u32(1), Encoding.ESCAPED, 64, "R2",
                               None),
    "R3 i386 ext-info": (u32(64) + FF4 + u32(5196) + b"vcpu" + u32(0x1430) + u32(0),
                         Encoding.NATIVE, 32, "R3", True),
    "R3 i386 ext-info, 32-bit guest": (u32(0x0FFFFFFF) + FF4 + u32(2828) + b"vcpu" +
                                       u32(0xAF0) + u32(0), Encoding.NATIVE, 32, "R3", True),
    "R4 amd64 ext-info": (u64(64) + FF8 + u32(5196) + b"vcpu", Encoding.NATIVE, 64, "R4",
                          True),
    "R4 amd64 ext-info, other block id": (u64(3) + FF8 + u32(8) + b"abcd", Encoding.NATIVE,
                                          64, "R4", True),
    "R5 i386 no ext-info": (u32(64) + u32(16) + u32(64) + u32(0) * 3, Encoding.NATIVE, 32,
                            "R5", False),
    "R5 i386 no ext-info, frame 1": (u32(5000) + u32(1) + u32(2) + u32(3) + u32(0) * 2,
                                     Encoding.NATIVE, 32, "R5", False),
}


@pytest.mark.parametrize("own", [I386, AMD64], ids=["own-i386", "own-amd64"])
@pytest.mark.parametrize("case", ACCEPTED.keys())
def test_rows_that_decide(case: str, own: object) -> None:
    head, encoding, width, rule, ext_info = ACCEPTED[case]
    d = detect(pad(head), profile="current", own=own, source_width=None)  # type: ignore[arg-type]
    assert (d.encoding, d.width, d.rule[:2], d.ext_info) == (encoding, width, rule, ext_info)


# Streams no saver writes: E1 (unknown escape) and E2 (no p2m_size), exit 3, with offset.
MALFORMED = {
    "E1 escape then garbage": (FF4 + b"abcd" + b"\0" * 8, 4),
    "E1 escape then p2m_size 0": (FF4 + u64(0) + FF8, 4),
    "E1 escape then p2m_size too big": (FF4 + u64(0x10000000) + FF8, 4),
    "E1 escape then 64-bit value with high bits": (FF4 + u64(64 | 1 << 32) + FF8, 4),
    "E1 escape then sinf misspelt": (FF4 + b"sinF" + b"\0" * 8, 4),
    "E0 v2 marker, image id not XENF": (FF8 + FF8, 8),
    "E0 v2 marker, id XENF misspelt": (FF8 + b"XENf" + bytes(4), 8),
    "E2 p2m_size 0 (i386)": (u32(0) + FF4 + u32(0), 0),
    "E2 p2m_size 0 (amd64)": (u64(0) + FF8, 0),
    "E2 p2m_size above 0x0FFFFFFF": (u32(0x10000000) + FF4, 0),
    "E2 p2m_size 0xFFFFFFFE": (u32(0xFFFFFFFE) + u32(0), 0),
    "short head": (u32(64) + b"\0\0", 6),
    "empty": (b"", 0),
}


@pytest.mark.parametrize("case", MALFORMED.keys())
def test_error_rows(case: str) -> None:
    head, offset = MALFORMED[case]
    data = head if case in ("short head", "empty") else pad(head)
    with pytest.raises(StreamError) as info:
        detect(data, profile="current", own=AMD64, source_width=None)
    assert info.value.offset == offset
    assert f"at byte {offset}" in str(info.value)
    assert info.value.exit_code == 3


# R6: bytes 4-7 zero and no R4 evidence: a 64-bit stream without ext-info, or a 32-bit one
# without ext-info whose first p2m frame is pfn 0. Both are written here as real heads.
AMBIGUOUS = {
    "amd64 no ext-info": u64(64) + u64(16) + u32(64) + u32(0),
    "i386 no ext-info, p2m frame 0 is pfn 0": u32(64) + u32(0) + u32(64) + u32(0x7),
    "i386 no ext-info, frame 0 = 0, then batch count": u32(2000) + u32(0) + u32(1) + u32(2),
    # The contrived R4 near-misses: almost the 64-bit signature, or no printable block id.
    "R4 near-miss: signature with one bit clear": u64(64) + FF4 + b"\xff\xff\xff\xfe" +
    u32(5196) + b"vcpu",
    "R4 near-miss: non-printable block id": u64(64) + FF8 + u32(5196) + b"vc\x00u",
    "R4 near-miss: block id with a control byte": u64(64) + FF8 + u32(5196) + b"\x7fcpu",
    "R4 near-miss: 32-bit frame 0 = 0 then two verify chunks": u32(64) + u32(0) + FF8 +
    u32(1) + u32(0x10),
}


@pytest.mark.parametrize("own,bits", [(I386, 32), (AMD64, 64)], ids=["own-i386", "own-amd64"])
@pytest.mark.parametrize("case", AMBIGUOUS.keys())
def test_ambiguous_is_read_in_own_width(case: str, own: object, bits: int) -> None:
    """The mail's rule: not 0xFFFFFFFF first, so a normal native word size stream; the
    restorer says so on stderr (the note), and --source-width still overrides."""
    head = pad(AMBIGUOUS[case])
    d = detect(head, profile="current", own=own, source_width=None)  # type: ignore[arg-type]
    assert (d.encoding, d.width, d.rule[:2], d.ext_info) == (Encoding.NATIVE, bits, "R6", None)
    assert d.note is not None and "\n" not in d.note
    assert f"own {bits}-bit width" in d.note and "--source-width" in d.note
    for width in (32, 64):
        d = detect(head, profile="current", own=own, source_width=width)  # type: ignore[arg-type]
        assert (d.encoding, d.width, d.rule[:2], d.ext_info) == (Encoding.NATIVE, width, "R7",
                                                                  None)


V2_HEAD = FF8 + b"XENF" + bytes.fromhex("00000003") + bytes(8)


@pytest.mark.parametrize("own", [I386, AMD64], ids=["own-i386", "own-amd64"])
@pytest.mark.parametrize("source_width", [None, 32, 64])
def test_r0_v2_image_header(own: object, source_width: int | None) -> None:
    """Eight bytes of ones then "XENF": the spec's marker; no legacy stream starts so."""
    d = detect(V2_HEAD, profile="current", own=own,  # type: ignore[arg-type]
               source_width=source_width)
    assert (d.encoding, d.width, d.rule[:2], d.note) == (Encoding.V2, None, "R0", None)


LIBXL_HEAD = b"LibxlFmt" + bytes.fromhex("00000002 00000000") + bytes.fromhex("01000000") + bytes(4)
XL_HEAD = b"Xen saved domain, xl format\n \0 \r"[:24]


@pytest.mark.parametrize("own", [I386, AMD64], ids=["own-i386", "own-amd64"])
@pytest.mark.parametrize("source_width", [None, 32, 64])
def test_r0l_libxl_and_r0x_xl_headers(own: object, source_width: int | None) -> None:
    """"LibxlFmt" (0x7862694c as a little-endian word: no p2m_size) is v2 in libxl
    framing; "Xen saved domain, xl format" (0x206e6558) an xl save file, whose stream
    the rows decide once its header is read."""
    d = detect(LIBXL_HEAD, profile="current", own=own,  # type: ignore[arg-type]
               source_width=source_width)
    assert (d.encoding, d.width, d.rule[:4], d.framing) == (Encoding.V2, None, "R0L:", "libxl")
    d = detect(XL_HEAD, profile="current", own=own,  # type: ignore[arg-type]
               source_width=source_width)
    assert (d.rule[:4], d.framing) == ("R0X:", "xl")
    d = detect(V2_HEAD, profile="current", own=own,  # type: ignore[arg-type]
               source_width=source_width)
    assert d.framing == "libxc"
    with pytest.raises(StreamError, match="not an xl save file"):
        detect(XL_HEAD[:8] + bytes(16), profile="current", own=own,  # type: ignore[arg-type]
               source_width=None)


def test_r4_contrived_32bit_lookalike_is_read_as_64bit() -> None:
    """A crafted 32-bit stream matching R4 byte for byte is parsed as 64-bit (and, being
    nonsense as such, fails later checks): the rule is certain for what savers write."""
    head = u32(64) + u32(0) + FF8 + u32(0x41414141) + b"ABCD"
    d = detect(head, profile="current", own=I386, source_width=None)
    assert (d.encoding, d.width, d.rule[:2]) == (Encoding.NATIVE, 64, "R4")


CONTRADICTED = {
    "R3 says 32": (u32(64) + FF4 + u32(5196) + b"vcpu" + u32(0x1430) + u32(0), 64),
    "R4 says 64": (u64(64) + FF8 + u32(5196) + b"vcpu", 32),
    "R5 says 32": (u32(64) + u32(16) + u32(64) + u32(0) * 3, 64),
}


@pytest.mark.parametrize("case", CONTRADICTED.keys())
def test_source_width_contradicting_a_certain_row_is_refused(case: str) -> None:
    head, wrong = CONTRADICTED[case]
    with pytest.raises(StreamRefused) as info:
        detect(pad(head), profile="current", own=AMD64, source_width=wrong)
    assert f"--source-width {wrong}" in str(info.value)
    right = 96 - wrong
    assert detect(pad(head), profile="current", own=AMD64, source_width=right).width == right


@pytest.mark.parametrize("width", [32, 64])
def test_source_width_is_ignored_for_self_describing_streams(width: int) -> None:
    escaped = detect(pad(FF4 + u64(64) + FF8), profile="current", own=I386, source_width=width)
    assert (escaped.encoding, escaped.width) == (Encoding.ESCAPED, 64)
    extended = detect(pad(FF4 + b"sinf"), profile="current", own=I386, source_width=width)
    assert (extended.encoding, extended.width) == (Encoding.EXTENDED, None)


@pytest.mark.parametrize("own,bits", [(I386, 32), (AMD64, 64)], ids=["i386", "amd64"])
@pytest.mark.parametrize("head", [FF4 + b"sinf", FF4 + u64(64), u32(64) + FF4, b""],
                         ids=["extended", "escaped", "native-i386", "empty"])
def test_legacy_profile_assumes_its_own_width(own: object, bits: int, head: bytes) -> None:
    d = detect(head, profile="legacy", own=own, source_width=None)  # type: ignore[arg-type]
    assert (d.encoding, d.width, d.rule[:1]) == (Encoding.NATIVE, bits, "L")


def test_legacy_profile_rejects_source_width() -> None:
    with pytest.raises(UsageError, match="--source-width"):
        detect(u32(64) + FF4, profile="legacy", own=I386, source_width=32)


@pytest.mark.parametrize("length", [8, 12, 16, 20, 23])
def test_truncated_64bit_head_is_a_truncation_not_an_ambiguity(length: int) -> None:
    """A 64-bit stream cut before byte 24 must not be 'refused: give --source-width'."""
    head = (u64(64) + FF8 + u32(5196) + b"vcpu")[:length]
    for width in (None, 64):
        with pytest.raises(StreamError) as info:
            detect(head, profile="current", own=AMD64, source_width=width)
        assert info.value.offset == length and "truncated" in str(info.value)
