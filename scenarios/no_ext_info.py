"""Native streams without extended info (`save --no-ext-info`) on every pair.

From a 32-bit source bytes 4-7 hold the (non-zero) p2m frame list, which proves a
32-bit writer. From a 64-bit little-endian source they are zero, which a 32-bit
stream could also show; the mail's rule then reads the stream in the restorer's own
width (one note on stderr). A 64-bit restorer therefore restores it without any flag,
as Xen <= 4.4 always did; on a 32-bit restorer the 64-bit stream fails the parser's
checks, and the error names `--source-width 64`, with which the retry restores
identically. A 64-bit big-endian source (s390x) writes the zero half of p2m_size
first, which proves its width. Across byte orders, the restorer also has to find the
order (scenarios.abi).

The guest has the source toolstack's width: a guest of the other width cannot be
saved without extended info at all (only the `vcpu` block tells its width; the
saver refuses that with exit 5, which xsmig's own tests cover).
"""

from __future__ import annotations

from scenarios.abi import expect, native_guest_width
from scenarios.hosts import PAIRS, split_pair
from scenarios.model import Cell, Domain

NAME = "no-ext-info"
DESCRIPTION = "native without extended info: detected, own width (the mail's rule), or " \
              "refused then retried with the width"


def cells() -> list[Cell]:
    out = []
    for pair, hops in PAIRS.items():
        src, dst = split_pair(pair)
        outcome, retry = expect(src, dst, "native", no_ext_info=True)
        out.append(
            Cell(
                NAME,
                hops,
                "native",
                # Without extended info there is no `xcnt` block to announce xsave state.
                Domain(guest_width=native_guest_width(src), extended_state=False),
                outcome,
                no_ext_info=True,
                retry=retry,
            )
        )
    return out
