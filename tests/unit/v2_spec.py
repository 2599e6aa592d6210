"""An independent reading of Xen's migration v2 spec (libxc-migration-stream.pandoc,
revision 3) for the tests: split a stream into records and check it the way a verifier
written from the spec would, with the spec's numbers written out. It deliberately uses
nothing from xsmig.stream, so the tests do not grade xsmig with its own tables."""

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


@dataclass
class V2Stream:
    ihdr: bytes  # 24 bytes
    dhdr: bytes  # 16 bytes
    records: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def offsets(self) -> list[int]:
        """Of each record header, as the records stand now."""
        out, pos = [], 40
        for _, body in self.records:
            out.append(pos)
            pos += 8 + len(body) + (-len(body) % 8)
        return out

    def to_bytes(self) -> bytes:
        out = [self.ihdr, self.dhdr]
        for rtype, body in self.records:
            out.append(struct.pack("<II", rtype, len(body)) + body + bytes(-len(body) % 8))
        return b"".join(out)

    def index(self, rtype: int, nth: int = 0) -> int:
        return [i for i, (t, _) in enumerate(self.records) if t == rtype][nth]

    def offset_of(self, rtype: int, nth: int = 0) -> int:
        return self.offsets[self.index(rtype, nth)]


def split(data: bytes) -> V2Stream:
    s = V2Stream(data[:24], data[24:40])
    pos = 40
    while pos < len(data):
        rtype, length = struct.unpack_from("<II", data, pos)
        s.records.append((rtype, data[pos + 8:pos + 8 + length]))
        pos += 8 + length + (-length % 8)
    return s


def spec_check(data: bytes) -> list[str]:
    """Problems a spec-faithful verifier reports; [] for a valid x86 PV stream."""
    problems: list[str] = []
    marker, ident, version, options, res1, res2 = struct.unpack_from(">8s4sIHHI", data)
    if marker != MARKER or ident != XENF:
        return ["bad marker or id"]
    if version not in (2, 3):
        problems.append(f"version {version}")
    if options & 0xFFFE or res1 or res2:
        problems.append("reserved bits in the image header")
    if options & 1:
        problems.append("big-endian")
    gtype, shift, res, _major, _minor = struct.unpack_from("<IHHII", data, 24)
    if gtype != 1 or shift != 12 or res:
        problems.append("domain header")
    pos, seen, ended = 40, [], False
    while pos < len(data):
        if ended:
            problems.append("bytes after END")
            break
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
        if rtype not in KNOWN and not rtype & 0x80000000:
            problems.append(f"unknown mandatory record {rtype:#x}")
        problems += _check_body(rtype, body)
        seen.append(rtype)
        ended = rtype == END
        pos += 8 + length + len(padding)
    if not ended:
        problems.append("no END record")
    problems += _check_order(seen, version)
    return problems


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
