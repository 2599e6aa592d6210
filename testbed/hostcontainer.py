"""The host container contract: how to start one, and what its start-up log says.

A host is ``docker run`` of an ``xsmig-host-<arch>`` image with:

- env ``XSMIG_AUTHORIZED_KEY`` (required): the client's public key line, for root;
- env ``XSMIG_MODE``: ``qemu`` (default) or ``native``;
- env ``XSMIG_HOST_ID``: this host's id for xsmig (default: the container's hostname);
- env ``XSMIG_STORE``: xsmig's state directory (default /var/lib/xsmig);
- a read-only bind mount of a directory holding the ``xsmig`` package at /opt/xsmig/xsmig;
- port 22 published on 127.0.0.1 only.

Its log then carries ``xsmig-host: HOSTKEY <type> <base64>`` lines (pin these),
``xsmig-host: REPORT <json>`` (check it with ``images.check_host_report``), and
``xsmig-host: READY ...`` just before sshd starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

PREFIX = "xsmig-host: "
MOUNT_POINT = "/opt/xsmig/xsmig"
LABEL = "xsmig.testbed"


class HostStartError(TestbedError):
    pass


@dataclass
class StartLog:
    ready: bool = False
    fatal: str = ""
    report: dict[str, Any] | None = None
    report_error: str = ""
    host_keys: list[tuple[str, str]] = field(default_factory=list)  # (type, base64)


def parse_start_log(text: str) -> StartLog:
    out = StartLog()
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        kind, _, rest = line[len(PREFIX) :].partition(" ")
        if kind == "READY":
            out.ready = True
        elif kind == "FATAL":
            out.fatal = rest
        elif kind == "HOSTKEY":
            keytype, _, blob = rest.partition(" ")
            out.host_keys.append((keytype, blob.strip()))
        elif kind == "REPORT":
            try:
                out.report = json.loads(rest)
            except ValueError as exc:
                out.report_error = f"unreadable report ({exc}): {rest[:200]}"
        elif kind == "REPORT-FAILED":
            out.report_error = rest
    return out


def run_kwargs(
    image: str,
    *,
    authorized_key: str,
    host_id: str,
    run_id: str,
    mode: str = "qemu",
    xsmig_package: Path | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run`` that start one host.

    ``xsmig_package``: the ``xsmig`` package directory to mount (any version).
    """
    if mode not in ("qemu", "native"):
        raise TestbedError(f"mode must be 'qemu' or 'native', not {mode!r}")
    kwargs: dict[str, Any] = {
        "image": image,
        "detach": True,
        "environment": {
            "XSMIG_AUTHORIZED_KEY": authorized_key,
            "XSMIG_HOST_ID": host_id,
            "XSMIG_MODE": mode,
        },
        "labels": {LABEL: "1", "xsmig.run": run_id, "xsmig.host": host_id},
        "ports": {"22/tcp": ("127.0.0.1", None)},  # loopback only, any free port
        "hostname": host_id,
    }
    if name:
        kwargs["name"] = name
    if xsmig_package is not None:
        kwargs["volumes"] = {str(xsmig_package.resolve()): {"bind": MOUNT_POINT, "mode": "ro"}}
    return kwargs


def wait_ready(container: Any, timeout: float = 60.0) -> StartLog:
    """Poll the container's log until READY; a clear error if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        logs = container.logs().decode(errors="replace")
        parsed = parse_start_log(logs)
        if parsed.ready:
            return parsed
        container.reload()
        if container.status in ("exited", "dead") or parsed.fatal:
            raise HostStartError(
                f"host container {container.name} stopped before READY: "
                f"{parsed.fatal or 'see its log'}\n{logs[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise HostStartError(
                f"host container {container.name}: no READY within {timeout:.0f}s\n{logs[-2000:]}"
            )
        time.sleep(0.2)


def ssh_port(container: Any) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get("22/tcp") or []
    for b in bindings:
        if b.get("HostIp") == "127.0.0.1":
            return int(b["HostPort"])
    raise HostStartError(f"host container {container.name} has no loopback port for ssh")
