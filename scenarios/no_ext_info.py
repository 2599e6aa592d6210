"""Native streams without extended info (`save --no-ext-info`) on every pair.

From an i386 source bytes 4-7 hold the (non-zero) p2m frame list, which proves a
32-bit writer. From an amd64 source they are zero, which a 32-bit stream could also
show; the mail's rule then reads the stream in the restorer's own width (one note on
stderr). amd64 to amd64 therefore restores without any flag, as Xen <= 4.4 always did;
on an i386 restorer the 64-bit stream fails the parser's checks, and the error names
`--source-width 64`, with which the retry restores identically.

The guest has the source toolstack's width: a guest of the other width cannot be
saved without extended info at all (only the `vcpu` block tells its width; the
saver refuses that with exit 5, which xsmig's own tests cover).
"""

from __future__ import annotations

from scenarios.hosts import PAIRS
from scenarios.model import IDENTICAL, Cell, Domain, Expect, Retry, refused

NAME = "no-ext-info"
DESCRIPTION = "native without extended info: detected, own width (the mail's rule), or " \
              "refused then retried with the width"

# Read as 32-bit, a 64-bit stream is malformed (3) or refused (4): either is clean.
MISREAD_NAMES_WIDTH = refused(3, 4, naming="--source-width")

# pair -> (guest width, expected outcome, retry after the refusal)
EXPECTED: dict[str, tuple[int, Expect, Retry | None]] = {
    "i386-to-i386": (32, IDENTICAL, None),
    "i386-to-amd64": (32, IDENTICAL, None),
    "amd64-to-i386": (64, MISREAD_NAMES_WIDTH, Retry(source_width=64)),
    "amd64-to-amd64": (64, IDENTICAL, None),
}


def cells() -> list[Cell]:
    return [
        Cell(
            NAME,
            PAIRS[pair],
            "native",
            # Without extended info there is no `xcnt` block to announce xsave state.
            Domain(guest_width=width, extended_state=False),
            expect,
            no_ext_info=True,
            retry=retry,
        )
        for pair, (width, expect, retry) in EXPECTED.items()
    ]
