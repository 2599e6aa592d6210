"""Saved legacy streams of every kind, and where their parts are: the streams the
bad-input and verify tests break."""

from __future__ import annotations

import io
import struct
from typing import Any

from xsmig.inspect import inspect_stream
from xsmig.layout import AMD64, I386
from xsmig.stream.format import Encoding

KINDS = {
    "native-amd64": (Encoding.NATIVE, AMD64),
    "native-i386": (Encoding.NATIVE, I386),
    "escaped": (Encoding.ESCAPED, I386),
    "extended-i386": (Encoding.EXTENDED, I386),
    "extended-amd64": (Encoding.EXTENDED, AMD64),
}


class Stream:
    """A saved stream and where its parts are, as `inspect` reports them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.report: dict[str, Any] = inspect_stream(io.BytesIO(data))
        self.word: int = self.report["word_size"]

    def chunk(self, kind: str) -> int:
        return int(next(c["offset"] for c in self.report["chunks"] if c["kind"] == kind))

    @property
    def p2m_at(self) -> int:
        """Offset of p2m_size: after the escape and the extended-info section, if any."""
        return int(self.report["ext_blocks"][0]["offset"]) - self.word - 4 - self.word

    @property
    def batch_data(self) -> int:
        first = self.report["chunks"][0]
        return int(first["offset"]) + 4 + int(first["count"]) * self.word

    def vcpu0(self) -> int:
        return int(self.report["tail"]["vcpus"][0]["offset"])

    def patched(self, at: int, fmt: str, value: int) -> bytes:
        out = bytearray(self.data)
        struct.pack_into(fmt, out, at, value)
        return bytes(out)
