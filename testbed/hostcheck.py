"""``python -m testbed host-check``: start one host per architecture, show its report.

Each host is checked against its declared architecture (the same check the
matrix applies), reached over SSH with a pinned host key to prove that login and
the emulating ``python3`` entry work there too, then removed.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from testbed.arch import ARCHES, get_arch
from testbed.errors import TestbedError
from testbed.hostcontainer import run_kwargs, ssh_port, wait_ready

HELP = "start one host per architecture, print and check its report, remove it"
REPO = Path(__file__).resolve().parent.parent
SSH_PROBE = "command -v python3 && xsmig-host-report"


class ClientKey:
    """A throwaway RSA key (paramiko cannot generate ed25519)."""

    def __init__(self) -> None:
        import paramiko

        self.key = paramiko.RSAKey.generate(2048)
        self.public_line = f"{self.key.get_name()} {self.key.get_base64()} xsmig-host-check"


def ssh_run(port: int, key: ClientKey, host_keys: list[tuple[str, str]], command: str) -> str:
    """Run ``command`` as root over SSH, trusting only the host keys from the start log."""
    import paramiko

    client = paramiko.SSHClient()
    known = client.get_host_keys()
    for keytype, blob in host_keys:
        known.add(
            f"[127.0.0.1]:{port}", keytype, paramiko.PKey.from_type_string(keytype, _b64(blob))
        )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    deadline = time.monotonic() + 20
    while True:  # READY is logged just before sshd binds its port: retry briefly
        try:
            client.connect(
                "127.0.0.1",
                port=port,
                username="root",
                pkey=key.key,
                timeout=15,
                allow_agent=False,
                look_for_keys=False,
            )
            break
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TestbedError(
                f"127.0.0.1:{port} offers a host key not in its log: {exc}"
            ) from None
        except (OSError, paramiko.SSHException) as exc:
            if time.monotonic() > deadline:
                client.close()
                raise TestbedError(f"ssh to 127.0.0.1:{port} failed: {exc}") from None
            time.sleep(0.3)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=60)
        out = stdout.read().decode(errors="replace")
        if stdout.channel.recv_exit_status() != 0:
            raise TestbedError(f"ssh {command!r} failed: {stderr.read().decode(errors='replace')}")
        return str(out)
    finally:
        client.close()


def _b64(blob: str) -> bytes:
    import base64

    return base64.b64decode(blob)


def check_one(client: Any, arch: str, mode: str, key: ClientKey, run_id: str) -> list[str]:
    from testbed.images import check_host_report, ensure_image

    image = ensure_image(arch, quiet=True)
    kwargs = run_kwargs(
        image.tag,
        authorized_key=key.public_line,
        host_id=f"check-{arch}",
        run_id=run_id,
        mode=mode,
        xsmig_package=REPO / "xsmig" if (REPO / "xsmig").is_dir() else None,
    )
    container = client.containers.run(**kwargs)
    try:
        start = wait_ready(container)
        if start.report is None:
            return [f"no report: {start.report_error}"]
        print(f"{arch} ({image.tag}, mode {mode}):")
        print(json.dumps(start.report, indent=2, sort_keys=True))
        problems = check_host_report(arch, start.report, mode=mode)
        out = ssh_run(ssh_port(container), key, start.host_keys, SSH_PROBE).splitlines()
        if not out or out[0] != "/usr/local/bin/python3":
            problems.append(
                f"ssh sessions resolve python3 to {out[:1]}, not /usr/local/bin/python3"
            )
        elif json.loads(out[1]) != start.report:
            problems.append("the report over ssh differs from the start-up report")
        return problems
    finally:
        container.remove(force=True)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", metavar="ARCH", help="default: all")
    parser.add_argument(
        "--native",
        action="store_true",
        help="run interpreters directly (no QEMU) where the CPU can",
    )


def run(args: argparse.Namespace) -> int:
    from testbed.engine import docker_client

    specs = [get_arch(a) for a in (args.arch or ARCHES)]
    mode = "native" if args.native else "qemu"
    for spec in specs:
        if mode == "native" and not spec.runs_natively_on():
            raise TestbedError(f"--native: this CPU cannot run {spec.name} binaries directly")
    arches = [s.name for s in specs]
    key = ClientKey()
    client = docker_client()
    run_id = "host-check-" + uuid.uuid4().hex[:8]
    failed = False
    try:
        for arch in arches:
            problems = check_one(client, arch, mode, key, run_id)
            for p in problems:
                print(f"  REFUSED {arch}: {p}")
            print(f"{arch}: {'REFUSED' if problems else 'ok'}")
            failed = failed or bool(problems)
    finally:
        client.close()
    return 1 if failed else 0
