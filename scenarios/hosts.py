"""The hosts every run starts: two per architecture, each with its own frame allocation.

Same-architecture pairs always cross two distinct hosts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostSpec:
    name: str
    arch: str
    host_id: int  # XSMIG_HOST_ID: decides which machine frames the host hands out


HOSTS: tuple[HostSpec, ...] = (
    HostSpec("i386-a", "i386", 11),
    HostSpec("i386-b", "i386", 12),
    HostSpec("amd64-a", "amd64", 21),
    HostSpec("amd64-b", "amd64", 22),
    # Hosts of the fault cells (scenarios/faults.py) only: those cells kill, stop and
    # disconnect their hosts, so no other cell may share them.
    HostSpec("i386-fault-a", "i386", 13),
    HostSpec("i386-fault-b", "i386", 14),
    HostSpec("amd64-fault-a", "amd64", 23),
    HostSpec("amd64-fault-b", "amd64", 24),
)
BY_NAME = {h.name: h for h in HOSTS}

# Ordered pairs by architecture -> (source host, destination host). Cross-width
# pairs use different hosts in each direction so load spreads over all four.
PAIRS: dict[str, tuple[str, str]] = {
    "i386-to-i386": ("i386-a", "i386-b"),
    "i386-to-amd64": ("i386-a", "amd64-b"),
    "amd64-to-i386": ("amd64-a", "i386-b"),
    "amd64-to-amd64": ("amd64-a", "amd64-b"),
}
FAULT_PAIRS: dict[str, tuple[str, str]] = {
    "i386-to-i386": ("i386-fault-a", "i386-fault-b"),
    "i386-to-amd64": ("i386-fault-a", "amd64-fault-b"),
    "amd64-to-i386": ("amd64-fault-a", "i386-fault-b"),
    "amd64-to-amd64": ("amd64-fault-a", "amd64-fault-b"),
}
CROSS_WIDTH = ("i386-to-amd64", "amd64-to-i386")
PING_PONG = ("i386-a", "amd64-a", "i386-b", "amd64-b")


def arch_of(host: str) -> str:
    return BY_NAME[host].arch
