"""The one way the testbed uses a host, whichever backend runs it (docs/testbed.md, "Hosts").

In the manner of pytest-testinfra: a `Host` runs a command (`run`), runs xsmig
(`xsmig`, through the host's long-lived agent where it has one), puts and gets files
(`put`, `get`), and answers questions about domains (`domains`, `has_domain`,
`digest`, all through `xsmig list` / `xsmig digest`: nobody reads xsmig's store
layout from outside). Migrations stream between two hosts' exec channels
(cells/migrate.py over `open_exec`/`bulk`). Every backend reaches its hosts over
SSH, so `ssh.Host` is the one implementation; the backends differ in how hosts come
to be and go (a provider: `host(name)`, `log_tail(name)`; cells/domains.py):

- the local Docker engine and remote engines: `hosts.Fleet` (containers);
- real machines listed in an inventory: `inventory.Inventory` (xsmig deployed into a
  temporary directory over SSH, removed at the end).

Breaking a host on purpose is an optional capability, asked for by protocol
(`Killable`, `Disconnectable`); stopping and continuing a process is a plain
command (`Host.signal`), which every backend has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from testbed.errors import TestbedError

LOOPBACK = "127.0.0.1"  # the local engine's hosts (and the stand-ins' in the tests)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class XsmigError(TestbedError):
    """An xsmig command on a host failed (create, digest, list)."""


class HostQueries:
    """What every host answers on top of `run` and `xsmig`: files and domains.

    A mixin, so the SSH host and the unit tests' fake hosts answer the same way.
    """

    name: str
    scratch = "/tmp"  # where the runner's files go on the host (streams, dumps)

    def run(self, argv: Sequence[str], timeout: float = 120.0,
            stdin: bytes = b"") -> CommandResult:
        raise NotImplementedError

    def xsmig(self, *args: str, timeout: float = 300.0) -> CommandResult:
        raise NotImplementedError

    # -- files -------------------------------------------------------------
    def put(self, path: str, data: bytes, timeout: float = 120.0) -> None:
        r = self.run(["sh", "-c", 'cat > "$1"', "sh", path], timeout=timeout, stdin=data)
        if not r.ok:
            raise TestbedError(f"{self.name}: cannot write {path}: {r.err.strip()}")

    def get(self, path: str, timeout: float = 120.0) -> bytes:
        r = self.run(["cat", path], timeout=timeout)
        if not r.ok:
            raise TestbedError(f"{self.name}: no {path}: {r.err.strip()}")
        return r.stdout

    def exists(self, path: str, timeout: float = 60.0) -> bool:
        """Whether `path` is a non-empty file on the host."""
        return self.run(["test", "-s", path], timeout=timeout).ok

    # -- processes ---------------------------------------------------------
    def signal(self, pids: Sequence[int], sig: str, timeout: float = 60.0) -> None:
        """`kill -SIG pids` (stop, continue, kill a process; a vanished pid is no error)."""
        if pids:
            self.run(["sh", "-c", f"kill -{sig} {' '.join(map(str, pids))} 2>/dev/null; true"],
                     timeout=timeout)

    # -- domains -----------------------------------------------------------
    def domains(self, timeout: float = 120.0, store: str | None = None) -> list[str]:
        """Names of the domains in the host's store (or in `store`)."""
        extra = ("--store", store) if store else ()
        r = self.xsmig("list", "--json", *extra, timeout=timeout)
        if not r.ok:
            raise XsmigError(f"xsmig list on {self.name}: exit {r.exit_status}: {r.err.strip()}")
        try:
            return [str(row["name"]) for row in json.loads(r.out)]
        except (ValueError, TypeError, KeyError) as exc:
            raise XsmigError(f"xsmig list on {self.name}: not a list: {r.out[:200]!r}") from exc

    def has_domain(self, name: str, timeout: float = 120.0, store: str | None = None) -> bool:
        return name in self.domains(timeout, store)

    def digest(self, name: str, timeout: float = 300.0, dump: str | None = None) -> str:
        """The domain's canonical digest (and, with `dump`, its dump written there)."""
        extra = ("--dump", dump) if dump else ()
        r = self.xsmig("digest", name, *extra, timeout=timeout)
        if not r.ok or not r.out.strip():
            raise XsmigError(
                f"xsmig digest {name} on {self.name}: exit {r.exit_status}: {r.err.strip()}"
            )
        return r.out.splitlines()[0].strip()

    def shell(self, script: str, *args: str, timeout: float = 120.0) -> CommandResult:
        """`sh -c script sh args...`: a small script with quoted arguments."""
        return self.run(["sh", "-c", script, "sh", *args], timeout=timeout)


@runtime_checkable
class Killable(Protocol):
    """Hosts that can be killed outright and started again (a container's SIGKILL)."""

    def kill(self, name: str) -> None: ...

    def restart(self, name: str) -> object: ...


@runtime_checkable
class Disconnectable(Protocol):
    """Hosts that can be taken off the network and put back."""

    def disconnect(self, name: str) -> None: ...

    def reconnect(self, name: str) -> object: ...


def _missing(provider: object, what: str, why: str) -> TestbedError:
    return TestbedError(f"{why} need hosts that can be {what}; "
                        f"{type(provider).__name__} hosts cannot")


def killable(provider: object, why: str) -> Killable:
    """The provider's kill/restart capability, or a clear error (an inventory has none)."""
    if isinstance(provider, Killable):
        return provider
    raise _missing(provider, "killed and restarted", why)


def disconnectable(provider: object, why: str) -> Disconnectable:
    """The provider's disconnect/reconnect capability, or a clear error."""
    if isinstance(provider, Disconnectable):
        return provider
    raise _missing(provider, "taken off the network", why)
