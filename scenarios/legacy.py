"""The legacy-profile restorer (the toolstack before the fix) against every encoding and pair.

It reads native streams of its own width only; everything else must be refused
cleanly, which is what makes a staged roll-out safe. A v2 stream starts with eight
bytes of ones, which no legacy restorer takes for a p2m_size: refused at byte 0.
"""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import GUEST_WIDTHS, IDENTICAL, Cell, Domain, Expect, refused

NAME = "legacy"
DESCRIPTION = "restore with --profile legacy"

# A legacy reader misparses a cross-width native stream; refusing it as
# malformed (3) or as refused (4) are both clean, provided no domain is left.
CROSS_NATIVE = refused(3, 4)
NEW_ENCODING = refused(4)

EXPECTED: dict[tuple[str, str], Expect] = {
    ("i386-to-i386", "native"): IDENTICAL,
    ("i386-to-i386", "escaped"): NEW_ENCODING,
    ("i386-to-i386", "extended"): NEW_ENCODING,
    ("i386-to-i386", "v2"): NEW_ENCODING,
    ("i386-to-amd64", "native"): CROSS_NATIVE,
    ("i386-to-amd64", "escaped"): NEW_ENCODING,
    ("i386-to-amd64", "extended"): NEW_ENCODING,
    ("i386-to-amd64", "v2"): NEW_ENCODING,
    ("amd64-to-i386", "native"): CROSS_NATIVE,
    ("amd64-to-i386", "escaped"): NEW_ENCODING,
    ("amd64-to-i386", "extended"): NEW_ENCODING,
    ("amd64-to-i386", "v2"): NEW_ENCODING,
    ("amd64-to-amd64", "native"): IDENTICAL,
    ("amd64-to-amd64", "escaped"): NEW_ENCODING,
    ("amd64-to-amd64", "extended"): NEW_ENCODING,
    ("amd64-to-amd64", "v2"): NEW_ENCODING,
}


def cells() -> list[Cell]:
    return [
        Cell(NAME, PAIRS[pair], encoding, Domain(guest_width=width), expect, profile="legacy")
        for (pair, encoding), expect in EXPECTED.items()
        for width in GUEST_WIDTHS
    ]
