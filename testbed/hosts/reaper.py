"""Finding and removing the containers of runs whose runner is gone (like testcontainers' Ryuk).

Every container carries its runner's identity: host name, boot id, pid and the
pid's start time (so a recycled pid is not mistaken for a live runner). A run
that died (SIGKILL, crash, lost terminal) leaves its containers behind; the next
run removes them before starting its own.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LABEL = "org.xsmig.testbed"
RUN_ID = "org.xsmig.run-id"
RUNNER = "org.xsmig.runner"  # host|boot id|pid|pid start time
HOST = "org.xsmig.host"
KEEP = "org.xsmig.keep"  # "1": kept on purpose (--keep-hosts, repro); never reaped
CREATED = "org.xsmig.created"  # unix time
FOREIGN_TTL = 6 * 3600.0  # containers of runners on other machines: reaped only when this old


@dataclass(frozen=True)
class Runner:
    hostname: str
    boot_id: str
    pid: int
    started: str  # field 22 of /proc/PID/stat: clock ticks since boot

    def label(self) -> str:
        return f"{self.hostname}|{self.boot_id}|{self.pid}|{self.started}"

    @classmethod
    def parse(cls, text: str) -> Runner | None:
        parts = text.split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing paren.
    return stat.rsplit(")", 1)[1].split()[19]


def current_runner() -> Runner:
    pid = os.getpid()
    return Runner(socket.gethostname(), _boot_id(), pid, _start_time(pid) or "0")


def runner_alive(runner: Runner, me: Runner) -> bool | None:
    """True/False when we can tell (same machine and boot), None when we cannot."""
    if runner.hostname != me.hostname or runner.boot_id != me.boot_id:
        return None
    return _start_time(runner.pid) == runner.started


class ContainerLike(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def name(self) -> str: ...
    def remove(self, *, force: bool = ..., v: bool = ...) -> None: ...


def orphans(
    containers: Iterable[ContainerLike],
    me: Runner,
    alive: Callable[[Runner, Runner], bool | None] = runner_alive,
    now: float | None = None,
) -> list[ContainerLike]:
    """The testbed containers whose runner is gone and that nobody asked to keep."""
    now = time.time() if now is None else now
    out: list[ContainerLike] = []
    for c in containers:
        labels = c.labels
        if LABEL not in labels or labels.get(KEEP) == "1":
            continue
        runner = Runner.parse(labels.get(RUNNER, ""))
        verdict = alive(runner, me) if runner is not None else None
        if verdict is None:
            try:
                created = float(labels.get(CREATED, "0"))
            except ValueError:
                created = 0.0
            verdict = now - created < FOREIGN_TTL
        if not verdict:
            out.append(c)
    return out


def reap(client: object, me: Runner | None = None, run_id: str | None = None) -> list[str]:
    """Remove the containers of dead runs (of one run only, given `run_id`); returns their names."""
    me = me or current_runner()
    label = f"{RUN_ID}={run_id}" if run_id else LABEL
    found = client.containers.list(all=True, filters={"label": label})  # type: ignore[attr-defined]
    removed: list[str] = []
    for c in orphans(found, me):
        try:
            c.remove(force=True, v=True)
            removed.append(c.name)
        except Exception:  # already gone, or being removed by another reaper
            continue
    return removed
