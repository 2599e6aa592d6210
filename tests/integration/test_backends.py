"""The same cells through the other two backends of the host facade (docs/scale-out.md):
real machines by inventory (stand-ins: sshd containers without xsmig, started outside
the run) and a remote Docker engine (a second dockerd on this machine, started by the
test through tests/integration/standins/engine.sh, or given by XSMIG_TEST_ENGINE=URL).

Few cells on purpose: the whole cold matrix through each backend is recorded in
docs/testbed.md ("Backends"), with its command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "standins"))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CELLS = {
    "i386-to-amd64/native/guest32/cold": "passed",
    "amd64-to-i386/native/guest64/legacy": "refused",
}


def _matrix(report_dir: Path, *backend: str, env: dict[str, str] | None = None
            ) -> tuple[dict[str, str], str, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "matrix", "--select", ",".join(CELLS), "--jobs", "1",
         "--report-dir", str(report_dir), *backend],
        cwd=REPO, capture_output=True, text=True, timeout=1100, env={**os.environ, **(env or {})},
    )
    doc = json.loads((report_dir / "results.json").read_text())
    got = {c["id"]: c["verdict"] for c in doc["cells"]}
    return got, proc.stdout[-3000:] + proc.stderr[-2000:], doc


def test_inventory_deploys_runs_and_cleans_up(tmp_path: Path) -> None:
    from machines import standins

    from testbed.hosts.inventory import load

    with standins(tmp_path / "boxes", ["i386", "amd64"]) as inventory:
        got, log, _ = _matrix(tmp_path / "report", "--inventory", str(inventory))
        assert got == CELLS, log
        assert "xsmig deployed on box-i386" in log
        # Nothing left on the machines: no deployment directory, no xsmig process.
        from testbed.hosts.inventory import _client_key
        from testbed.hosts.ssh import Host, parse_public_key

        for m in load(inventory):
            h = Host(m.name, m.port, parse_public_key(m.host_key), _client_key(m.key),
                     m.address, m.user)
            try:
                left = h.shell("ls -d /tmp/xsmig-* 2>/dev/null; "
                               "ps -eo args | grep ' -m xsmig' | grep -v grep; true").out
            finally:
                h.close()
            assert left.strip() == "", f"{m.name}: {left}"


def test_inventory_refuses_a_machine_of_another_abi(tmp_path: Path) -> None:
    from machines import standins

    with standins(tmp_path / "boxes", ["amd64"]) as inventory:
        # The amd64 box listed twice: as itself, and claimed to be an i386 machine.
        text = inventory.read_text()
        entry = text[text.index("[[host]]"):]
        lying = entry.replace('name = "box-amd64"', 'name = "liar"').replace(
            'arch = "amd64"', 'arch = "i386"')
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(text + "\n" + lying)
        got, log, doc = _matrix(tmp_path / "report", "--inventory", str(wrong))
    assert set(got.values()) == {"failed"}, log  # every cell has an i386 host
    messages = " ".join(str(c["message"]) for c in doc["cells"])  # type: ignore[attr-defined]
    assert "liar is declared i386 but its python3 is amd64" in messages, messages


STANDINS = Path(__file__).resolve().parent / "standins"


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[str, dict[str, str]]]:
    """A remote engine and the environment that reaches it: XSMIG_TEST_ENGINE when given
    (with the caller's environment), else a second dockerd started here on its own
    socket, data root and bridge, reached as a remote engine is, over tcp://127.0.0.1
    with mutual TLS (standins/engine.sh start-tls), stopped afterwards."""
    given = os.environ.get("XSMIG_TEST_ENGINE")
    if given:
        yield given, {}
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("openssl") is None:
        pytest.fail("a second engine needs root, dockerd and openssl, or XSMIG_TEST_ENGINE=URL")
    where = tmp_path_factory.mktemp("engine2")
    script = str(STANDINS / "engine.sh")
    with socket.socket() as s:  # a free port for the engine's TLS endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XSMIG_ENGINE2_TLS_PORT": str(port)}
    started = subprocess.run(["sh", script, "start-tls", str(where)], capture_output=True,
                             text=True, timeout=180, env=env)
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip().splitlines()[-1], {
            "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(where / "client")}
    finally:
        subprocess.run(["sh", script, "stop", str(where)], capture_output=True, timeout=120)


def test_remote_engine_runs_the_cells_and_removes_its_containers(
    tmp_path: Path, second_engine: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from testbed.hosts.engines import EngineSpec, connect

    url, env = second_engine
    if not env.get("DOCKER_TLS_VERIFY") and not os.environ.get("XSMIG_TEST_ENGINE"):
        pytest.fail("the stand-in engine must be reached over TLS")
    if env:  # without the client certificate the engine refuses: TLS is really on
        bare = subprocess.run(["docker", "-H", url, "version"], capture_output=True,
                              text=True, timeout=60,
                              env={k: v for k, v in os.environ.items()
                                   if not k.startswith("DOCKER_")})
        assert bare.returncode != 0, bare.stdout
    got, log, doc = _matrix(tmp_path / "report", "--engine", f"far={url}", env=env)
    assert got == CELLS, log
    assert doc["meta"]["backend"] == "engines far"  # type: ignore[index]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    far = connect(EngineSpec("far", url)).client  # as the runner reached it
    left = far.containers.list(all=True, filters={"label": "org.xsmig.testbed"})
    assert [c.name for c in left if c.labels.get("org.xsmig.keep") != "1"] == []


# A run in miniature on an inventory: deploy one host, say where, wait to be ended.
CHILD = """
import sys, time
from pathlib import Path
from testbed.hosts.inventory import inventory
repo, path = Path(sys.argv[1]), Path(sys.argv[2])
with inventory(path, ["i386-a"], run_id="cleanup", mounts={"i386-a": repo / "xsmig"}) as inv:
    inv.host("i386-a")  # raises unless deployed
    print("UP", inv.deployed["i386-a"].directory, flush=True)
    time.sleep(600)
"""


def test_inventory_deployment_is_removed_on_sigterm(tmp_path: Path) -> None:
    import signal

    from machines import standins

    from testbed.hosts.inventory import _client_key, load
    from testbed.hosts.ssh import Host, parse_public_key

    with standins(tmp_path / "boxes", ["i386"]) as inventory:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(inventory)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line[:1] == ["UP"], proc.stderr.read() if proc.stderr else ""
            directory = line[1]
            (m,) = load(inventory)
            box = Host(m.name, m.port, parse_public_key(m.host_key), _client_key(m.key),
                       m.address, m.user)
            try:
                assert box.run(["test", "-x", f"{directory}/bin/xsmig"]).ok  # deployed
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                assert proc.returncode == 128 + signal.SIGTERM
                assert not box.run(["test", "-e", directory]).ok  # and gone
            finally:
                box.close()
        finally:
            if proc.poll() is None:
                proc.kill()


KILLED_CHILD = """
import sys, time
from pathlib import Path
from testbed.hosts.inventory import inventory
repo, path = Path(sys.argv[1]), Path(sys.argv[2])
with inventory(path, ["i386-a"], run_id=sys.argv[3], mounts={"i386-a": repo / "xsmig"},
               progress=lambda line: print("SAY", line, flush=True)) as inv:
    host = inv.host("i386-a")
    for args in (("create", "g", "--pages", "64"), ("run", "g", "--dirty-rate", "20",
                                                        "--detach")):
        r = host.xsmig(*args)
        assert r.ok, r.err
    print("UP", inv.deployed["i386-a"].directory, flush=True)
    time.sleep(600)
"""


def test_a_killed_runs_deployment_is_reaped_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup: the deployment and its detached guest stay. The next run
    on the machine removes both before it deploys (its runner is provably gone)."""
    import signal

    from machines import standins

    from testbed.hosts.inventory import _client_key, load
    from testbed.hosts.ssh import Host, parse_public_key

    def start(run_id: str) -> tuple[subprocess.Popen[str], str, list[str]]:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(REPO),
                                 str(inventory), run_id], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        said = []
        for line in proc.stdout:
            said.append(line.strip())
            if line.startswith("UP "):
                return proc, line.split()[1], said
        proc.wait(timeout=60)
        raise AssertionError(f"{run_id} did not start: {said} "
                             f"{proc.stderr.read() if proc.stderr else ''}")

    with standins(tmp_path / "boxes", ["i386"]) as inventory:
        (m,) = load(inventory)
        box = Host(m.name, m.port, parse_public_key(m.host_key), _client_key(m.key),
                   m.address, m.user)
        first = second = None
        try:
            first, killed_dir, _ = start("killed")
            guest = box.shell('grep -lsaF "XSMIG_STORE=$1/store" /proc/[0-9]*/environ; true',
                              killed_dir).out.split()
            assert guest, "the detached guest is not running"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=60)
            assert box.run(["test", "-e", f"{killed_dir}/runner"]).ok  # left behind
            second, kept_dir, said = start("next")
            assert any(f"removed 1 deployment(s) of dead runs: {killed_dir}" in s
                       for s in said), said
            assert not box.run(["test", "-e", killed_dir]).ok
            assert box.run(["test", "-e", kept_dir]).ok  # its own, live run untouched
            for pid_environ in guest:
                assert not box.run(["test", "-e", pid_environ]).ok, "the guest still runs"
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
            assert not box.run(["test", "-e", kept_dir]).ok
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
            box.close()
