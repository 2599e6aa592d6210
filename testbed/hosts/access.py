"""How a developer enters the hosts of a run that is kept up: key, known_hosts, ssh commands."""

from __future__ import annotations

from pathlib import Path

from testbed.hosts import reaper
from testbed.hosts.hosts import Fleet


def write_access(f: Fleet, directory: Path) -> list[str]:
    """Write the run's client key and pinned host keys; return the lines to print."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = f.key.write(directory / "client_ed25519")
    known = directory / "known_hosts"
    hosts = [s.host for s in f.states.values() if s.host is not None]
    known.write_text("".join(h.known_hosts_line() + "\n" for h in hosts))
    lines = [f"hosts of run {f.run_id} are kept up; enter them with:"]
    for state in f.states.values():
        if state.host is None:
            lines.append(
                f"  {state.spec.name}: unreachable ({(state.error or '').splitlines()[0]})"
            )
        else:
            lines.append(f"  {state.spec.name}: {state.host.ssh_command(key_file, known)}")
    lines.append(
        f"remove them with: docker rm -f $(docker ps -aq --filter label={reaper.RUN_ID}={f.run_id})"
    )
    return lines
