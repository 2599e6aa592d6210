"""The Docker engine: a client that answers, and starting dockerd when none does.

Machines here have no systemd, so "start the engine" means running dockerd in the
background with its log in a known file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from testbed.errors import TestbedError

if TYPE_CHECKING:
    import docker

DOCKERD_LOG = "/var/log/xsmig-dockerd.log"
START_COMMAND = f"nohup dockerd > {DOCKERD_LOG} 2>&1 &"
START_TIMEOUT = 60.0


class EngineError(TestbedError):
    pass


def _fix_hint() -> str:
    if shutil.which("dockerd") is None and not os.path.exists("/usr/bin/dockerd"):
        return "install and start it: python3 -m testbed doctor --fix (as root)"
    return f"start it: {START_COMMAND} (as root), or python3 -m testbed doctor --fix"


def _import_docker() -> Any:
    try:
        import docker
    except ImportError:
        raise EngineError(
            "the docker Python SDK is missing; install it: python3 -m pip install 'docker>=7.1'"
        ) from None
    return docker


def engine_answers(timeout: float = 5.0) -> bool:
    docker = _import_docker()
    try:
        client = docker.from_env(timeout=int(timeout))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any transport error means "no engine here"
        return False


def docker_client(timeout: int = 600) -> docker.DockerClient:
    """A client for the local engine; a clear error with the fix when none answers."""
    docker = _import_docker()
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise EngineError(
            f"no Docker engine answers ({exc.__class__.__name__}); {_fix_hint()}"
        ) from None
    return client


def ensure_engine(start: bool) -> None:
    """Return once an engine answers; start dockerd first if allowed (root only)."""
    if engine_answers():
        return
    if not start:
        raise EngineError(f"no Docker engine answers; {_fix_hint()}")
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers and starting dockerd needs root; "
            f"as root run: {START_COMMAND}"
        )
    dockerd = shutil.which("dockerd") or "/usr/bin/dockerd"
    if not os.path.exists(dockerd):
        raise EngineError(
            "dockerd is not installed; as root run: apt-get update && apt-get install -y docker.io"
        )
    with open(DOCKERD_LOG, "ab") as log:
        # A new session: dockerd outlives us and ignores our terminal's signals.
        subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if engine_answers(timeout=2.0):
            return
        time.sleep(0.5)
    raise EngineError(
        f"started dockerd but it did not answer within {START_TIMEOUT:.0f}s; "
        f"see its log: {DOCKERD_LOG}\n{tail(DOCKERD_LOG)}"
    )


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"
