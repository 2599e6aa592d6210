"""Faults mid-migration on real hosts: a cut link, a killed or stalled host, a full disk.

One cell per host pair and column runs every fault in turn on the same guest
(testbed/cells/faults.py does the injecting). For each fault the guest must survive:
the source domain is still there with its digest unchanged (after a restart
where the source was killed), the destination holds no domain of that name
(after a restart where it was killed), the report names the cause, and then the
same migration, retried over the healed link, restores identically.

The cells run on hosts of their own (scenarios.hosts.FAULT_PAIRS): killing,
stopping or disconnecting a host must never disturb the other cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.hosts import FAULT_PAIRS
from scenarios.model import IDENTICAL, Cell, Domain

NAME = "faults"
DESCRIPTION = "inject a fault mid-stream, check nothing was lost, heal, retry"
PAGES = 1024  # 4 MiB: the stream outgrows the faulted save's SSH window and the pipes, so
# every fault lands mid-stream (testbed.cells.faults.FAULT_WINDOW)
TRIGGER = 1 << 20  # inject once this many stream bytes have reached the destination


@dataclass(frozen=True)
class FaultExpect:
    """How the faulted restore may end (it must never succeed)."""

    what: str  # the fault, in words, for reports
    codes: frozenset[int] = frozenset()  # clean refusals (one error line) that are fine
    lost: bool = False  # the restore's exit status may be lost with the link

    def describe(self) -> str:
        ways = [f"refused (exit {'|'.join(map(str, sorted(self.codes)))})"] if self.codes else []
        if self.lost:
            ways.append("status lost with the link")
        return " or ".join(ways)


# The faults, in the order each cell injects them (cheap ones first), and what the
# destination's restore may do under each. Written out by hand: see docs/testbed.md.
EXPECTED: dict[str, FaultExpect] = {
    "cut": FaultExpect("SSH connection to the destination cut mid-stream", lost=True),
    "store-full": FaultExpect(
        "destination store full (a 1 MiB tmpfs) mid-restore", codes=frozenset({5})
    ),
    "kill-src": FaultExpect(
        "source container killed mid-save, then restarted", codes=frozenset({3}), lost=True
    ),
    "stall": FaultExpect("destination restore stopped (SIGSTOP) until the deadline", lost=True),
    "kill-dst": FaultExpect("destination container killed mid-restore, then restarted", lost=True),
    "netdown": FaultExpect(
        "destination taken off the network mid-stream, then reconnected", lost=True
    ),
    # Last: the guest runs on from here, so the source's digest changes (checked anew).
    "live-cut": FaultExpect(
        "link cut during a live round (guest running on the source)", codes=frozenset({3}),
        lost=True,
    ),
}
LIVE_RATE = 2000  # pages/s the guest dirties during the live-cut fault: rounds go on
LIVE_CUT = PAGES * 4096 + (256 << 10)  # bytes: past round 0, inside a later round
# The faulted save must still be sending rounds at the cut: no stop but the round limit.
LIVE_FAULTED = ("--live", "--max-rounds", "100", "--dirty-threshold", "0", "--max-downtime", "0")
LIVE_RETRY = ("--live", "--max-rounds", "10", "--dirty-threshold", "50", "--max-downtime",
              "0.5")

# (encoding, guest width) columns: the legacy layout and the extended-info one.
COLUMNS: tuple[tuple[str, int], ...] = (("native", 32), ("extended", 64))
# Pairs in an order where neighbours share no host, so two fault cells can run at once.
ORDER = ("i386-to-i386", "amd64-to-amd64", "i386-to-amd64", "amd64-to-i386")


def cells() -> list[Cell]:
    return [
        Cell(
            NAME,
            FAULT_PAIRS[pair],
            encoding,
            Domain(pages=PAGES, guest_width=width),
            IDENTICAL,  # the retry over the healed link
            faults=tuple(EXPECTED),
            timeout=180.0,
            tags=("faults",),
        )
        for encoding, width in COLUMNS
        for pair in ORDER
    ]
