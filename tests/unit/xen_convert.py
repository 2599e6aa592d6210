"""Xen's legacy-to-v2 converter for PV streams, for the tests: a port of the logic of
tools/python/scripts/convert-legacy-stream (xen-project/xen, LGPL-2.1), PV paths only,
written to Python 3 with the same reads, checks and output, record by record:

- `-w 32|64` is the legacy toolstack's width (`twidth`): every ulong is 4 or 8 bytes;
- `-f libxc|libxl`: libxl wraps the output in libxl's header (options: little-endian and
  "legacy converted"), LIBXC_CONTEXT, ..., EMULATOR_XENSTORE_DATA (the toolstack chunk's
  physmap as `physmap/<phys_offset>/start_addr|size|name`, when there is one), END; libxc
  discards the toolstack data;
- bare XTAB batch entries (0xF0000000) and the tail's unmapped pfns are dropped;
- the xsave record copies the `size` bytes after xfeature_mask/size unchanged, after
  asserting xcnt - 16 == size;
- the libxc image header says version 2, the domain header Xen 0.1 ("converted").

It uses nothing from xsmig: it is the oracle for "a Xen-style conversion of xsmig's
streams restores to the source digest"."""

from __future__ import annotations

import io
import struct

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"


class ConvertError(Exception):
    pass


class _Converter:
    def __init__(self, data: bytes, twidth: int, fmt: str) -> None:
        self.fin = io.BytesIO(data)
        self.out = io.BytesIO()
        self.twidth = twidth
        self.libxl = fmt == "libxl"
        self.emu_xenstore = b""
        self.width = self.levels = self.basic_len = self.xsave_len = 0
        self.extd = False
        self.online: list[int] = []

    # -- reading --
    def rdexact(self, n: int) -> bytes:
        data = self.fin.read(n)
        if len(data) != n:
            raise ConvertError("Stream truncated")
        return data

    def unpack_exact(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.rdexact(struct.calcsize(fmt)))

    def ulongs(self, n: int) -> tuple[int, ...]:
        return self.unpack_exact(("=" + "I" * n) if self.twidth == 32 else ("=" + "Q" * n))

    # -- writing --
    def record(self, rtype: int, *parts: bytes) -> None:
        body = b"".join(parts)
        self.out.write(struct.pack("=II", rtype, len(body)) + body + bytes(-len(body) % 8))

    def convert(self) -> bytes:
        (p2m_size,) = self.ulongs(1)
        if self.libxl:
            self.out.write(struct.pack(">QII", 0x4C6962786C466D74, 2, 0 | 2))  # LE | LEGACY
            self.record(1)  # LIBXC_CONTEXT
        self.out.write(struct.pack(">QIIHHI", 0xFFFFFFFFFFFFFFFF, 0x58454E46, 2, 0, 0, 0))
        self.out.write(struct.pack("=IHHII", 1, 12, 0, 0, 1))  # x86 PV, converter 0.1
        self.extended_info()
        fpp = 4096 // self.width
        frames = self.ulongs((p2m_size - 1) // fpp + 1)
        self.record(3, struct.pack("=II", 0, p2m_size - 1), struct.pack(f"={len(frames)}Q",
                                                                        *frames))
        self.chunks()
        self.tail()
        if self.libxl and self.emu_xenstore:
            self.record(2, struct.pack("=II", 0, 0) + self.emu_xenstore)
        if self.libxl:
            self.record(0)
        if self.fin.read(1):
            raise ConvertError("trailing data")  # the script stops reading; flag it here
        return self.out.getvalue()

    def extended_info(self) -> None:
        (marker,) = self.ulongs(1)
        if marker != (1 << self.twidth) - 1:
            raise ConvertError(f"Unexpected extended info marker {marker:#x}")
        (total,) = self.unpack_exact("=I")
        so_far = 0
        while so_far < total:
            blkid, size = self.unpack_exact("=4sI")
            data = self.rdexact(size)
            so_far += 8 + size
            if blkid == b"vcpu":
                self.basic_len = size
                if size == 0x1430:
                    self.width, self.levels = 8, 4
                elif size == 0xAF0:
                    self.width, self.levels = 4, 3
                else:
                    raise ConvertError("Unable to determine guest width/level")
                self.record(2, struct.pack("=BBHI", self.width, self.levels, 0, 0))
            elif blkid == b"extv":
                self.extd = True
            elif blkid == b"xcnt":
                (self.xsave_len,) = struct.unpack("=I", data[:4])
            else:
                raise ConvertError("Unrecognised extended block")
        if so_far != total:
            raise ConvertError("Overshot Extended Info size")

    def chunks(self) -> None:
        while True:
            (marker,) = self.unpack_exact("=i")
            if marker == 0:
                return
            if marker > 0:
                if marker > 1024:
                    raise ConvertError("Page batch exceeded MAX_BATCH")
                pfns = [x for x in self.ulongs(marker) if x != 0xF0000000]
                if len(set(pfns)) != len(pfns):
                    raise ConvertError("Duplicate pfns in batch")
                pages = self.rdexact(4096 * sum(1 for x in pfns
                                                if (x & 0xF0000000) < 0xD0000000))
                words = [((x & 0xF0000000) << 32) | (x & 0x0FFFFFFF) for x in pfns]
                self.record(1, struct.pack("=II", len(words), 0),
                            struct.pack(f"={len(words)}Q", *words), pages)
            elif marker == -1:
                pass  # verify mode
            elif marker == -2:
                (max_id,) = self.unpack_exact("=i")
                if max_id > 4095:
                    raise ConvertError("Vcpu max_id out of range")
                for idx, word in enumerate(self.unpack_exact("=" + "Q" * (max_id // 64 + 1))):
                    self.online += [idx * 64 + b for b in range(64) if word >> b & 1]
            elif marker == -7:
                mode, nsec, khz, incarn = self.unpack_exact("=IQII")
                self.record(8, struct.pack("=IIQII", mode, khz, nsec, incarn, 0))
            elif marker == -9:
                pass  # last checkpoint
            elif marker == -18:
                (size,) = self.unpack_exact("=I")
                if size:
                    data = self.rdexact(size)
                    if self.libxl:
                        self.toolstack(data)
            else:
                raise ConvertError(f"Unrecognised chunk {marker}")  # (HVM chunks: not PV)

    def toolstack(self, data: bytes) -> None:
        if len(data) < 8:
            raise ConvertError("Overly short libxl toolstack data")
        ver, count = struct.unpack("=II", data[:8])
        data = data[8:]
        if ver != 1:
            raise ConvertError(f"Cannot decode libxl toolstack version {ver}")
        for _ in range(count):
            if len(data) < 28:
                raise ConvertError("Remaining data too short for physmap header")
            phys, start, size, namelen = struct.unpack("=QQQI", data[:28])
            data = data[28:]
            if namelen == 0:
                raise ConvertError("No physmap info name")
            if self.twidth == 64:  # 64bit leaked 4 bytes of padding onto the end of name
                namelen += 4
            if len(data) < namelen:
                raise ConvertError("Remaining data too short for physmap name")
            name, data = data[:namelen], data[namelen:]
            if self.twidth == 64:
                name = name[:-4]
            if name[-1:] != b"\0":
                raise ConvertError("physmap name not NUL terminated")
            root = b"physmap/%x" % phys
            kv = [root + b"/start_addr", b"%x" % start, root + b"/size", b"%x" % size,
                  root + b"/name", name[:-1]]
            self.emu_xenstore += b"\0".join(kv) + b"\0"

    def tail(self) -> None:
        (unmapped,) = self.unpack_exact("=I")
        if unmapped:
            self.ulongs(unmapped)  # "bogus": discarded
        for vcpu_id in self.online:
            head = struct.pack("=II", vcpu_id, 0)
            self.record(4, head, self.rdexact(self.basic_len))
            if self.extd:
                self.record(5, head, self.rdexact(128))
            if self.xsave_len:
                _mask, size = self.unpack_exact("=QQ")
                if self.xsave_len - 16 != size:
                    raise ConvertError("AssertionError: xsave_len - 16 == size")
                self.record(6, head, self.rdexact(size))
        self.record(7, self.rdexact(4096))
        self.record(0)


def convert_legacy(data: bytes, twidth: int, fmt: str = "libxc", xl: bool = False) -> bytes:
    """convert-legacy-stream -w twidth -g pv -f fmt [-x]."""
    prefix = b""
    if xl:  # skip_xl_header: copied, with the STREAMv2 flag set for libxl output
        if data[:32] != XL_MAGIC:
            raise ConvertError("No xl header")
        byteorder, mflags, oflags, optlen = struct.unpack_from("=IIII", data, 32)
        if fmt == "libxl":
            mflags |= 2
        prefix = data[:32] + struct.pack("=IIII", byteorder, mflags, oflags, optlen)
        prefix += data[48:48 + optlen]
        data = data[48 + optlen:]
    return prefix + _Converter(data, twidth, fmt).convert()


def xl_file(stream: bytes, *, libxl: bool, config: bytes = b'{"c_info": {"type": "pv"}}'
            ) -> bytes:
    """An `xl save` file around a stream, as xl_saverestore.c writes it."""
    optional = struct.pack("=I", len(config)) + config
    flags = (2 if libxl else 0) | (1 if config else 0)
    return XL_MAGIC + struct.pack("=IIII", 0x01020304, flags, 0, len(optional)) + optional + stream
