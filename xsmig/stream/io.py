"""Byte-counting stream ends: every error can name the offset where it happened."""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any, BinaryIO

from xsmig.errors import StreamError


@lru_cache(maxsize=64)
def in_order(fmt: struct.Struct, byte_order: str) -> struct.Struct:
    """`fmt` (declared little-endian, "<...") in the given byte order."""
    if byte_order == "little":
        return fmt
    return struct.Struct(">" + fmt.format.lstrip("<>=!@"))


class StreamReader:
    """Reads exactly what is asked, or raises StreamError naming the offset.

    Callers check every size read from the stream against a bound before asking for
    that many bytes, so a hostile size cannot make us allocate."""

    def __init__(self, f: BinaryIO, prefix: bytes = b"") -> None:
        self._f = f
        self._prefix = memoryview(prefix)
        self.offset = 0
        self.byte_order = "little"  # of the integers unpack() reads (set once known)

    def read(self, n: int, what: str) -> bytes:
        buf = bytearray(n)
        self.readinto(memoryview(buf), what)
        return bytes(buf)

    def readinto(self, view: memoryview, what: str) -> None:
        n = len(view)
        got = 0
        if self._prefix:
            take = min(n, len(self._prefix))
            view[:take] = self._prefix[:take]
            self._prefix = self._prefix[take:]
            got = take
        while got < n:
            k = self._f.readinto(view[got:])  # type: ignore[attr-defined]
            if not k:
                raise StreamError(f"stream truncated: {what} needs {n} bytes, got {got}",
                                  self.offset + got)
            got += k
        self.offset += n

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return in_order(fmt, self.byte_order).unpack(self.read(fmt.size, what))

    def skip(self, n: int, what: str, scratch: memoryview) -> None:
        while n:
            k = min(n, len(scratch))
            self.readinto(scratch[:k], what)
            n -= k

    def at_eof(self) -> bool:
        if self._prefix:
            return False
        return not self._f.read(1)


class StreamWriter:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0
        self.byte_order = "little"  # of the integers pack() writes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)
        self.offset += len(data)

    def pack(self, fmt: struct.Struct, *values: int | bytes) -> None:
        self.write(in_order(fmt, self.byte_order).pack(*values))

    def flush(self) -> None:
        self._f.flush()
