"""The bare libxc v2 stream (`save --encoding v2 --v2-format libxc`), on every pair: a
column of its own. The bare format cannot carry libxl's physmap, so these guests have
none (`create --physmap 0`); restore tells the framing from the first bytes. Like v2 in
libxl's framing, it has no native-width field: identical on every pair (scenarios.abi)."""

from __future__ import annotations

from scenarios.abi import expect
from scenarios.hosts import PAIRS, split_pair
from scenarios.model import GUEST_WIDTHS, V2_LIBXC, Cell, Domain

NAME = "v2-libxc"
DESCRIPTION = "save as bare libxc v2 (no libxl framing), restore"


def cells() -> list[Cell]:
    return [
        Cell(NAME, hops, V2_LIBXC, Domain(guest_width=width, physmap=0),
             expect(*split_pair(pair), "v2")[0])
        for pair, hops in PAIRS.items()
        for width in GUEST_WIDTHS
    ]
