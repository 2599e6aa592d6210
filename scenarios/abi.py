"""Expected outcomes derived from the two hosts' ABIs, not listed per pair.

An ABI here is the three facts the host report proves (xsmig.layout's
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

Below, the same facts choose the pairs of the scenarios that cannot run on every pair
(`ring`, `representatives`, `relation`: docs/testbed.md, "Which pairs each scenario
runs on").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from scenarios.arches import ARCHES
from scenarios.model import IDENTICAL, Expect, Retry, refused
from xsmig.layout import ABIS, Layout

ASK_WIDTH = refused(3, 4, naming="--source-width")  # read as 32-bit, a 64-bit stream fails
CROSS_NATIVE = refused(3, 4)  # a legacy reader misparses: malformed or refused, both clean
NEW_ENCODING = refused(4)


def abi_of(arch: str) -> Layout:
    """The architecture's ABI; layouts compare by their three facts, not their names."""
    return ABIS[arch]


def expect(
    src: str, dst: str, encoding: str, *, profile: str = "current", no_ext_info: bool = False
) -> tuple[Expect, Retry | None]:
    """Expectation (and retry after a refusal) of one restore from `src` on `dst`."""
    a, b = abi_of(src), abi_of(dst)
    if profile == "legacy":
        if encoding != "native":
            return NEW_ENCODING, None
        return (IDENTICAL if a == b else CROSS_NATIVE), None
    if encoding == "native" and no_ext_info and a.ulong_size == 8 and a.byte_order == "little":
        if b.ulong_size == 8:  # the mail's rule: the restorer's own width, which is right
            return IDENTICAL, None
        return ASK_WIDTH, Retry(source_width=64)
    return IDENTICAL, None


def native_guest_width(src: str) -> int:
    """Guest width a native stream without extended info can carry: the source's."""
    return abi_of(src).ulong_size * 8


# -- Which pairs the hand-computed scenarios run on, derived from the same facts --
# (docs/testbed.md, "Which pairs each scenario runs on").


def differences(src: str, dst: str) -> int:
    """How many of the three facts differ between two architectures' ABIs (0-3)."""
    a, b = abi_of(src), abi_of(dst)
    return ((a.ulong_size != b.ulong_size) + (a.u64_align != b.u64_align)
            + (a.byte_order != b.byte_order))


def stream_abi(encoding: str, arch: str) -> tuple[object, ...]:
    """The part of a source's ABI its stream in `encoding` carries: two sources with the
    same value write the same bytes for the same guest (docs/stream-format.md 1-4, 9)."""
    a = abi_of(arch)
    if encoding == "native":
        return (a.ulong_size, a.u64_align, a.byte_order)
    if encoding == "extended":  # sinf declares the saver's word size; records packed
        return (a.ulong_size, a.byte_order)
    if encoding == "escaped":  # every ulong 8 bytes, records packed
        return (a.byte_order,)
    return ()  # v2: no native-width field, little-endian on every ABI


def field_order(encoding: str, arch: str) -> str:
    """Byte order of the integers after the stream's header (batch counts, record
    lengths): the source's own in the legacy family (declared by sinf in extended,
    undeclared in native and escaped), always little in v2 (the image header says so)."""
    return "little" if encoding.startswith("v2") else abi_of(arch).byte_order


def _ordered(arches: Iterable[str]) -> list[str]:
    wanted = set(arches)
    return [a for a in ARCHES if a in wanted]


def representatives(arches: Iterable[str], related: Callable[[str, str], bool],
                    encoding: str) -> list[tuple[str, str]]:
    """One (source, destination) pair per destination architecture and per stream
    layout (`stream_abi`) that a related source writes in `encoding`: every reader meets
    every distinct layout once. The source is the first such architecture in ARCHES
    order; the pairs come out in (source, destination) ARCHES order."""
    names = _ordered(arches)
    seen: set[tuple[str, tuple[object, ...]]] = set()
    out: list[tuple[str, str]] = []
    for dst in names:
        for src in names:
            key = (dst, stream_abi(encoding, src))
            if related(src, dst) and key not in seen:
                seen.add(key)
                out.append((src, dst))
    return sorted(out, key=lambda p: (names.index(p[0]), names.index(p[1])))


def abis_differ(src: str, dst: str) -> bool:
    return differences(src, dst) > 0


def relation(src: str, dst: str) -> str:
    """How a pair's word sizes relate: `same-abi-32|64`, `widen`, `narrow`, or `same-width`
    (equal words, other alignment or byte order)."""
    a, b = abi_of(src), abi_of(dst)
    if a == b:
        return f"same-abi-{a.ulong_size * 8}"
    if a.ulong_size != b.ulong_size:
        return "widen" if a.ulong_size < b.ulong_size else "narrow"
    return "same-width"


def ring(arches: Iterable[str]) -> tuple[str, ...]:
    """The selected architectures in the cyclic order whose steps (last back to first
    included) change ABI most: first the most steps that change any fact, then the most
    facts changed in total; ties go to the earliest order in ARCHES. Starts at the first
    selected architecture. i386, amd64 -> (i386, amd64)."""
    names = _ordered(arches)
    if len(names) < 2:
        return tuple(names)

    def score(rest: tuple[str, ...]) -> tuple[int, int]:
        cycle = (names[0], *rest)
        steps = [differences(a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)]
        return sum(d > 0 for d in steps), sum(steps)

    best = max(itertools.permutations(names[1:]), key=score)  # the first of the maxima
    return (names[0], *best)


def ring_pairs(arches: Iterable[str]) -> list[tuple[str, str]]:
    """The ring's steps, each architecture once as source and once as destination."""
    cycle = ring(arches)
    if len(cycle) < 2:
        return []
    return list(zip(cycle, cycle[1:] + cycle[:1], strict=True))


def chain(arches: Iterable[str]) -> tuple[str, ...]:
    """Hosts of the ping-pong chain: round the ring on the `a` hosts, then on the `b`
    hosts, so every hop crosses two distinct hosts (i386-a, amd64-a, i386-b, amd64-b)."""
    cycle = ring(arches)
    if len(cycle) < 2:
        return ()
    return tuple(f"{a}-a" for a in cycle) + tuple(f"{a}-b" for a in cycle)
