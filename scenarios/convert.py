"""Release upgrade path: on the source host, the saver's legacy native stream (of that
host's own width) is converted to v2 and back with `xsmig convert`, then migrated;
on the cross-width pairs, converted to v2 and migrated as v2; and chained through both
v2 framings (bare libxc, libxl) back to native. Guest state must be
unchanged either way: the destination's digest equals the source's."""

from __future__ import annotations

from scenarios.hosts import CROSS_WIDTH, PAIRS
from scenarios.model import GUEST_WIDTHS, IDENTICAL, V2_LIBXC, Cell, Domain, Expect

NAME = "convert"
DESCRIPTION = "save native | convert --to v2 | convert --to native on the source, then migrate"

# pair -> expected outcome, both guest widths: the round trip restores like native.
EXPECTED: dict[str, Expect] = {
    "i386-to-i386": IDENTICAL,
    "i386-to-amd64": IDENTICAL,
    "amd64-to-i386": IDENTICAL,
    "amd64-to-amd64": IDENTICAL,
}
# Converted to v2 only, and migrated as v2 across widths.
TO_V2: dict[str, Expect] = {pair: IDENTICAL for pair in CROSS_WIDTH}


def cells() -> list[Cell]:
    out = [
        Cell(NAME, PAIRS[pair], "native", Domain(guest_width=width), expect,
             convert=("v2", "native"))
        for pair, expect in EXPECTED.items()
        for width in GUEST_WIDTHS
    ]
    out += [
        Cell("convert-to-v2", PAIRS[pair], "native", Domain(guest_width=width), expect,
             convert=("v2",))
        for pair, expect in TO_V2.items()
        for width in GUEST_WIDTHS
    ]
    # Through both v2 framings: bare libxc, then libxl, then native (guests without a
    # physmap, which the bare format cannot carry).
    out += [
        Cell("convert-framings", PAIRS[pair], "native", Domain(guest_width=width, physmap=0),
             expect, convert=(V2_LIBXC, "v2", "native"))
        for pair, expect in EXPECTED.items()
        for width in GUEST_WIDTHS
    ]
    return out
