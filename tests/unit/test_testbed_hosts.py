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


STARTS = ("containers.run(", "containers.create(", "docker run", '"docker", "run"')


def test_one_stack_starts_every_container() -> None:
    """Only testbed/hosts/hosts.py starts containers, so every one carries the reaper's labels."""
    repo = Path(__file__).resolve().parents[2]
    starters = sorted(
        str(p.relative_to(repo))
        for d in ("testbed", "scenarios", "tests", "bench", "images")
        for p in (repo / d).rglob("*.py")
        if p != Path(__file__).resolve()
        and any(s in p.read_text() for s in STARTS)
    )
    assert starters == ["testbed/hosts/hosts.py"]


class RemoteClient(FakeClient):
    """An engine that cannot see this machine's files: containers are created, filled
    with xsmig (put_archive), then started."""

    def __init__(self, logs: bytes, status: str) -> None:
        super().__init__(logs, status)
        self.archives: list[tuple[str, bytes]] = []
        self.steps: dict[str, list[str]] = {}  # container name -> its steps, in order

    def run(self, image: str, **kw: Any) -> FakeContainer:
        raise AssertionError("a remote engine's host is never started with a bind mount")

    def create(self, image: str, **kw: Any) -> FakeContainer:
        c = FakeContainer(kw["name"], kw["labels"], self.logs, self.status)
        client = self

        steps = self.steps.setdefault(kw["name"], ["create"])

        def put_archive(path: str, data: bytes) -> bool:
            steps.append("put_archive")
            client.archives.append((path, data))
            return True

        def start() -> None:
            steps.append("start")

        c.put_archive = put_archive  # type: ignore[attr-defined]
        c.start = start  # type: ignore[attr-defined]
        self.started.append((c, kw))
        return c


def test_hosts_spread_over_engines_and_a_remote_one_gets_xsmig_copied_in(
    tmp_path: Path,
) -> None:
    import io
    import tarfile

    from testbed.hosts.engines import Engine

    pkg = tmp_path / "xsmig"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("MAIN = 1\n")
    here, far = FakeClient(b"", "exited"), RemoteClient(b"", "exited")
    images = {"i386": "xsmig-host-i386:t", "amd64": "xsmig-host-amd64:t"}
    names = ("amd64-a", "amd64-b", "i386-a", "i386-b")
    f = Fleet(here, "run1", ClientKey.generate(), images, dict.fromkeys(names, pkg),
              engines=(Engine("here", here), Engine("far", far, "10.9.8.7", copy_sources=True)))
    with f:
        f.start(list(names))
        assert {n: f.engine(n).name for n in names} == {
            "amd64-a": "here", "amd64-b": "far", "i386-a": "here", "i386-b": "far"}
    assert sorted(kw["name"] for _, kw in here.started) == ["xsmig-run1-amd64-a",
                                                             "xsmig-run1-i386-a"]
    assert far.steps == {  # hosts start concurrently: each container in order
        "xsmig-run1-amd64-b": ["create", "put_archive", "start"],
        "xsmig-run1-i386-b": ["create", "put_archive", "start"],
    }
    kw = far.started[0][1]
    assert kw["ports"] == {"22/tcp": ("10.9.8.7", None)} and "volumes" not in kw
    path, data = far.archives[0]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert path == "/" and sorted(tar.getnames()) == ["opt/xsmig/xsmig/__init__.py",
                                                           "opt/xsmig/xsmig/cli.py"]
        # The seeded bytecode records its source's mtime: the copy keeps it.
        copied = tar.getmember("opt/xsmig/xsmig/cli.py").mtime
        assert int(copied) == int((pkg / "cli.py").stat().st_mtime)
    assert all(c.removed for c, _ in here.started + far.started)
