"""Cold migration: every encoding x guest width x ordered pair."""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import GUEST_WIDTHS, IDENTICAL, Cell, Domain, Expect

NAME = "cold"
DESCRIPTION = "save on the source, stream over SSH into restore on the destination"

# (pair, encoding) -> expected outcome, for both guest widths. native carries
# extended info by default, so the current restorer tells the width from bytes 4-7;
# v2 has no native-width field at all.
EXPECTED: dict[tuple[str, str], Expect] = {
    ("i386-to-i386", "native"): IDENTICAL,
    ("i386-to-i386", "escaped"): IDENTICAL,
    ("i386-to-i386", "extended"): IDENTICAL,
    ("i386-to-i386", "v2"): IDENTICAL,
    ("i386-to-amd64", "native"): IDENTICAL,
    ("i386-to-amd64", "escaped"): IDENTICAL,
    ("i386-to-amd64", "extended"): IDENTICAL,
    ("i386-to-amd64", "v2"): IDENTICAL,
    ("amd64-to-i386", "native"): IDENTICAL,
    ("amd64-to-i386", "escaped"): IDENTICAL,
    ("amd64-to-i386", "extended"): IDENTICAL,
    ("amd64-to-i386", "v2"): IDENTICAL,
    ("amd64-to-amd64", "native"): IDENTICAL,
    ("amd64-to-amd64", "escaped"): IDENTICAL,
    ("amd64-to-amd64", "extended"): IDENTICAL,
    ("amd64-to-amd64", "v2"): IDENTICAL,
}


def cells() -> list[Cell]:
    return [
        Cell(NAME, PAIRS[pair], encoding, Domain(guest_width=width), expect)
        for (pair, encoding), expect in EXPECTED.items()
        for width in GUEST_WIDTHS
    ]
