"""The toolstack ABI a stream is written or read with, as data.

A C toolstack's stream depends on three facts of its ABI: sizeof(unsigned long), how a
uint64 aligns inside a struct, and byte order. `Layout.native()` reads all three off the
running interpreter (`struct`, `sys.byteorder`), so a Python of any Debian architecture
writes exactly what a C toolstack of that ABI writes. The five ABIs Debian ships that
the testbed hosts are named in `ABIS`:

    ABI    word  uint64 align  byte order   physmap record
    i386    4       4          little       28 + namelen
    armhf   4       8          little       32 + namelen
    amd64   8       8          little       32 + namelen
    arm64   8       8          little       32 + namelen
    s390x   8       8          big          32 + namelen

Byte order covers the integers the toolstack writes (words, counts, chunk ids, record
fields); page contents, vCPU contexts and shared info are the x86 guest's and stay
little-endian (docs/stream-format.md, "Byte order").
"""

from __future__ import annotations

import os
import struct
import sys
from typing import NamedTuple

LITTLE = "little"
BIG = "big"
BYTE_ORDERS = (LITTLE, BIG)


def machine() -> str:
    """The interpreter's machine name, as platform.machine() gives it, without importing
    platform (a cost every emulated command would pay)."""
    return os.uname().machine


class Layout(NamedTuple):
    name: str  # a label: layouts compare by the three facts below (__eq__)
    ulong_size: int  # sizeof(unsigned long): 4 or 8
    u64_align: int  # alignof(uint64_t) inside a struct: 4 or 8
    byte_order: str = LITTLE  # of the integers the toolstack writes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self[1:] == other[1:]

    def __ne__(self, other: object) -> bool:  # tuple's own __ne__ would compare names
        return not self == other

    def __hash__(self) -> int:
        return hash(self[1:])

    @property
    def bits(self) -> int:
        return self.ulong_size * 8

    @property
    def ulong_code(self) -> str:
        """struct/array code of an unsigned long of this width (no byte order)."""
        return "I" if self.ulong_size == 4 else "Q"

    @property
    def endian(self) -> str:
        """struct prefix of this ABI's byte order."""
        return "<" if self.byte_order == LITTLE else ">"

    @property
    def ulong_all_ones(self) -> int:
        return (1 << self.bits) - 1

    def physmap_record_size(self) -> int:
        """sizeof(struct libxl__physmap_info {u64, u64, u64, u32 namelen; char name[]})."""
        unpadded = 3 * 8 + 4
        return -(-unpadded // self.u64_align) * self.u64_align

    def with_order(self, byte_order: str) -> Layout:
        return self._replace(byte_order=byte_order)

    def describe(self) -> str:
        return (f"{self.name} ({self.bits}-bit, uint64 aligned to {self.u64_align}, "
                f"{self.byte_order}-endian)")

    @staticmethod
    def native() -> Layout:
        ulong = struct.calcsize("@L")
        align = struct.calcsize("@IQ") - 8
        found = Layout("", ulong, align, sys.byteorder)
        name = MACHINES.get(machine(), "")
        if not name or ABIS[name] != found:  # an ABI this table does not name
            name = next((n for n, abi in ABIS.items() if abi == found),
                        f"native-{machine() or 'unknown'}")
        return found._replace(name=name)

    @staticmethod
    def for_width(bits: int, byte_order: str = LITTLE) -> Layout:
        """The default ABI of a width and byte order, for a native stream whose writer is
        known by width only: i386 for 32-bit little-endian (the 32-bit toolstack Xen had
        first), amd64 for 64-bit. Its uint64 alignment matters only for physmap records,
        which the reader checks against both alignments (see `native_stream`)."""
        if bits not in (32, 64):
            raise ValueError(f"no toolstack has {bits}-bit unsigned longs")
        base = I386 if bits == 32 else AMD64
        if byte_order == LITTLE:
            return base
        return Layout(f"{base.name}-{byte_order}", base.ulong_size, base.u64_align, byte_order)

    @staticmethod
    def native_stream(bits: int, byte_order: str, own: Layout) -> Layout:
        """The layout a restorer of ABI `own` reads a native stream of this width and
        order with: its own ABI when they match (so armhf reads armhf's 32-byte physmap
        records), else the default ABI of that width and order."""
        if own.bits == bits and own.byte_order == byte_order:
            return own
        return Layout.for_width(bits, byte_order)

    @staticmethod
    def clean(word_size: int, byte_order: str = LITTLE) -> Layout:
        """Layout of escaped and extended streams: explicit word size, records packed."""
        return Layout(f"clean{word_size * 8}", word_size, 4, byte_order)


I386 = Layout("i386", 4, 4, LITTLE)
ARMHF = Layout("armhf", 4, 8, LITTLE)
AMD64 = Layout("amd64", 8, 8, LITTLE)
ARM64 = Layout("arm64", 8, 8, LITTLE)
S390X = Layout("s390x", 8, 8, BIG)
ABIS: dict[str, Layout] = {a.name: a for a in (I386, AMD64, ARMHF, ARM64, S390X)}
# machine() of each ABI's interpreter (under QEMU user emulation too).
MACHINES = {"i686": "i386", "i386": "i386", "x86_64": "amd64", "armv7l": "armhf",
            "armv8l": "armhf", "aarch64": "arm64", "s390x": "s390x"}


def abi(name: str) -> Layout:
    """A named ABI, or the running interpreter's for "native"."""
    if name == "native":
        return Layout.native()
    try:
        return ABIS[name]
    except KeyError:
        raise ValueError(f"unknown ABI {name!r}; known: native, {', '.join(ABIS)}") from None
