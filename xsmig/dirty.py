"""The log-dirty bitmap a running guest (xsmig/guest.py) marks and a live save
(xsmig/live.py) reads and clears, as Xen's log-dirty mode does.

One file per running domain, one bit per pfn (bit i of byte j is pfn 8j+i). All work is
on the whole bitmap as one Python int or one bytes object: OR, AND, bit_count, and a
256-entry translation to one byte per pfn that itertools.compress applies to the pfns.
Nothing loops over pages in Python.

The race, and why no write is lost:
- the guest writes a page's data first and marks its bit after (`mark`);
- the saver fetches and clears the bitmap (`fetch_and_clear`), then reads the pages;
- `mark` (read, OR, write) and `fetch_and_clear` (read, zero) each hold an exclusive
  flock on the bitmap file, so neither can interleave with the other's read-modify-write.
A write that lands after the saver fetched the bitmap sets its bit after the clear: it
stays dirty and goes in the next round. A write the saver read half-way (a torn page)
has its bit set after the fetch, so the page is sent again. The last round runs with
the guest paused, so what it sends is the final state.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import compress
from pathlib import Path

# byte value -> its 8 bits as 8 bytes of 0/1, least significant bit first
_EXPAND = [bytes((b >> i) & 1 for i in range(8)) for b in range(256)]


def nbytes(p2m_size: int) -> int:
    return (p2m_size + 7) // 8


def run_mask(first: int, count: int) -> int:
    """The bits of pfns first..first+count-1."""
    return ((1 << count) - 1) << first


def to_bytemap(bitmap: int, p2m_size: int) -> bytes:
    """One byte (0 or 1) per pfn: a C-level map over the bitmap's bytes."""
    raw = bitmap.to_bytes(nbytes(p2m_size), "little")
    return b"".join(map(_EXPAND.__getitem__, raw))[:p2m_size]


def pfns(bitmap: int, p2m_size: int, keep: bytes | None = None) -> list[int]:
    """The pfns whose bits are set, ascending; `keep`: a 0/1 byte per pfn ANDed in
    (e.g. the types translated by pagetypes.HAS_DATA)."""
    if not bitmap:
        return []
    mask = to_bytemap(bitmap, p2m_size)
    if keep is not None:
        mask = (int.from_bytes(mask, "little") & int.from_bytes(keep[:p2m_size], "little")
                ).to_bytes(p2m_size, "little")
    return list(compress(range(p2m_size), mask))


class DirtyLog:
    """The bitmap file of one domain, shared by the guest and the saver."""

    def __init__(self, path: Path, p2m_size: int) -> None:
        self.path = path
        self.p2m_size = p2m_size
        self.size = nbytes(p2m_size)

    def create(self) -> None:
        """Make the file (all clean) if it is not there; keep the bits if it is."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _read(self, fd: int) -> int:
        return int.from_bytes(os.pread(fd, self.size, 0), "little")

    def mark(self, bits: int) -> None:
        """OR `bits` into the bitmap (the guest, after writing the pages' data)."""
        if not bits:
            return
        with self._locked() as fd:
            os.pwrite(fd, (self._read(fd) | bits).to_bytes(self.size, "little"), 0)

    def fetch_and_clear(self) -> int:
        """The bitmap, zeroed in the same critical section (the saver, before reading)."""
        with self._locked() as fd:
            bits = self._read(fd)
            if bits:
                os.pwrite(fd, bytes(self.size), 0)
        return bits

    def count(self) -> int:
        """Pages dirty right now, without clearing (the saver's convergence estimate)."""
        with self._locked() as fd:
            return self._read(fd).bit_count()
