"""An independent reading of Xen's migration v2 specs (libxc-migration-stream.pandoc,
revision 3, and libxl-migration-stream.pandoc) for the tests: split a stream into records
and check it the way a verifier written from the specs would, with the specs' numbers
written out. It deliberately uses nothing from xsmig.stream, so the tests do not grade
xsmig with its own tables.

`xen_check` adds the strictness of Xen's own tools/python/scripts/verify-stream-v2
(xen/migration/libxc.py and libxl.py, LGPL-2.1; the rules are re-expressed here, not
copied) as Xen 4.6-4.13 shipped them, the strictest: libxc image version 2 only, only
the record types their tables know (no optional record, no STATIC_DATA_END or CPU
policies, which Xen 4.14+ also accept), and in the libxl layer the known records,
emulator ids, and NUL-terminated key/value strings. Beyond what it checks: exactly one
LIBXC_CONTEXT, the libxc stream ending in its END before libxl's END, nothing after."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MARKER = b"\xff" * 8
XENF = b"XENF"
END, PAGE_DATA, PV_INFO, P2M_FRAMES = 0x0, 0x1, 0x2, 0x3
VCPU_BASIC, VCPU_EXTENDED, VCPU_XSAVE, SHARED_INFO, TSC_INFO = 0x4, 0x5, 0x6, 0x7, 0x8
VCPU_MSRS, VERIFY, CHECKPOINT, STATIC_DATA_END = 0xC, 0xD, 0xE, 0x10
KNOWN = set(range(0x13))
VCPU_RECORDS = {VCPU_BASIC, VCPU_EXTENDED, VCPU_XSAVE, VCPU_MSRS}


LIBXL_IDENT = b"LibxlFmt"
L_END, L_LIBXC, L_XENSTORE, L_EMU_CONTEXT, L_CKPT_END, L_CKPT_STATE = range(6)
XEN_VERIFIER_KNOWN = set(range(0x10))  # Xen's libxc.py rec_type_to_str: 0x00-0x0F


def record(rtype: int, body: bytes = b"") -> bytes:
    return struct.pack("<II", rtype, len(body)) + body + bytes(-len(body) % 8)


@dataclass
class V2Stream:
    ihdr: bytes  # 24 bytes
    dhdr: bytes  # 16 bytes
    records: list[tuple[int, bytes]] = field(default_factory=list)
    prefix: bytes = b""  # libxl framing: its header and LIBXC_CONTEXT record
    suffix: bytes = b""  # libxl framing: its records after the libxc END

    @property
    def offsets(self) -> list[int]:
        """Of each record header, as the records stand now."""
        out, pos = [], len(self.prefix) + 40
        for _, body in self.records:
            out.append(pos)
            pos += 8 + len(body) + (-len(body) % 8)
        return out

    def to_bytes(self) -> bytes:
        out = [self.prefix, self.ihdr, self.dhdr]
        for rtype, body in self.records:
            out.append(record(rtype, body))
        out.append(self.suffix)
        return b"".join(out)

    def index(self, rtype: int, nth: int = 0) -> int:
        return [i for i, (t, _) in enumerate(self.records) if t == rtype][nth]

    def offset_of(self, rtype: int, nth: int = 0) -> int:
        return self.offsets[self.index(rtype, nth)]


def split(data: bytes) -> V2Stream:
    """The libxc records of a bare libxc or a libxl stream (the libxl records around
    them kept as bytes)."""
    start = 24 if data[:8] == LIBXL_IDENT else 0  # libxl header (16) + LIBXC_CONTEXT (8)
    s = V2Stream(data[start:start + 24], data[start + 24:start + 40], prefix=data[:start])
    pos = start + 40
    while pos < len(data):
        rtype, length = struct.unpack_from("<II", data, pos)
        s.records.append((rtype, data[pos + 8:pos + 8 + length]))
        pos += 8 + length + (-length % 8)
        if rtype == END and start:
            s.suffix = data[pos:]
            break
    return s


def libxl_records(data: bytes) -> list[tuple[int, bytes]]:
    """A libxl stream's own records (LIBXC_CONTEXT's libxc stream skipped)."""
    out, pos = [], 16
    while pos < len(data):
        rtype, length = struct.unpack_from("<II", data, pos)
        out.append((rtype, data[pos + 8:pos + 8 + length]))
        pos += 8 + length + (-length % 8)
        if rtype == L_LIBXC:
            pos = _libxc_end(data, pos)
        elif rtype == L_END:
            break
    return out


def _libxc_end(data: bytes, pos: int) -> int:
    pos += 40
    while True:
        rtype, length = struct.unpack_from("<II", data, pos)
        pos += 8 + length + (-length % 8)
        if rtype == END:
            return pos


def xenstore_pairs(body: bytes) -> list[tuple[bytes, bytes]]:
    """EMULATOR_XENSTORE_DATA's key/value strings, after the emulator header."""
    parts = body[8:-1].split(b"\0")
    return list(zip(parts[0::2], parts[1::2], strict=True))


def xen_check(data: bytes) -> list[str]:
    """Problems Xen's own verify-stream-v2 reports (-f libxl for a libxl stream, -f
    libxc for a bare one), plus the structure a restorer needs; [] when valid."""
    if data[:8] != LIBXL_IDENT:
        problems, end = _libxc_check(data, 0, xen=True)
        return problems + (["bytes after the libxc END"] if end < len(data) else [])
    return _libxl_check(data, xen=True)


def _libxl_check(data: bytes, *, xen: bool) -> list[str]:
    problems: list[str] = []
    if len(data) < 16:
        return ["truncated libxl header"]
    _ident, version, options = struct.unpack_from(">8sII", data)
    if version != 2:
        problems.append(f"libxl version {version}")
    if options & 0xFFFC:  # Xen's HDR_OPT_RESZ_MASK
        problems.append("reserved libxl options")
    if options & 1:
        problems.append("big-endian libxl stream")
    pos, libxc_seen = 16, 0
    while True:
        if pos + 8 > len(data):
            return [*problems, "libxl stream without END"]
        rtype, length = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + 8 + length]
        padding = data[pos + 8 + length:pos + 8 + length + (-length % 8)]
        if len(body) != length or len(padding) != -length % 8:
            return [*problems, "truncated libxl record"]
        if rtype > L_CKPT_STATE:  # Xen's verifier: "Unrecognised record type"
            return [*problems, f"unknown libxl record {rtype:#x}"]
        if any(padding):
            problems.append(f"non-zero padding after libxl record at {pos}")
        pos += 8 + length + len(padding)
        if rtype in (L_END, L_LIBXC, L_CKPT_END) and length:
            problems.append(f"libxl record {rtype} must be empty")
        if rtype == L_CKPT_STATE and not length:
            problems.append("empty CHECKPOINT_STATE")
        if rtype in (L_XENSTORE, L_EMU_CONTEXT):
            if length < 8:
                problems.append("emulator record shorter than its header")
            elif struct.unpack_from("<I", body)[0] not in (0, 1, 2):
                problems.append("unknown emulator id")
            elif rtype == L_XENSTORE and length > 8:
                if body[-1:] != b"\0":
                    problems.append("xenstore data not NUL-terminated")
                elif len(body[8:-1].split(b"\0")) % 2:
                    problems.append("xenstore data: an odd number of strings")
        if rtype == L_LIBXC:
            libxc_seen += 1
            more, pos = _libxc_check(data, pos, xen=xen)
            problems += more
        if rtype == L_END:
            break
    if libxc_seen != 1:
        problems.append(f"{libxc_seen} LIBXC_CONTEXT records")
    if pos != len(data):
        problems.append("bytes after the libxl END")
    return problems


def spec_check(data: bytes) -> list[str]:
    """Problems a verifier faithful to the specs (libxc revision 3; libxl around it)
    reports; [] for a valid x86 PV stream."""
    if data[:8] == LIBXL_IDENT:
        return _libxl_check(data, xen=False)
    problems, end = _libxc_check(data, 0, xen=False)
    return problems + (["bytes after END"] if end < len(data) else [])


def _libxc_check(data: bytes, base: int, *, xen: bool) -> tuple[list[str], int]:
    """Problems of the libxc stream at `base`, and the offset after its END. xen: as
    Xen's verifier (version 2, its known record types only), else as spec revision 3."""
    problems: list[str] = []
    if len(data) < base + 40:
        return ["truncated libxc headers"], len(data)
    marker, ident, version, options, res1, res2 = struct.unpack_from(">8s4sIHHI", data, base)
    if marker != MARKER or ident != XENF:
        return ["bad marker or id"], len(data)
    if version not in ((2,) if xen else (2, 3)):
        problems.append(f"version {version}")
    if options & 0xFFFE or res1 or res2:
        problems.append("reserved bits in the image header")
    if options & 1:
        problems.append("big-endian")
    gtype, shift, res, _major, _minor = struct.unpack_from("<IHHII", data, base + 24)
    if gtype != 1 or shift != 12 or res:
        problems.append("domain header")
    pos, seen, ended = base + 40, [], False
    while pos < len(data) and not ended:
        if pos + 8 > len(data):
            problems.append("truncated record header")
            break
        rtype, length = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + 8 + length]
        padding = data[pos + 8 + length:pos + 8 + length + (-length % 8)]
        if len(body) != length or len(padding) != -length % 8:
            problems.append("truncated record")
            break
        if any(padding):
            problems.append(f"non-zero padding at {pos}")
        if xen and rtype not in XEN_VERIFIER_KNOWN:
            problems.append(f"unrecognised record type {rtype:#x} (Xen's verifier)")
        elif rtype not in KNOWN and not rtype & 0x80000000:
            problems.append(f"unknown mandatory record {rtype:#x}")
        if rtype == 0xB:
            problems.append("TOOLSTACK record (deprecated)")
        problems += _check_body(rtype, body)
        seen.append(rtype)
        ended = rtype == END
        pos += 8 + length + len(padding)
    if not ended:
        problems.append("no END record")
    problems += _check_order(seen, version)
    return problems, pos


def _check_body(rtype: int, body: bytes) -> list[str]:
    n = len(body)
    if rtype in (END, VERIFY, CHECKPOINT, STATIC_DATA_END):
        return [] if n == 0 else [f"record {rtype:#x} must be empty"]
    if rtype == PV_INFO:
        if n != 8:
            return ["X86_PV_INFO length"]
        w, levels, r1, r2 = struct.unpack("<BBHI", body)
        return [] if w in (4, 8) and levels in (3, 4) and not r1 and not r2 else ["PV_INFO"]
    if rtype == PAGE_DATA:
        if n < 8:
            return ["PAGE_DATA too short"]
        count, res = struct.unpack_from("<II", body)
        if count == 0 or res or n < 8 + 8 * count:
            return ["PAGE_DATA header"]
        pfns = struct.unpack_from(f"<{count}Q", body, 8)
        bad = [p for p in pfns if p >> 60 in (5, 6, 7, 8) or (p >> 52) & 0xFF]
        data_pages = sum(1 for p in pfns if p >> 60 not in (0xD, 0xE, 0xF))
        problems = ["PAGE_DATA pfn word"] if bad else []
        if n != 8 + 8 * count + 4096 * data_pages:
            problems.append("PAGE_DATA length")
        return problems
    if rtype == P2M_FRAMES:
        return [] if n >= 8 and n % 8 == 0 else ["X86_PV_P2M_FRAMES length"]
    if rtype in VCPU_RECORDS:
        if n < 8:
            return ["vCPU record too short"]
        return ["vCPU reserved"] if struct.unpack_from("<I", body, 4)[0] else []
    if rtype == SHARED_INFO:
        return [] if n == 4096 else ["SHARED_INFO length"]
    if rtype == TSC_INFO:
        return [] if n == 24 and not struct.unpack_from("<I", body, 20)[0] else ["TSC_INFO"]
    return []


def _check_order(seen: list[int], version: int) -> list[str]:
    """X86_PV_INFO, (v3) STATIC_DATA_END, X86_PV_P2M_FRAMES, PAGE_DATA, vCPU records."""
    def first(t: int) -> int:
        return seen.index(t) if t in seen else -1

    problems = []
    if CHECKPOINT in seen:  # each checkpoint starts another round of pages and vCPUs
        seen = seen[:seen.index(CHECKPOINT)]
    info, p2m, static = first(PV_INFO), first(P2M_FRAMES), first(STATIC_DATA_END)
    pages = [i for i, t in enumerate(seen) if t == PAGE_DATA]
    vcpus = [i for i, t in enumerate(seen) if t in VCPU_RECORDS]
    if info < 0 or p2m < 0 or not pages or VCPU_BASIC not in seen:
        problems.append("a required PV record is missing")
    elif not info < p2m < pages[0] or (vcpus and vcpus[0] < pages[-1]):
        problems.append("PV record order")
    if version >= 3 and not 0 <= static < p2m:
        problems.append("v3 without STATIC_DATA_END before the p2m frames")
    return problems
