"""Expected outcomes derived from the two hosts' ABIs, not listed per pair.

An ABI here is the three facts the host report proves (testbed.arch / xsmig.layout's
table: word size, uint64 alignment, byte order). The rules are the oracle of
docs/stream-format.md, restated from the facts alone (no call into xsmig's detection):

- escaped and extended streams declare or fix everything: identical on every pair.
- native streams carry extended info by default: the current restorer tells width
  (bytes 4-7), byte order (which order makes the first bytes a stream) and uint64
  alignment (which physmap record size fits) and restores identically.
- native without extended info: the guest has the source's width; a 64-bit
  little-endian source writes zero bytes 4-7, which a 32-bit stream can show too, so
  the restorer applies the mail's rule and reads its own width: identical on a 64-bit
  restorer; a 32-bit one fails the parser's checks (3 or 4) naming --source-width,
  and the retry restores. A big-endian 64-bit source writes the zero half first,
  which no 32-bit stream can: identical.
- v2 has no native-width field at all: identical on every pair (current profile).
- the legacy profile (before the fix) reads native streams of its own ABI only:
  identical when word size, alignment and byte order all match (amd64 and arm64
  streams are the same bytes); anything else is refused, as malformed (3) or refused (4).
"""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.model import IDENTICAL, Expect, Retry, refused
from testbed.arch import get_arch

ASK_WIDTH = refused(3, 4, naming="--source-width")  # read as 32-bit, a 64-bit stream fails
CROSS_NATIVE = refused(3, 4)  # a legacy reader misparses: malformed or refused, both clean
NEW_ENCODING = refused(4)


@dataclass(frozen=True)
class Abi:
    word: int  # bytes of an unsigned long
    align: int  # alignment of a uint64 in a struct
    order: str  # "little" or "big"


def abi_of(arch: str) -> Abi:
    spec = get_arch(arch)
    return Abi(spec.sizeof_long, spec.uint64_align, spec.byte_order)


def expect(
    src: str, dst: str, encoding: str, *, profile: str = "current", no_ext_info: bool = False
) -> tuple[Expect, Retry | None]:
    """Expectation (and retry after a refusal) of one restore from `src` on `dst`."""
    a, b = abi_of(src), abi_of(dst)
    if profile == "legacy":
        if encoding != "native":
            return NEW_ENCODING, None
        return (IDENTICAL if a == b else CROSS_NATIVE), None
    if encoding == "native" and no_ext_info and a.word == 8 and a.order == "little":
        if b.word == 8:  # the mail's rule: the restorer's own width, which is right
            return IDENTICAL, None
        return ASK_WIDTH, Retry(source_width=64)
    return IDENTICAL, None


def native_guest_width(src: str) -> int:
    """Guest width a native stream without extended info can carry: the source's."""
    return abi_of(src).word * 8
