"""The toolstack ABI a stream is written or read with.

A C toolstack's stream depends on two facts of its ABI: sizeof(unsigned long), and
how a uint64 aligns inside a struct (4 on i386, 8 on amd64). `Layout.native()` reads
both off the running interpreter's struct module, so an i386 Python writes exactly
what a 32-bit toolstack writes; tests build the other layout explicitly.
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    name: str = field(compare=False)
    ulong_size: int  # sizeof(unsigned long): 4 or 8
    u64_align: int  # alignof(uint64_t) inside a struct: 4 or 8

    @property
    def bits(self) -> int:
        return self.ulong_size * 8

    @property
    def ulong_code(self) -> str:
        """struct/array code of a little-endian unsigned long of this width."""
        return "I" if self.ulong_size == 4 else "Q"

    @property
    def ulong_all_ones(self) -> int:
        return (1 << self.bits) - 1

    def physmap_record_size(self) -> int:
        """sizeof(struct libxl__physmap_info {u64, u64, u64, u32 namelen; char name[]})."""
        unpadded = 3 * 8 + 4
        return -(-unpadded // self.u64_align) * self.u64_align

    @staticmethod
    def native() -> Layout:
        ulong = struct.calcsize("@L")
        align = struct.calcsize("@IQ") - 8
        return Layout(f"native-{platform.machine() or 'unknown'}", ulong, align)

    @staticmethod
    def for_width(bits: int) -> Layout:
        """The x86 toolstack ABI of a given width (the only ABIs a native stream names)."""
        try:
            return {32: I386, 64: AMD64}[bits]
        except KeyError:
            raise ValueError(f"no x86 toolstack has {bits}-bit unsigned longs") from None

    @staticmethod
    def clean(word_size: int) -> Layout:
        """Layout of escaped and extended streams: explicit word size, records packed."""
        return Layout(f"clean{word_size * 8}", word_size, 4)


I386 = Layout("i386", 4, 4)
AMD64 = Layout("amd64", 8, 8)
