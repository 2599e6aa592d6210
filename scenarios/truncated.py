"""Streams cut short mid-migration: refused as malformed, nothing left behind.

The cut happens in the live pipe (the source's save is closed too), so these
cells also prove the source domain survives an aborted migration.
"""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import Cell, Domain, Expect, refused

NAME = "truncated"
DESCRIPTION = "stream cut after N bytes: exit 3, no domain on the destination, source intact"

MALFORMED = refused(3)

# (pair, encoding, guest width, cut offset) -> expectation
EXPECTED: dict[tuple[str, str, int, int], Expect] = {
    ("i386-to-amd64", "escaped", 64, 6): MALFORMED,  # inside the header
    ("amd64-to-i386", "extended", 64, 70_000): MALFORMED,  # inside the page batches
    ("i386-to-i386", "native", 32, 4_000_000): MALFORMED,  # late in the page batches
    ("amd64-to-amd64", "native", 32, 6_000): MALFORMED,  # near the first batch
    ("i386-to-amd64", "v2", 32, 30): MALFORMED,  # inside the v2 domain header
    ("amd64-to-i386", "v2", 64, 3_000_000): MALFORMED,  # inside a PAGE_DATA record
    ("amd64-to-amd64", "v2", 64, 8_407_000): MALFORMED,  # in the vCPU records (8_405_2xx on)
}


def cells() -> list[Cell]:
    return [
        Cell(NAME, PAIRS[pair], enc, Domain(guest_width=width), expect, truncate_at=cut)
        for (pair, enc, width, cut), expect in EXPECTED.items()
    ]
