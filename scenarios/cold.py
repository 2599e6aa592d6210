"""Cold migration: every encoding x guest width x ordered pair of architectures.

Expectations come from the pair's ABIs (scenarios.abi): native carries extended
info by default, so the current restorer tells width, byte order and alignment.
"""

from __future__ import annotations

from scenarios.abi import expect
from scenarios.hosts import PAIRS, split_pair
from scenarios.model import ENCODINGS, GUEST_WIDTHS, Cell, Domain

NAME = "cold"
DESCRIPTION = "save on the source, stream over SSH into restore on the destination"


def cells() -> list[Cell]:
    return [
        Cell(
            NAME, hops, encoding, Domain(guest_width=width), expect(*split_pair(pair), encoding)[0]
        )
        for pair, hops in PAIRS.items()
        for encoding in ENCODINGS
        for width in GUEST_WIDTHS
    ]
