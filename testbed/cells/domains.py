"""The steps every cell, fault and soak takes on a host's domains: create, digest, exists.

Below execute, artifacts and faults, which all use them (so none imports another for them).
"""

from __future__ import annotations

from typing import Protocol

from scenarios.model import Cell
from testbed.errors import TestbedError
from testbed.hosts.ssh import Host


class CellError(TestbedError):
    """A step around the migration itself failed (create, digest, list)."""


class HostProvider(Protocol):
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


def digest(host: Host, name: str, timeout: float, dump: str | None = None) -> str:
    extra = ("--dump", dump) if dump else ()
    r = host.xsmig("digest", name, *extra, timeout=timeout)
    if not r.ok or not r.out.strip():
        raise CellError(
            f"xsmig digest {name} on {host.name}: exit {r.exit_status}: {r.err.strip()}"
        )
    return r.out.splitlines()[0].strip()


def domain_exists(host: Host, name: str, timeout: float) -> bool:
    r = host.xsmig("list", "--json", timeout=timeout)
    if not r.ok:
        raise CellError(f"xsmig list on {host.name}: exit {r.exit_status}: {r.err.strip()}")
    return f'"{name}"' in r.out
