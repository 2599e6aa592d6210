"""Choosing where a run's hosts come from: the local engine, `--engine`s, or `--inventory`.

One entry point for the matrix, repro and soak (`hosts(...)`): each gets a provider
of the host facade (hosts/facade.py) and never asks which backend it is, except to
print how to enter kept containers. Light at import (no docker, paramiko): the
subcommands' parsers take `configure` from here.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError
from testbed.hosts.engines import EngineSpec, parse_engine

if TYPE_CHECKING:
    from testbed.hosts.hosts import Fleet
    from testbed.hosts.inventory import Inventory

@dataclass(frozen=True)
class Backend:
    engines: tuple[str, ...] = ()  # NAME=URL[@ADDRESS] specs; none: the local engine
    inventory: Path | None = None

    def __post_init__(self) -> None:
        if self.engines and self.inventory is not None:
            raise TestbedError("--engine and --inventory exclude each other: containers on "
                               "engines, or real machines")
        self.specs()  # a bad spec or inventory fails before anything starts
        if self.inventory is not None:
            from testbed.hosts.inventory import load

            load(self.inventory)

    def specs(self) -> list[EngineSpec]:
        return [parse_engine(e) for e in self.engines]

    def describe(self) -> str:
        if self.inventory is not None:
            return f"inventory {self.inventory}"
        if self.engines:
            return "engines " + ", ".join(s.name for s in self.specs())
        return "local engine"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Backend:
        inv = getattr(args, "inventory", None)
        return cls(tuple(getattr(args, "engine", None) or ()), inv.resolve() if inv else None)


def configure(parser: argparse.ArgumentParser) -> None:
    """The backend options every subcommand that starts hosts takes."""
    parser.add_argument(
        "--engine", action="append", default=[], metavar="NAME=URL",
        help="put hosts on this Docker engine (unix://, tcp:// with DOCKER_TLS_VERIFY, "
        "ssh://, context:NAME, local; NAME=URL@ADDRESS: where its ports are reached); "
        "repeat to spread hosts over several; default: the local engine",
    )
    parser.add_argument(
        "--inventory", type=Path, default=None, metavar="HOSTS.TOML",
        help="run on real machines listed here (name, arch, address, port, user, key, "
        "host_key): xsmig is deployed into a temporary directory and removed at the end",
    )


@contextlib.contextmanager
def hosts(
    names: Sequence[str],
    backend: Backend,
    *,
    run_id: str,
    mounts: Mapping[str, Path],
    source_labels: Mapping[str, str] | None = None,
    keep: bool = False,
    mode: str = "qemu",
    progress: Callable[[str], None] | None = None,
) -> Iterator[Fleet | Inventory]:
    from testbed.hosts.hosts import fleet
    from testbed.hosts.inventory import inventory

    if backend.inventory is not None:
        if keep:
            raise TestbedError("--keep-hosts keeps containers; an inventory's machines are "
                               "always cleaned up")
        if mode != "qemu":
            raise TestbedError("--mode applies to containers; a machine runs its own python")
        with inventory(backend.inventory, names, run_id=run_id, mounts=mounts,
                       progress=progress) as inv:
            yield inv
        return
    with fleet(names, run_id=run_id, mounts=mounts, source_labels=source_labels, keep=keep,
               mode=mode, progress=progress, engines=backend.specs()) as f:
        yield f
