"""Live migration of a running guest (issue 18): `xsmig run` dirties the source domain
(a counter in every page of its working set, page tables and vCPU state more slowly)
while `xsmig save --live` sends pre-copy rounds, then pauses it and sends the rest.

- `live-workload`: every pair and encoding at a dirty rate the link outruns: the
  rounds must converge (stop at the dirty threshold or the downtime target).
- `live-workload-outrun`: a rate far above what the link carries: the rounds must end
  at their limit, and the cell reports the downtime that costs.
Every cell checks that the destination equals the source at the pause (digest), that
every counter page holds the counter the guest had at the pause (`xsmig guest-check`,
naming the first stale page), and reports rounds, pages per round, downtime (from the
pause until the destination has restored) and total time (testbed/cells/live.py).
"""

from __future__ import annotations

import itertools

from scenarios.abi import expect
from scenarios.arches import ARCHES
from scenarios.hosts import CROSS_WIDTH, PAIRS
from scenarios.model import ENCODINGS, Cell, Domain, Live

NAME = "live-workload"
OUTRUN = "live-workload-outrun"
DESCRIPTION = "live save of a running guest: converge, pause, no lost write"
CONVERGING = Live(dirty_rate=100.0)  # pages/s: 0.4 MB/s, well below any emulated link
# ~80 MB/s of dirtying: above every emulated save | restore; the working set caps each
# round, so the cell's cost is bounded by the rounds.
# No downtime target: the save's estimate counts bytes the link accepted, and a 16 MiB
# SSH window accepts a whole small guest at once (xsmig/live.py). For the same reason
# the guest is larger than what the buffers between save and restore hold: with a small
# one, every round went into the buffers in milliseconds, shorter than one of the
# emulated guest's chunks, and a round could end with nothing dirty ("threshold"), the
# outrun unseen. 8192 pages (32 MiB): each round waits for the link.
OUTRUNNING = Live(dirty_rate=20000.0, max_rounds=3, dirty_threshold=50, max_downtime=0.0,
                  stops=("round-limit",))
OUTRUN_PAGES = 8192


def _width(encoding: str) -> int:
    return 32 if encoding in ("extended", "v2") else 64  # both guest widths, by column


def cells() -> list[Cell]:
    out: list[Cell] = []
    for src, dst in itertools.product(ARCHES, repeat=2):
        for enc in ENCODINGS:
            outcome, retry = expect(src, dst, enc)
            if retry is not None:
                continue  # live cells judge one restore; refusals are other scenarios' job
            out.append(Cell(NAME, PAIRS[f"{src}-to-{dst}"], enc,
                            Domain(guest_width=_width(enc), vcpus=2), outcome,
                            live=CONVERGING, tags=("live",)))
    for pair in CROSS_WIDTH:  # the nightly cross-width pairs
        src, dst = pair.split("-to-")
        out.append(Cell(OUTRUN, PAIRS[pair], "v2",
                        Domain(pages=OUTRUN_PAGES, guest_width=64, vcpus=2),
                        expect(src, dst, "v2")[0], live=OUTRUNNING, tags=("live",)))
    return out
