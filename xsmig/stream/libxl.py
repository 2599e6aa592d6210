"""The layers around the libxc stream: libxl's records (what `xl migrate` and `xl save`
send) and an `xl save` file's header. Layouts: format.py (LIBXL_*, XL_*); the byte-by-byte
description: docs/stream-format.md ("The libxl layer", "xl save files").

Checked as Xen's own verify-stream-v2 checks them, each with the byte offset: the header
(ident, version 2, reserved options), record types, lengths and zero padding, the
emulator header and NUL-terminated key/value strings; and beyond it what a restorer
needs: exactly one LIBXC_CONTEXT, before END; the libxc stream inside ending in its own
END before libxl's; the xenstore keys being the physmap's, as Xen's converter writes
them; nothing after END."""

from __future__ import annotations

import re
from collections.abc import Callable

from xsmig.domain import PhysmapEntry
from xsmig.errors import StreamError, StreamRefused
from xsmig.stream import format as fmt
from xsmig.stream.detect import Detection
from xsmig.stream.io import StreamReader
from xsmig.stream.reader import StreamHeader, StreamSink
from xsmig.stream.v2reader import V2Parser, read_padding

# physmap/<phys_offset>/<field>: lower-case hex without 0x, at most 64 bits
_PHYSMAP_KEY = re.compile(rb"physmap/([0-9a-f]{1,16})/(start_addr|size|name)")
_HEX = re.compile(rb"[0-9a-f]{1,16}")


def read_xl_header(r: StreamReader) -> dict[str, object]:
    """An `xl save` file's header and optional data (the domain config), checked as xl's
    restore does: the magic, the writer's byte order, no unknown mandatory flag."""
    magic = r.read(len(fmt.XL_MAGIC), "xl header magic")
    if magic != fmt.XL_MAGIC:
        raise StreamError("not an xl save file: its magic is not \"Xen saved domain, xl "
                          "format\"", 0)
    at = r.offset
    order, mandatory, optional, length = r.unpack(fmt.XL_HDR, "xl header")
    if order != fmt.XL_BYTEORDER:
        raise StreamRefused(f"xl header byte order {order:#010x}: written by a big-endian "
                            "host, not supported", at)
    if mandatory & ~fmt.XL_FLAGS_KNOWN:
        raise StreamRefused(f"xl header mandatory flags {mandatory:#x}: unknown flags "
                            f"{mandatory & ~fmt.XL_FLAGS_KNOWN:#x}", at + 4)
    if length > fmt.MAX_XL_OPTIONAL:
        raise StreamError(f"xl optional data of {length} bytes exceeds "
                          f"{fmt.MAX_XL_OPTIONAL}", at + 12)
    base = r.offset
    data = r.read(length, "xl optional data")
    config = 0
    if length:
        if length < 4:
            raise StreamError("xl optional data shorter than its config length", base)
        config = int.from_bytes(data[:4], "little")
        if config != length - 4:
            raise StreamError(f"xl config of {config} bytes in {length - 4} bytes of optional "
                              "data", base)
    return {"mandatory_flags": mandatory, "optional_flags": optional, "config_bytes": config,
            "libxl": bool(mandatory & fmt.XL_FLAG_STREAMV2), "stream_offset": r.offset}


def parse_xenstore(data: bytes, at: int) -> dict[bytes, bytes]:
    """EMULATOR_XENSTORE_DATA's body after the emulator header: NUL-terminated key,
    value, key, value... (as Xen's verifier splits it), keys unique."""
    if not data:
        return {}
    if data[-1:] != b"\0":
        raise StreamError("EMULATOR_XENSTORE_DATA key/value data is not NUL-terminated",
                          at + len(data) - 1)
    parts = data[:-1].split(b"\0")
    if len(parts) % 2:
        raise StreamError(f"EMULATOR_XENSTORE_DATA holds {len(parts)} strings, not "
                          "key/value pairs", at)
    out: dict[bytes, bytes] = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=True):
        if key in out:
            raise StreamError(f"EMULATOR_XENSTORE_DATA repeats the key {key!r}", at)
        out[key] = value
    return out


def physmap_from_xenstore(kv: dict[bytes, bytes], at: int,
                          unrepresentable: Callable[[str, int], None]) -> list[PhysmapEntry]:
    """The physmap, from `physmap/<phys_offset>/start_addr|size|name` keys, in the order
    the entries first appear (the toolstack chunk's order, as Xen's converter keeps it)."""
    fields: dict[int, dict[bytes, bytes]] = {}
    for key, value in kv.items():
        m = _PHYSMAP_KEY.fullmatch(key)
        if m is None:
            unrepresentable(f"xenstore key {key.decode('latin-1')!r}: the simulated device "
                            "model keeps only the physmap", at)
            continue
        fields.setdefault(int(m.group(1), 16), {})[m.group(2)] = value
    entries = []
    for phys, f in fields.items():
        missing = [k for k in fmt.PHYSMAP_FIELDS_KV if k.encode() not in f]
        if missing:
            raise StreamError(f"physmap entry {phys:#x} lacks its {', '.join(missing)} key", at)
        start, size, name = f[b"start_addr"], f[b"size"], f[b"name"]
        if not _HEX.fullmatch(start) or not _HEX.fullmatch(size):
            raise StreamError(f"physmap entry {phys:#x}: start_addr {start!r} or size "
                              f"{size!r} is not hex", at)
        if len(name) + 1 > fmt.MAX_PHYSMAP_NAME:
            raise StreamError(f"physmap entry {phys:#x}: name of {len(name)} bytes", at)
        entries.append(PhysmapEntry(phys, int(start, 16), int(size, 16), name + b"\0"))
    return entries


class LibxlParser:
    """libxl's records around a V2Parser; the events a sink sees are those of a bare
    libxc stream, with the physmap (if any) before the vCPUs."""

    def __init__(self, r: StreamReader, detection: Detection, libxc: V2Parser) -> None:
        self.r = r
        self.detection = detection
        self.libxc = libxc

    def parse(self, sink: StreamSink, info: dict[str, object]) -> StreamHeader:
        r = self.r
        at = r.offset
        ident, version, options = r.unpack(fmt.LIBXL_HDR, "libxl header")
        if ident != fmt.LIBXL_IDENT:
            raise StreamError(f"libxl header ident {ident:#018x} is not LibxlFmt", at)
        if version != fmt.LIBXL_VERSION:
            raise StreamRefused(f"libxl stream version {version}: this reader knows version "
                                f"{fmt.LIBXL_VERSION}", at + 8)
        if options & fmt.LIBXL_OPT_RESERVED:
            raise StreamError(f"reserved bits set in the libxl header options ({options:#x})",
                              at + 12)
        if options & fmt.LIBXL_OPT_BIG_ENDIAN:
            raise StreamRefused("big-endian libxl streams are not supported", at + 12)
        info.update({"libxl_version": version, "libxl_options": options})
        header: StreamHeader | None = None
        physmap: tuple[int, list[PhysmapEntry]] | None = None
        physmap_at = 0
        while True:
            at = r.offset
            rtype, length = r.unpack(fmt.V2_RHDR, "libxl record header")
            rec = fmt.LIBXL_RECORDS.get(rtype)
            if rec is None:
                if not rtype & fmt.V2_OPTIONAL:
                    raise StreamRefused(f"unknown mandatory libxl record type {rtype:#x}", at)
                r.skip(length, f"optional libxl record {rtype:#x}", self.libxc.scratch)
                self._padding(length, f"optional libxl record {rtype:#x}")
                continue
            if rec.exact is not None and length != rec.exact:
                raise StreamError(f"libxl {rec.name} record body is {length} bytes, must be "
                                  f"{rec.exact}", at + 4)
            if not rec.min_length <= length <= rec.max_length:
                raise StreamError(f"libxl {rec.name} record of {length} bytes: must be "
                                  f"{rec.min_length}..{rec.max_length}", at + 4)
            role = rec.role
            if role is fmt.LibxlRole.LIBXC:
                if header is not None:
                    raise StreamError("a second LIBXC_CONTEXT record", at)
                self.libxc.framing = info
                header = self.libxc.parse(sink, framed=True)
                continue  # LIBXC_CONTEXT is empty: no padding
            if role is fmt.LibxlRole.END:
                if header is None:
                    raise StreamError("libxl END without a LIBXC_CONTEXT record", at)
                if physmap is not None:
                    sink.on_chunk(physmap_at, fmt.LREC_EMULATOR_XENSTORE_DATA,
                                  fmt.EV_TOOLSTACK, physmap)
                self.libxc.finish(sink, check_eof=False)
                if not r.at_eof():
                    raise StreamError("trailing data after the libxl END record", r.offset)
                return header
            body = r.read(length, f"libxl {rec.name} record")
            self._padding(length, rec.name)
            if role is fmt.LibxlRole.XENSTORE:
                emulator, _index = fmt.LIBXL_EMULATOR_HDR.unpack_from(body)
                if emulator not in fmt.EMULATOR_IDS:
                    raise StreamError(f"EMULATOR_XENSTORE_DATA for unknown emulator id "
                                      f"{emulator:#x}", at + 8)
                base = at + 8 + fmt.LIBXL_EMULATOR_HDR.size
                kv = parse_xenstore(body[fmt.LIBXL_EMULATOR_HDR.size:], base)
                entries = physmap_from_xenstore(kv, base, self.libxc.unrepresentable)
                if entries:
                    if physmap is not None:
                        raise StreamError("a second EMULATOR_XENSTORE_DATA record with a "
                                          "physmap", at)
                    physmap, physmap_at = (fmt.PHYSMAP_TOOLSTACK_VERSION, entries), at
            elif role is fmt.LibxlRole.NOT_PV:
                raise StreamRefused(f"{rec.name} record: an emulator's saved state, which "
                                    "an x86 PV domain here does not have", at)
            else:
                raise StreamRefused(f"{rec.name} record: checkpointed (Remus/COLO) streams "
                                    "are not supported", at)

    def _padding(self, length: int, name: str) -> None:
        read_padding(self.r, length, name, layer="libxl ")
