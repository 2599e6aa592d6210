"""Container lifecycle with a fake Docker client: labels, loopback ports, failures, removal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.hosts import reaper
from testbed.hosts.hosts import Fleet, HostStartError
from testbed.hosts.ssh import ClientKey


class FakeContainer:
    def __init__(self, name: str, labels: dict[str, str], logs: bytes, status: str) -> None:
        self.name, self.labels, self._logs, self.status = name, labels, logs, status
        self.attrs: dict[str, Any] = {
            "State": {"ExitCode": 2},
            "NetworkSettings": {
                "Ports": {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40022"}]}
            },
        }
        self.removed = False

    def reload(self) -> None: ...

    def logs(self, tail: int | None = None) -> bytes:
        return self._logs

    def remove(self, *, force: bool = False, v: bool = False) -> None:
        self.removed = True


class FakeClient:
    def __init__(self, logs: bytes, status: str) -> None:
        self.logs, self.status = logs, status
        self.started: list[tuple[FakeContainer, dict[str, Any]]] = []
        self.containers = self

    def run(self, image: str, **kw: Any) -> FakeContainer:
        c = FakeContainer(kw["name"], kw["labels"], self.logs, self.status)
        self.started.append((c, kw))
        return c

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:
        key, _, value = filters["label"].partition("=")
        return [c for c, _ in self.started if c.labels.get(key) == value and not c.removed]


def fleet(client: FakeClient, keep: bool = False) -> Fleet:
    images = {"i386": "xsmig-host-i386:t", "amd64": "xsmig-host-amd64:t"}
    mounts = {n: Path("/src/xsmig") for n in ("i386-a", "amd64-b")}
    return Fleet(client, "run1", ClientKey.generate(), images, mounts, keep=keep)


def test_a_host_that_dies_fails_with_its_log_tail_and_others_are_still_tried() -> None:
    client = FakeClient(b"xsmig-host: FATAL XSMIG_AUTHORIZED_KEY is empty\n", "exited")
    with fleet(client) as f:
        f.start(["i386-a", "amd64-b"])
        assert len(client.started) == 2
        with pytest.raises(HostStartError, match="XSMIG_AUTHORIZED_KEY is empty"):
            f.host("i386-a")
    assert all(c.removed for c, _ in client.started)


def test_containers_are_labelled_loopback_only_and_mount_the_source_read_only() -> None:
    client = FakeClient(b"", "exited")
    with fleet(client) as f:
        f.start(["i386-a"])
    kw = client.started[0][1]
    assert kw["ports"] == {"22/tcp": ("127.0.0.1", None)}
    assert kw["volumes"] == {"/src/xsmig": {"bind": "/opt/xsmig/xsmig", "mode": "ro"}}
    assert kw["environment"]["XSMIG_HOST_ID"] == "11"
    assert kw["environment"]["XSMIG_AUTHORIZED_KEY"].startswith("ssh-ed25519 ")
    labels = kw["labels"]
    assert labels[reaper.LABEL] == "1" and labels[reaper.RUN_ID] == "run1"
    assert reaper.Runner.parse(labels[reaper.RUNNER]) == reaper.current_runner()
    assert labels[reaper.KEEP] == "0"
    # No privilege beyond Docker's default: the hosts are plain unprivileged containers.
    assert not {"privileged", "cap_add", "devices", "network_mode", "pid_mode"} & set(kw)
    assert not {"security_opt", "userns_mode", "ipc_mode"} & set(kw)
    # The only extra mount is the small tmpfs store of the store-full fault.
    assert kw["tmpfs"] == {"/var/lib/xsmig-tiny": "size=1m"}


def test_kept_hosts_are_labelled_and_not_removed() -> None:
    client = FakeClient(b"", "exited")
    with fleet(client, keep=True) as f:
        f.start(["i386-a"])
    (c, kw) = client.started[0]
    assert kw["labels"][reaper.KEEP] == "1" and not c.removed


def test_removal_is_idempotent() -> None:
    client = FakeClient(b"", "exited")
    f = fleet(client)
    f.start(["amd64-b"])
    f.remove_all()
    f.remove_all()
    assert client.started[0][0].removed


def test_a_port_published_beyond_loopback_is_refused() -> None:
    c = FakeContainer("x", {}, b"", "running")
    c.attrs["NetworkSettings"]["Ports"]["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "22"}]
    with pytest.raises(HostStartError, match=r"not published on 127\.0\.0\.1"):
        Fleet._published_port(c)
    c.attrs["NetworkSettings"]["Ports"]["22/tcp"].append({"HostIp": "127.0.0.1", "HostPort": "5"})
    assert Fleet._published_port(c) == 5


def test_a_host_whose_report_contradicts_its_arch_is_not_used() -> None:
    import json

    from scenarios.hosts import BY_NAME
    from testbed.hosts.hosts import HostState

    f = fleet(FakeClient(b"", "exited"))
    state = HostState(BY_NAME["i386-a"])
    state.report = json.dumps({"arch": "i386", "machine": "x86_64", "sizeof_long": 8})
    with pytest.raises(HostStartError, match="sizeof_long is 8"):
        f._check_report(state)
    state.report = "not json"
    with pytest.raises(HostStartError, match="no usable host report"):
        f._check_report(state)


def test_a_healed_host_keeps_its_object_and_pin_and_takes_the_new_port() -> None:
    from scenarios.hosts import BY_NAME
    from testbed.hosts.hosts import HostState
    from testbed.hosts.ssh import Host

    key = ClientKey.generate()
    host_key = ClientKey.generate().pkey
    state = HostState(BY_NAME["i386-a"], host=Host("i386-a", 40022, host_key, key))
    same = state.host
    healed = Fleet._adopt(state, Host("i386-a", 40099, host_key, key))
    assert healed is same and same is not None and same.port == 40099
    impostor = Host("i386-a", 40100, ClientKey.generate().pkey, key)
    with pytest.raises(HostStartError, match="another host key"):
        Fleet._adopt(state, impostor)
    assert same.port == 40099  # an impostor's port is never adopted


def test_one_stack_starts_every_container() -> None:
    """Only testbed/hosts/hosts.py starts containers, so every one carries the reaper's labels."""
    repo = Path(__file__).resolve().parents[2]
    starters = sorted(
        str(p.relative_to(repo))
        for d in ("testbed", "scenarios", "tests", "bench", "images")
        for p in (repo / d).rglob("*.py")
        if p != Path(__file__).resolve()
        and any(s in p.read_text() for s in ("containers.run(", "containers.create(", "docker run"))
    )
    assert starters == ["testbed/hosts/hosts.py"]
