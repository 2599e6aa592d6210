"""Which encoding and which word width a stream has, from its first bytes.

The rules are the table in docs/stream-format.md ("Detection"); each row's comment
says why it cannot misread a stream that a real saver wrote."""

from __future__ import annotations

import struct
from typing import NamedTuple

from xsmig.errors import StreamError, StreamRefused, UsageError
from xsmig.layout import BIG, BYTE_ORDERS, LITTLE, Layout
from xsmig.stream.byteorder import big_width, native_order
from xsmig.stream.format import (
    ESCAPE,
    LIBXL_IDENT,
    MAX_P2M_SIZE,
    SINF,
    V2_ID,
    V2_MARKER,
    XL_MAGIC,
    Encoding,
    V2Format,
    rule,
)

HEAD_BYTES = 24
PROFILES = ("current", "legacy")


class Detection(NamedTuple):
    encoding: Encoding
    width: int | None  # bits of the stream's unsigned long; None: the sinf block says
    rule: str  # the row of the detection table that decided
    ext_info: bool | None = None  # what the rule proved about PV extended info, if anything
    byte_order: str = LITTLE  # of the stream's integers (extended: the sinf block says)
    note: str | None = None  # one line for stderr: a decision the operator should know of
    framing: str | None = None  # v2: "libxl" or "libxc"; "xl": an xl save file's header


def _block_id(b: bytes) -> bool:
    return len(b) == 4 and all(0x20 <= c < 0x7F for c in b)


def detect(head: bytes, *, profile: str, own: Layout, source_width: int | None,
           source_byte_order: str | None = None) -> Detection:
    if profile == "legacy":
        if source_width is not None or source_byte_order is not None:
            raise UsageError("--source-width and --source-byte-order need --profile current: "
                             "the legacy restorer knew only its own ABI")
        # Before the fix: every stream is assumed native, of the restorer's own width and
        # byte order.
        return Detection(Encoding.NATIVE, own.bits, rule("L"),
                         byte_order=own.byte_order)
    if source_byte_order is not None and source_byte_order not in BYTE_ORDERS:
        raise UsageError(f"--source-byte-order must be little or big, not {source_byte_order!r}")
    native = len(head) >= 8 and head[:4] != b"\xff" * 4
    if native and native_order(head, source_byte_order) == BIG:  # rules B1, B3-B5
        width, row, ext = big_width(head, source_width)
        return Detection(Encoding.NATIVE, width, row, ext_info=ext, byte_order=BIG)
    if len(head) < 8:
        raise StreamError("stream truncated: fewer than 8 bytes", len(head))
    w0, w1 = struct.unpack_from("<II", head)
    if len(head) >= 12 and int.from_bytes(head[:8], "big") == V2_MARKER and \
            int.from_bytes(head[8:12], "big") == V2_ID:
        # R0: a v2 image header. No legacy stream has 8 bytes of ones (the spec's rule): a
        # native or escaped p2m_size is <= 0x0FFFFFFF and an extended stream has "sinf".
        # --source-width is ignored, as with escaped and extended streams: v2 has no ulong.
        return Detection(Encoding.V2, None, rule("R0"), framing=V2Format.LIBXC)
    if int.from_bytes(head[:8], "big") == LIBXL_IDENT:
        # R0L: libxl's header, "LibxlFmt". Its first word is 0x7862694c little-endian,
        # 0x4c696278 big-endian: above any p2m_size, and not the escape.
        return Detection(Encoding.V2, None, rule("R0L"), framing=V2Format.LIBXL)
    if head[:8] == XL_MAGIC[:8]:
        # R0X: an `xl save` file's magic ("Xen save": 0x206e6558, above any p2m_size); the
        # stream after xl's header is detected by these rules again.
        if head != XL_MAGIC[:len(head)]:
            raise StreamError("not an xl save file: its magic is not \"Xen saved domain, xl "
                              "format\"", 0)
        return Detection(Encoding.V2, None, rule("R0X"), framing="xl")
    if w0 == ESCAPE:
        if head[4:8] == SINF:
            # R1: "sinf" read as a uint32 is 0x666E6973 > 0x0FFFFFFF: never an escaped p2m_size.
            return Detection(Encoding.EXTENDED, None, rule("R1"))
        if 0 < w1 <= MAX_P2M_SIZE and head[8:12] == b"\0\0\0\0" and source_byte_order != BIG:
            # R2: an escaped stream continues with a 64-bit p2m_size <= 0x0FFFFFFF.
            return Detection(Encoding.ESCAPED, 64, rule("R2"))
        if (len(head) >= 12 and w1 == 0 and 0 < struct.unpack_from(">I", head, 8)[0]
                <= MAX_P2M_SIZE and source_byte_order != LITTLE):
            # B2: big-endian escaped: the zero top half of p2m_size comes first.
            return Detection(Encoding.ESCAPED, 64, rule("B2"),
                             byte_order=BIG)
        if len(head) < 12:
            raise StreamError("stream truncated: fewer than 12 bytes after an escape", len(head))
        if w1 == ESCAPE:
            raise StreamError(f"v2 marker, but image id {head[8:12].hex()} is not 58454e46 "
                              "(XENF)", 8)
        raise StreamError("unknown stream: escape 0xFFFFFFFF followed by neither a sinf "
                          "block nor a 64-bit p2m_size", 4)
    if w0 == 0 or w0 > MAX_P2M_SIZE:
        raise StreamError(f"not a save stream: first word {w0:#x} is no valid p2m_size "
                          f"(1..{MAX_P2M_SIZE:#x}) and no escape", 0)
    detection = _detect_native(head, w1)
    if detection is None:
        if len(head) < HEAD_BYTES:
            # Every stream is longer than the head: R4 could not be evaluated.
            raise StreamError(f"stream truncated: fewer than {HEAD_BYTES} bytes", len(head))
        if source_width is None:
            # R6, the mail's rule: "if the first 4 bytes are not 0xffffffff, this is a normal
            # native word size stream". Same-width migration keeps working without flags; a
            # stream of the other width read this way fails the parser's checks.
            return Detection(Encoding.NATIVE, own.bits,
                             f"{rule('R6')}: own width {own.bits}",
                             note=f"native stream without extended info: reading it as this "
                                  f"toolstack's own {own.bits}-bit width (the mail's rule); "
                                  f"give --source-width 32|64 if it came from the other width")
        return Detection(Encoding.NATIVE, source_width, f"{rule('R7')} {source_width}")
    if source_width is not None and source_width != detection.width:
        raise StreamRefused(f"the stream is {detection.width}-bit ({detection.rule}) but "
                            f"--source-width {source_width} was given", 4)
    return detection


def _detect_native(head: bytes, w1: int) -> Detection | None:
    if w1 == ESCAPE:
        # R3: a 64-bit saver's bytes 4-7 are the top half of p2m_size <= 0x0FFFFFFF: zero.
        return Detection(Encoding.NATIVE, 32, rule("R3"),
                         ext_info=True)
    if w1 == 0 and head[8:16] == b"\xff" * 8 and _block_id(head[20:24]):
        # R4: zero top half, then the 64-bit signature and a block id. A 32-bit saver would
        # need frame-list entry 0 = 0 followed by two enable_verify_mode chunks and an id.
        return Detection(Encoding.NATIVE, 64, rule("R4"), ext_info=True)
    if w1 != 0:
        # R5: non-zero bytes 4-7 are impossible from a 64-bit saver (see R3): 32-bit, and
        # since they are not the signature, the stream has no extended info.
        return Detection(Encoding.NATIVE, 32, rule("R5"),
                         ext_info=False)
    return None  # R6: ambiguous

