"""The host facade's answers and the backends' choices, without Docker or SSH."""

from __future__ import annotations

import importlib.util
import io
import json
import marshal
import os
import struct
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from scenarios.hosts import BY_NAME
from testbed.cells.faults import run_faults
from testbed.cells.results import CellResult
from testbed.errors import TestbedError
from testbed.hosts.backends import Backend
from testbed.hosts.engines import Engine, EngineError, parse_engine, spread
from testbed.hosts.facade import (
    CommandResult,
    HostQueries,
    XsmigError,
    disconnectable,
    killable,
)
from testbed.hosts.hosts import publish_ip
from testbed.hosts.inventory import InventoryError, deployment, load, place


class Scripted(HostQueries):
    """A host whose xsmig and commands answer from a table."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.name = "h"
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], timeout: float = 120.0,
            stdin: bytes = b"") -> CommandResult:
        self.calls.append(tuple(argv))
        status, out = self.answers.get(argv[0], (0, ""))
        return CommandResult(tuple(argv), status, out.encode(), b"no such file\n", 0.0)

    def xsmig(self, *args: str, timeout: float = 300.0) -> CommandResult:
        self.calls.append(("xsmig", *args))
        status, out = self.answers.get(args[0], (0, ""))
        return CommandResult(args, status, out.encode(), b"xsmig: error: nope\n", 0.0)


def test_domains_come_from_xsmig_list_not_from_the_store_layout() -> None:
    h = Scripted({"list": (0, json.dumps([{"name": "a"}, {"name": "b", "corrupt": "x"}]))})
    assert h.domains() == ["a", "b"]
    assert h.has_domain("b") and not h.has_domain("c")
    h.has_domain("a", store="/var/lib/xsmig-tiny")
    assert h.calls[-1] == ("xsmig", "list", "--json", "--store", "/var/lib/xsmig-tiny")


def test_a_failed_or_garbled_list_is_an_error_not_an_empty_store() -> None:
    with pytest.raises(XsmigError, match="exit 5"):
        Scripted({"list": (5, "")}).domains()
    with pytest.raises(XsmigError, match="not a list"):
        Scripted({"list": (0, "Traceback ...")}).domains()


def test_digest_and_files() -> None:
    h = Scripted({"digest": (0, "abc123\n"), "cat": (0, "{}")})
    assert h.digest("d", dump="/tmp/x") == "abc123"
    assert h.calls[-1] == ("xsmig", "digest", "d", "--dump", "/tmp/x")
    assert h.get("/tmp/x") == b"{}"
    with pytest.raises(XsmigError, match="xsmig digest d on h: exit 5"):
        Scripted({"digest": (5, "")}).digest("d")
    with pytest.raises(TestbedError, match="no /nope"):
        Scripted({"cat": (1, "")}).get("/nope")
    h.put("/tmp/y z", b"data")
    assert h.calls[-1] == ("sh", "-c", 'cat > "$1"', "sh", "/tmp/y z")


class Machines:
    """A provider of hosts that cannot be broken on purpose (like an Inventory)."""

    def host(self, name: str) -> HostQueries:
        raise AssertionError("no host may be touched before the capability check")

    def log_tail(self, name: str) -> str:
        return ""


def test_capabilities_are_asked_for_by_protocol() -> None:
    class Engines(Machines):
        def kill(self, name: str) -> None: ...

        def restart(self, name: str) -> None: ...

        def disconnect(self, name: str) -> None: ...

        def reconnect(self, name: str) -> None: ...

    assert killable(Engines(), "x") is not None and disconnectable(Engines(), "x") is not None
    with pytest.raises(TestbedError, match="killed and restarted; Machines hosts cannot"):
        killable(Machines(), "fault cells")


def test_a_fault_cell_on_unbreakable_hosts_fails_up_front(tmp_path: Path) -> None:
    import scenarios

    cell = next(c for c in scenarios.all_cells() if c.faults)
    result = CellResult(cell.id, cell.scenario, cell.pair, cell.column, list(cell.hops),
                        cell.seed, "", "", "")
    with pytest.raises(TestbedError, match="fault cells need hosts that can be killed"):
        run_faults(cell, Machines(), tmp_path, result)  # type: ignore[arg-type]


def test_engine_specs() -> None:
    local = parse_engine("far=unix:///tmp/d.sock")
    assert (local.name, local.url, local.address) == ("far", "unix:///tmp/d.sock", None)
    spec = parse_engine("b=tcp://10.0.0.12:2376@192.168.1.5")
    assert (spec.name, spec.url, spec.address) == ("b", "tcp://10.0.0.12:2376", "192.168.1.5")
    ssh = parse_engine("a=ssh://ci@build-a")
    assert (ssh.url, ssh.address) == ("ssh://ci@build-a", None)
    assert parse_engine("me=local").url == "local"
    assert parse_engine("lab=context:lab-c").url == "context:lab-c"
    for bad in ("nourl", "=tcp://x:1", "x=http://y", "x="):
        with pytest.raises(EngineError):
            parse_engine(bad)


def test_hosts_spread_over_engines_the_same_way_every_time() -> None:
    a, b = Engine("a", object()), Engine("b", object())
    names = ["i386-b", "amd64-a", "i386-a", "amd64-b"]
    placed = spread(names, [a, b])
    assert {n: e.name for n, e in placed.items()} == {
        "amd64-a": "a", "amd64-b": "b", "i386-a": "a", "i386-b": "b"}
    assert spread(list(reversed(names)), [a, b]) == placed


def test_ports_are_published_on_the_engines_address() -> None:
    assert publish_ip(Engine("local", None)) == "127.0.0.1"
    assert publish_ip(Engine("far", None, "10.0.0.12")) == "10.0.0.12"
    assert publish_ip(Engine("far", None, "build-a.lan")) == "0.0.0.0"  # a name cannot be bound


def test_backend_options_exclude_each_other() -> None:
    with pytest.raises(TestbedError, match="exclude each other"):
        Backend(("a=local",), Path("hosts.toml"))
    with pytest.raises(EngineError):
        Backend(("broken",))
    b = Backend(("a=unix:///tmp/x.sock", "b=tcp://h:2376"))
    assert Backend().describe() == "local engine" and b.describe() == "engines a, b"
    with pytest.raises(TestbedError, match=r"inventory /nonexistent\.toml: "):
        Backend(inventory=Path("/nonexistent.toml"))


INVENTORY = """
[[host]]
name = "z1"
arch = "s390x"
address = "10.1.2.3"
port = 22
user = "xsmig"
key = "~/.ssh/k"
host_key = "ssh-ed25519 AAAA"

[[host]]
name = "box"
arch = "i386"
address = "127.0.0.1"
port = 2222
user = "root"
key = "/k"
host_key = "ssh-ed25519 BBBB"
python = "python3.11"
"""


def test_inventory_load_and_placement(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(INVENTORY)
    z1, box = load(path)
    assert (z1.arch, z1.port, z1.python, box.python) == ("s390x", 22, "python3", "python3.11")
    placed = place(["i386-a", "i386-b", "s390x-a"], BY_NAME, [z1, box])
    assert placed == {"i386-a": box, "i386-b": box, "s390x-a": z1}  # one machine, two hosts
    with pytest.raises(InventoryError, match="host amd64-a needs an amd64 machine"):
        place(["amd64-a"], BY_NAME, [z1, box])


@pytest.mark.parametrize(("text", "message"), [
    ("", "no \\[\\[host\\]\\] entries"),
    ("[[host]]\nname='a'\n", "missing arch, address, port, user, key"),
    (INVENTORY.replace('"s390x"', '"sparc"'), "unknown arch 'sparc'"),
    (INVENTORY.replace("port = 22\n", "port = 0\n"), "port must be"),
    (INVENTORY.replace('host_key = "ssh-ed25519 AAAA"\n', ""), "ssh-keyscan -t ed25519 -p 22"),
    (INVENTORY.replace('"box"', '"z1"'), "names must differ"),
    ("[[host]\n", "inventory"),
])
def test_inventory_mistakes_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=message):
        load(path)


def test_the_deployment_keeps_everything_in_its_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "xsmig"
    (pkg / "stream").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stream" / "format.py").write_text("X = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("")
    data = deployment(pkg, "/tmp/xsmig-r-abc", 11, "python3")
    tag = sys.implementation.cache_tag
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
        wrapper = tar.extractfile("bin/xsmig").read().decode()  # type: ignore[union-attr]
        pyc = tar.extractfile(f"xsmig/stream/__pycache__/format.{tag}.pyc").read()  # type: ignore[union-attr]
        src = tar.getmember("xsmig/stream/format.py")
    assert names == {"bin", "store", "scratch", "bin/xsmig", "xsmig/__init__.py",
                     "xsmig/stream/format.py", f"xsmig/__pycache__/__init__.{tag}.pyc",
                     f"xsmig/stream/__pycache__/format.{tag}.pyc"}
    for line in ('d=/tmp/xsmig-r-abc', 'unset PYTHONPYCACHEPREFIX',
                 'XSMIG_STORE="${XSMIG_STORE:-$d/store}"', 'XSMIG_HOST_ID="${XSMIG_HOST_ID:-11}"',
                 'exec python3 -S -m xsmig "$@"'):
        assert line in wrapper
    # The bytecode is valid for the deployed source: same mtime and size in its header.
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert struct.unpack("<II", pyc[8:16]) == (int(src.mtime), src.size)
    assert marshal.loads(pyc[16:]).co_filename == "/tmp/xsmig-r-abc/xsmig/stream/format.py"



def test_the_machine_reaper_takes_only_dead_runs(tmp_path: Path) -> None:
    """A deployment records its runner; the next run reaps a directory whose runner is
    gone (same machine and boot, pid start time changed) or, for a runner elsewhere, one
    older than the reaper's TTL; never a live run's, never a line it cannot read."""
    from testbed.hosts import reaper
    from testbed.hosts.inventory import RUNNER_FILE, left_directories

    me = reaper.current_runner()
    pkg = tmp_path / "xsmig"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    with tarfile.open(fileobj=io.BytesIO(deployment(pkg, "/tmp/xsmig-r-abc", 1, "python3",
                                                    me.label()))) as tar:
        runner_file = tar.extractfile(RUNNER_FILE).read().decode()  # type: ignore[union-attr]
    label, created = runner_file.splitlines()
    assert reaper.Runner.parse(label) == me and float(created) > 0
    dead = reaper.Runner(me.hostname, me.boot_id, me.pid, "0").label()  # pid recycled
    elsewhere = reaper.Runner("other-box", "b", 42, "7").label()
    now = time.time()
    listing = "\n".join([
        f"/tmp/xsmig-live-aaa\t{label}\t{now:.0f}\t",
        f"/tmp/xsmig-dead-bbb\t{dead}\t{now:.0f}\t",
        f"/tmp/xsmig-far-ccc\t{elsewhere}\t{now:.0f}\t",
        f"/tmp/xsmig-farold-ddd\t{elsewhere}\t{now - reaper.FOREIGN_TTL - 60:.0f}\t",
        "/tmp/xsmig-garbled-eee\tno tabs here",
        f"/etc/not-ours\t{dead}\t{now:.0f}\t",
    ])
    found = left_directories(listing)
    assert [d.name for d in found] == ["/tmp/xsmig-live-aaa", "/tmp/xsmig-dead-bbb",
                                       "/tmp/xsmig-far-ccc", "/tmp/xsmig-farold-ddd"]
    gone = [d.name for d in reaper.orphans(found, me)]
    assert gone == ["/tmp/xsmig-dead-bbb", "/tmp/xsmig-farold-ddd"]


def test_a_tls_engine_is_checked_against_its_own_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE (set on many machines) must not replace the engine's CA while
    the client is built (requests prefers it to the session's CA file)."""
    from testbed.hosts import engines

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/elsewhere.crt")
    with engines._engine_ca_only():
        assert "REQUESTS_CA_BUNDLE" not in os.environ and "CURL_CA_BUNDLE" not in os.environ
    assert os.environ["REQUESTS_CA_BUNDLE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert os.environ["CURL_CA_BUNDLE"] == "/elsewhere.crt"
