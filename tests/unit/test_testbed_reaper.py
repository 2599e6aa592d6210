"""The reaper removes containers of dead runners only: never a live run's, never a kept one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from testbed.hosts import reaper
from testbed.hosts.reaper import Runner, current_runner, orphans, runner_alive

ME = Runner("box", "boot-1", 100, "5000")
NOW = 1_000_000.0


@dataclass
class FakeContainer:
    name: str
    labels: Mapping[str, str]
    removed: bool = field(default=False)

    def remove(self, *, force: bool = False, v: bool = False) -> None:
        self.removed = True


def labelled(
    name: str, runner: Runner | str, *, keep: bool = False, age: float = 60.0
) -> FakeContainer:
    text = runner.label() if isinstance(runner, Runner) else runner
    return FakeContainer(
        name,
        {
            reaper.LABEL: "1",
            reaper.RUN_ID: name,
            reaper.RUNNER: text,
            reaper.KEEP: "1" if keep else "0",
            reaper.CREATED: str(NOW - age),
        },
    )


def alive_pids(*pids: int):  # type: ignore[no-untyped-def]
    def alive(r: Runner, me: Runner) -> bool | None:
        if (r.hostname, r.boot_id) != (me.hostname, me.boot_id):
            return None
        return r.pid in pids

    return alive


def test_dead_runner_is_reaped_live_one_is_not() -> None:
    dead = labelled("dead", Runner("box", "boot-1", 200, "1"))
    live = labelled("live", Runner("box", "boot-1", 300, "1"))
    mine = labelled("mine", ME)
    found = orphans([dead, live, mine], ME, alive_pids(100, 300), NOW)
    assert [c.name for c in found] == ["dead"]


def test_kept_containers_are_never_reaped() -> None:
    kept = labelled("kept", Runner("box", "boot-1", 200, "1"), keep=True)
    assert orphans([kept], ME, alive_pids(), NOW) == []


def test_other_boot_or_machine_falls_back_to_age() -> None:
    young = labelled("young", Runner("other", "b", 1, "1"), age=60)
    old = labelled("old", Runner("other", "b", 1, "1"), age=reaper.FOREIGN_TTL + 1)
    garbled = labelled("garbled", "not a runner label", age=reaper.FOREIGN_TTL + 1)
    found = orphans([young, old, garbled], ME, alive_pids(), NOW)
    assert sorted(c.name for c in found) == ["garbled", "old"]


def test_unlabelled_containers_are_ignored() -> None:
    stranger = FakeContainer("db", {"app": "postgres"})
    assert orphans([stranger], ME, alive_pids(), NOW) == []


def test_runner_label_round_trips_and_recycled_pid_is_dead() -> None:
    me = current_runner()
    assert Runner.parse(me.label()) == me
    assert runner_alive(me, me) is True
    recycled = Runner(me.hostname, me.boot_id, me.pid, str(int(me.started) + 1))
    assert runner_alive(recycled, me) is False
    assert Runner.parse("a|b|notapid|c") is None


class FakeClient:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = self
        self._all = containers

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:
        return [c for c in self._all if filters["label"] in c.labels]


def test_reap_removes_orphans_through_the_client() -> None:
    me = current_runner()
    dead = labelled("dead", Runner(me.hostname, me.boot_id, me.pid, "0"))  # pid reused: dead
    live = labelled("live", me)
    removed = reaper.reap(FakeClient([dead, live]), me)
    assert removed == ["dead"]
    assert dead.removed and not live.removed
