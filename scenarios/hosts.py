"""The hosts a run may start: two per architecture, each with its own frame allocation.

Generated from scenarios.arches.ARCHES (the names of xsmig.layout.ABIS), so a new
architecture brings its hosts and pairs with it. Same-architecture pairs always cross
two distinct hosts; a run starts only the hosts its selected cells use.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from scenarios.arches import ARCHES, NIGHTLY


@dataclass(frozen=True)
class HostSpec:
    name: str
    arch: str
    host_id: int  # XSMIG_HOST_ID: decides which machine frames the host hands out


HOSTS: tuple[HostSpec, ...] = tuple(
    HostSpec(f"{arch}-{suffix}", arch, 10 * (i + 1) + j)
    for i, arch in enumerate(ARCHES)
    for j, suffix in ((1, "a"), (2, "b"))
) + tuple(
    # Hosts of the fault cells (scenarios/faults.py) only: those cells kill, stop and
    # disconnect their hosts, so no other cell may share them. Nightly arches only.
    HostSpec(f"{arch}-fault-{suffix}", arch, 10 * (i + 1) + j)
    for i, arch in enumerate(ARCHES) if arch in NIGHTLY
    for j, suffix in ((3, "a"), (4, "b"))
)
BY_NAME = {h.name: h for h in HOSTS}

# Ordered pairs by architecture -> (source host, destination host): the source is
# always host a and the destination host b, so the two directions of a pair use
# different hosts and load spreads over both.
PAIRS: dict[str, tuple[str, str]] = {
    f"{src}-to-{dst}": (f"{src}-a", f"{dst}-b") for src, dst in itertools.product(ARCHES, repeat=2)
}
FAULT_PAIRS: dict[str, tuple[str, str]] = {
    f"{src}-to-{dst}": (f"{src}-fault-a", f"{dst}-fault-b")
    for src, dst in itertools.product(NIGHTLY, repeat=2)
}
NIGHTLY_PAIRS = tuple(f"{s}-to-{d}" for s, d in itertools.product(NIGHTLY, repeat=2))
CROSS_WIDTH = ("i386-to-amd64", "amd64-to-i386")  # the nightly cross-width pairs
PING_PONG = ("i386-a", "amd64-a", "i386-b", "amd64-b")  # the nightly chain (scenarios.abi.chain)


def arch_of(host: str) -> str:
    return BY_NAME[host].arch


def split_pair(pair: str) -> tuple[str, str]:
    src, dst = pair.split("-to-")
    return src, dst
