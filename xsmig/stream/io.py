"""Byte-counting stream ends: every error can name the offset where it happened."""

from __future__ import annotations

import os
import select
import struct
from array import array
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, BinaryIO

from xsmig import words
from xsmig.errors import StateError, StreamError

LIST_CHUNK = 1 << 16  # entries per read of a list a stream declares: memory follows bytes read


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

    def read_list(self, count: int, code: str, what: str) -> Iterator[array[int]]:
        """`count` values of array type `code`, in chunks of at most LIST_CHUNK: a list
        declared huge by a truncated stream costs what was actually read, no more."""
        size = array(code).itemsize
        start, total = self.offset, count * size
        while count:
            k = min(count, LIST_CHUNK)
            try:
                chunk = self.read(k * size, what)
            except StreamError as e:  # name the whole list, not the chunk
                at = e.offset if e.offset is not None else self.offset
                raise StreamError(f"stream truncated: {what} needs {total} bytes, got "
                                  f"{at - start}", at) from None
            yield words.load(code, chunk, self.byte_order)
            count -= k

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return in_order(fmt, self.byte_order).unpack(self.read(fmt.size, what))

    def skip(self, n: int, what: str, scratch: memoryview) -> None:
        while n:
            k = min(n, len(scratch))
            self.readinto(scratch[:k], what)
            n -= k

    def peek(self, n: int) -> bytes:
        """Up to n bytes (fewer at the end of the stream), left to be read again."""
        data = bytearray()
        while len(data) < n:
            if self._prefix:
                take = bytes(self._prefix[:n - len(data)])
                self._prefix = self._prefix[len(take):]
            else:
                take = self._f.read(n - len(data)) or b""
                if not take:
                    break
            data += take
        self._prefix = memoryview(bytes(data) + bytes(self._prefix))
        return bytes(data)

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


class PolledInput:
    """A file descriptor read directly (no userspace buffer, so poll() tells the truth),
    waiting at most `idle` seconds for the next bytes: a writer that stalls ends the
    read with a StateError instead of holding a restore forever. One poll() per read,
    no threads."""

    def __init__(self, fd: int, name: str, idle: float | None) -> None:
        self._fd = fd
        self._name = name
        self._idle_ms = None if idle is None else max(int(idle * 1000), 1)
        self._idle = idle
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLPRI)
        self.count = 0

    def readinto(self, view: memoryview) -> int:
        if self._idle_ms is not None and not self._poll.poll(self._idle_ms):
            raise StateError(f"no input from {self._name} for {self._idle:g} s after byte "
                             f"{self.count} (--idle-timeout): the writer stalled")
        try:
            n = os.readv(self._fd, [view])
        except OSError as e:
            raise StateError(f"cannot read {self._name}: {e.strerror}") from None
        self.count += n
        return n

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        k = self.readinto(memoryview(buf)) if n else 0
        return bytes(buf[:k])


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
