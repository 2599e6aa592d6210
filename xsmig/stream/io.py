"""Byte-counting stream ends: every error can name the offset where it happened."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from xsmig.errors import StreamError


class StreamReader:
    """Reads exactly what is asked, or raises StreamError naming the offset.

    Callers check every size read from the stream against a bound before asking for
    that many bytes, so a hostile size cannot make us allocate."""

    def __init__(self, f: BinaryIO, prefix: bytes = b"") -> None:
        self._f = f
        self._prefix = memoryview(prefix)
        self.offset = 0

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
        return fmt.unpack(self.read(fmt.size, what))

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

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)
        self.offset += len(data)

    def pack(self, fmt: struct.Struct, *values: int | bytes) -> None:
        self.write(fmt.pack(*values))

    def flush(self) -> None:
        self._f.flush()


class CountingReader:
    """A file wrapper counting the bytes read, so a report can give the stream's size."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.count += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        n = self.f.readinto(view)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0
