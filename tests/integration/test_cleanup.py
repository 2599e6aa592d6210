"""Cleanup proven on real Docker: whatever way a run ends, its containers go.

Each test starts one real host through the matrix's own stack (testbed.hosts.hosts) in a
child process, ends that process in one way, and looks for the run's containers
by their label. Kept short: one host per test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]

# A run in miniature: start one host, say so, then wait to be ended.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from testbed.hosts.hosts import fleet
    repo = Path(sys.argv[1])
    with fleet(["i386-a"], run_id=sys.argv[2], mounts={"i386-a": repo / "xsmig"}) as f:
        f.host("i386-a")  # raises unless the host is up
        print("UP", flush=True)
        time.sleep(600)
    """
)

FAILING_TEST = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from testbed.hosts.hosts import fleet

    def test_fails_mid_way():
        repo = Path(os.environ["XSMIG_TEST_REPO"])
        with fleet(["i386-a"], run_id=os.environ["XSMIG_TEST_RUN"],
                   mounts={"i386-a": repo / "xsmig"}) as f:
            assert f.host("i386-a").run(["true"]).ok
            assert False, "fails on purpose, mid-way"
    """
)


@pytest.fixture
def client() -> Iterator[Any]:
    from testbed.images.engine import docker_client

    c = docker_client()
    yield c
    c.close()


def containers_of(client: Any, run_id: str) -> list[Any]:
    from testbed.hosts import reaper

    found: list[Any] = client.containers.list(
        all=True, filters={"label": f"{reaper.RUN_ID}={run_id}"}
    )
    return found


def start_child(run_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), run_id],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # blocks until the host is up (or the child died)
        seen.append(line)
        if line.strip() == "UP":
            break
    if not seen or seen[-1].strip() != "UP":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child run never came up: {''.join(seen)} {err[-2000:]}")
    return proc


def new_run_id(tag: str) -> str:
    return f"test-cleanup-{tag}-{uuid.uuid4().hex[:6]}"


@contextmanager
def removed_afterwards(client: Any, run_id: str) -> Iterator[None]:
    """Whatever the test asserts, the run's containers go afterwards: a failing test
    must not leak hosts into the next one."""
    try:
        yield
    finally:
        for c in containers_of(client, run_id):
            c.remove(force=True)


@contextmanager
def child_run(client: Any, tag: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A child run with its host up; afterwards the child is killed if still alive
    and the run's containers are removed."""
    run_id = new_run_id(tag)
    with removed_afterwards(client, run_id):
        proc = start_child(run_id)
        try:
            yield run_id, proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_sigint_removes_the_containers_before_exiting(client: Any) -> None:
    with child_run(client, "int") as (run_id, proc):
        assert len(containers_of(client, run_id)) == 1
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert proc.returncode != 0  # interrupted, not finished
        assert containers_of(client, run_id) == []


def test_sigterm_removes_the_containers_before_exiting(client: Any) -> None:
    with child_run(client, "term") as (run_id, proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM
        assert containers_of(client, run_id) == []


def test_after_sigkill_the_next_run_reaps_them(client: Any) -> None:
    from testbed.hosts import reaper

    with child_run(client, "kill") as (run_id, proc):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = containers_of(client, run_id)
        assert len(left) == 1  # nothing could clean up: the orphan is there...
        assert reaper.orphans(left, reaper.current_runner()) == left  # ...and known dead
        # What every run does first (testbed.hosts.hosts.fleet), limited to this run.
        assert reaper.reap(client, run_id=run_id) == [left[0].name]
        assert containers_of(client, run_id) == []


def test_a_test_that_fails_mid_way_leaves_nothing(client: Any, tmp_path: Path) -> None:
    run_id = new_run_id("fail")
    test_file = tmp_path / "test_fails_mid_way.py"
    test_file.write_text(FAILING_TEST)
    env = dict(os.environ, XSMIG_TEST_RUN=run_id, XSMIG_TEST_REPO=str(REPO))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with removed_afterwards(client, run_id):
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        assert "fails on purpose, mid-way" in r.stdout
        assert containers_of(client, run_id) == []
