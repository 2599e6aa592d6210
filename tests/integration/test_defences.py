"""The testbed's own defences, on one real host: key-only pinned SSH, loopback-only
ports, an unprivileged container (docs/security.md, "Testbed")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
HOST = "amd64-b"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Any]:
    from testbed.hosts.hosts import fleet as start

    with start([HOST], mounts={HOST: REPO / "xsmig"}) as f:
        f.host(HOST)  # raises unless the host came up
        yield f


def _connect(port: int, known: paramiko.PKey | None, **auth: Any) -> None:
    client = paramiko.SSHClient()
    if known is not None:
        client.get_host_keys().add(f"[127.0.0.1]:{port}", known.get_name(), known)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=port,
            username="root",
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
            banner_timeout=30,
            auth_timeout=30,
            **auth,
        )
    finally:
        client.close()


def test_the_pinned_key_and_the_run_key_get_in(fleet: Any) -> None:
    assert fleet.host(HOST).run(["true"]).ok


def test_an_unpinned_or_wrong_host_key_is_refused(fleet: Any) -> None:
    from testbed.hosts.ssh import ClientKey

    host = fleet.host(HOST)
    key = fleet.key.pkey
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(host.port, None, pkey=key)  # nothing pinned: RejectPolicy
    impostor = ClientKey.generate().pkey  # an ed25519 key that is not the host's
    with pytest.raises(paramiko.BadHostKeyException):
        _connect(host.port, impostor, pkey=key)


def test_login_is_key_only_and_only_for_the_run_key(fleet: Any) -> None:
    from testbed.hosts.ssh import ClientKey

    host = fleet.host(HOST)
    with pytest.raises(paramiko.AuthenticationException):
        _connect(host.port, host.host_key, pkey=ClientKey.generate().pkey)  # another key
    with pytest.raises(paramiko.AuthenticationException):
        _connect(host.port, host.host_key, password="root")  # passwords: never


def test_ports_are_published_on_loopback_only(fleet: Any) -> None:
    c = fleet.container(HOST)
    c.reload()
    published = c.attrs["NetworkSettings"]["Ports"]
    assert set(published) == {"22/tcp"}
    assert {b["HostIp"] for b in published["22/tcp"]} == {"127.0.0.1"}
    assert c.attrs["HostConfig"]["PortBindings"]["22/tcp"][0]["HostIp"] == "127.0.0.1"


def test_the_container_is_not_privileged(fleet: Any) -> None:
    c = fleet.container(HOST)
    hc = c.attrs["HostConfig"]
    assert hc["Privileged"] is False
    assert not hc.get("CapAdd")
    assert not hc.get("Devices")
    assert hc["NetworkMode"] in ("default", "bridge")  # never the host's network
    assert hc["PidMode"] == "" and hc["IpcMode"] in ("private", "shareable", "")
    assert not hc.get("SecurityOpt")  # Docker's default seccomp and AppArmor profiles
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/opt/xsmig/xsmig"]["RW"] is False  # the code under test is read-only
    assert "/var/run/docker.sock" not in mounts  # no way back to the engine
