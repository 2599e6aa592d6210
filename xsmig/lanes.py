"""Many 64-bit words as one Python int: word i is lane i, bits 64i..64i+63.

Arithmetic on a whole page of page-table entries or frames then costs a handful of
C-level big-int operations (shift, and, multiply by a small int, add) instead of a
Python step per word, which under QEMU is most of a page table's cost. It is exact as
long as no lane carries into the next: callers keep every lane's value below 2^64
(FrameMap checks its frames' range in the same way before translating them).
"""

from __future__ import annotations

from array import array

from xsmig import words

PAGE_LANES = 512  # a page-table page: 512 64-bit entries
TOP = 1 << 63  # bit 63 of a lane: set by `value + (TOP - limit)` iff value >= limit
_ONES: dict[tuple[int, int], int] = {}
_IOTA: dict[tuple[int, int], int] = {}


def ones(n: int = PAGE_LANES, width: int = 8) -> int:
    """1 in each of n lanes (of `width` bytes); v * ones() puts v in every lane."""
    one = _ONES.get((n, width))
    if one is None:
        one = _ONES[n, width] = int.from_bytes(b"\x01".ljust(width, b"\x00") * n, "little")
    return one


def from_bytes(data: bytes | bytearray | memoryview) -> int:
    """Little-endian 64-bit words (page tables, streams) as lanes, on any host."""
    return int.from_bytes(data, "little")


def to_bytes(value: int, n: int = PAGE_LANES) -> bytes:
    return value.to_bytes(8 * n, "little")


def to_array(value: int, n: int = PAGE_LANES) -> array[int]:
    return words.load("Q", to_bytes(value, n))


def to_list(value: int, n: int = PAGE_LANES) -> list[int]:
    return to_array(value, n).tolist()


def iota(first: int, n: int, width: int = 8) -> int:
    """Lanes first, first + 1, ..., first + n - 1 (consecutive pfns); the last one must
    fit a lane."""
    steps = _IOTA.get((n, width))
    if steps is None:
        steps = _IOTA[n, width] = from_bytes(words.dump(range(n), "Q" if width == 8 else "I"))
    return steps + first * ones(n, width)
