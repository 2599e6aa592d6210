"""What execute, artifacts, faults and soak share: the provider of a run's hosts, how a
cell's domain is created, and the error of a step around the migration.

Below all of them, so none imports another for these. The questions about domains
(digest, exists) are the host facade's (hosts/facade.py).
"""

from __future__ import annotations

from typing import Protocol

from scenarios.model import Cell
from testbed.hosts.facade import XsmigError
from testbed.hosts.ssh import Host


class CellError(XsmigError):
    """A step around the migration itself failed (create, digest, list)."""


class HostProvider(Protocol):
    """The hosts of one run by name: a Fleet (engines), an Inventory (machines), a fake."""

    def host(self, name: str) -> Host: ...

    def log_tail(self, name: str) -> str: ...


def create_argv(cell: Cell) -> list[str]:
    d = cell.domain
    argv = [
        "create",
        cell.domain_name,
        "--pages",
        str(d.pages),
        "--guest-width",
        str(d.guest_width),
    ]
    argv += ["--vcpus", str(d.vcpus), "--seed", str(cell.seed), "--shape", d.shape]
    if not d.extended_state:
        argv.append("--no-extended-state")
    if d.max_vcpu_id is not None:
        argv += ["--max-vcpu-id", str(d.max_vcpu_id)]
    if d.physmap != 2:  # xsmig's default
        argv += ["--physmap", str(d.physmap)]
    return argv
