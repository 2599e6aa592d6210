"""Stand-ins for real machines: sshd containers with a python3 and no xsmig, and an
inventory file that lists them (docs/scale-out.md, "Trying it on one machine").

Started by the testbed's own container stack (labels, loopback-only ports, pinned
host keys) but outside any run: the run under test sees only the inventory, and
deploys xsmig into them as it would into real machines.

    python tests/integration/standins/machines.py start DIR [--arches i386,amd64]
    python tests/integration/standins/machines.py stop DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from scenarios.hosts import HostSpec  # noqa: E402
from testbed.hosts.hosts import Fleet, fleet, new_run_id  # noqa: E402
from testbed.hosts.ssh import ClientKey  # noqa: E402

HOST_IDS = {"i386": 91, "amd64": 92, "armhf": 93, "arm64": 94, "s390x": 95}


def _specs(arches: Sequence[str]) -> dict[str, HostSpec]:
    return {f"box-{a}": HostSpec(f"box-{a}", a, HOST_IDS[a]) for a in arches}


def write_inventory(f: Fleet, directory: Path, key: ClientKey) -> Path:
    """hosts.toml for the started boxes, and the client key it names."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = key.write(directory / "client_key")
    lines = [f"# stand-ins of run {f.run_id}: {sys.argv[0]} stop {directory}"]
    for name, state in f.states.items():
        host = f.host(name)
        lines += [
            "",
            "[[host]]",
            f'name = "{name}"',
            f'arch = "{state.spec.arch}"',
            f'address = "{host.address}"',
            f"port = {host.port}",
            'user = "root"',
            f'key = "{key_file}"',
            f'host_key = "{host.host_key.get_name()} {host.host_key.get_base64()}"',
        ]
    path = directory / "hosts.toml"
    path.write_text("\n".join(lines) + "\n")
    (directory / "run.json").write_text(json.dumps({"run_id": f.run_id}))
    return path


@contextlib.contextmanager
def standins(directory: Path, arches: Sequence[str], keep: bool = False) -> Iterator[Path]:
    """Start one box per architecture (no xsmig in it); yield the inventory file."""
    empty = directory / "no-xsmig"
    empty.mkdir(parents=True, exist_ok=True)
    specs = _specs(arches)
    key = ClientKey.generate()
    with fleet(list(specs), run_id=new_run_id(), key=key, mounts=dict.fromkeys(specs, empty),
               specs=specs, keep=keep, progress=print) as f:
        for name in specs:
            f.host(name)  # raises unless it came up
        yield write_inventory(f, directory, key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--arches", default="i386,amd64")
    args = parser.parse_args()
    directory = args.directory.resolve()
    if args.action == "start":
        with standins(directory, args.arches.split(","), keep=True) as path:
            print(path)
        return 0
    from testbed.hosts import reaper
    from testbed.images.engine import docker_client

    run_id = json.loads((directory / "run.json").read_text())["run_id"]
    for c in docker_client().containers.list(all=True,
                                             filters={"label": f"{reaper.RUN_ID}={run_id}"}):
        c.remove(force=True, v=True)
        print(f"removed {c.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
