"""The legacy-profile restorer (the toolstack before the fix) against every encoding and pair.

It reads native streams of its own ABI only (word size, uint64 alignment and byte
order); everything else must be refused cleanly, which is what makes a staged
roll-out safe. Expectations: scenarios.abi. A v2 stream starts with
eight bytes of ones, which no legacy restorer takes for a p2m_size: refused at byte 0.
"""

from __future__ import annotations

from scenarios.abi import expect
from scenarios.hosts import PAIRS, split_pair
from scenarios.model import ENCODINGS, GUEST_WIDTHS, Cell, Domain

NAME = "legacy"
DESCRIPTION = "restore with --profile legacy"


def cells() -> list[Cell]:
    return [
        Cell(
            NAME,
            hops,
            encoding,
            Domain(guest_width=width),
            expect(*split_pair(pair), encoding, profile="legacy")[0],
            profile="legacy",
        )
        for pair, hops in PAIRS.items()
        for encoding in ENCODINGS
        for width in GUEST_WIDTHS
    ]
