"""Real machines as hosts: `--inventory hosts.toml` (docs/scale-out.md).

    [[host]]
    name = "box1"                 # any label
    arch = "i386"                 # one of scenarios.arches.ARCHES: its python3's ABI
    address = "10.0.0.5"
    port = 22
    user = "xsmig"
    key = "~/.ssh/xsmig_ed25519"  # the client's private key
    host_key = "ssh-ed25519 AAAA..."  # pinned (or a top-level known_hosts = "FILE")
    python = "python3"            # optional: the interpreter to run xsmig on

Each of the run's hosts (i386-a, amd64-b, ...) is placed on a machine of its
architecture, in turn; two hosts may share a machine. For each, the runner makes a
temporary directory there (`mktemp -d`), unpacks xsmig into it with a wrapper that
keeps the store and the bytecode inside it too, checks that the machine's python3
reports the declared ABI, and on every exit (normal, exception, signal, atexit)
removes the directory. Nothing is installed; nothing outside the directory is
written but the runner's scratch files, which live in it as well.

A runner killed outright (SIGKILL) removes nothing. Each directory therefore holds the
runner's identity (`runner`: as the container labels of testbed.hosts.reaper), and the
next run on a machine first reaps the directories of runs whose runner is gone, with
the processes they left (a detached guest), by the container reaper's rule.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
import tarfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from scenarios.arches import ARCHES
from scenarios.hosts import HostSpec
from testbed.errors import TestbedError
from testbed.hosts import bytecode, reaper
from testbed.hosts.hosts import Guarded
from testbed.hosts.ssh import ClientKey, Host, parse_public_key

DEPLOY_TIMEOUT = 120.0
FIELDS = ("name", "arch", "address", "port", "user", "key")


class InventoryError(TestbedError):
    pass


@dataclass(frozen=True)
class Machine:
    name: str
    arch: str
    address: str
    port: int
    user: str
    key: Path
    host_key: str
    python: str = "python3"


def load(path: Path) -> list[Machine]:
    """The machines of an inventory file, checked; one clear error for any mistake."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InventoryError(f"inventory {path}: {exc}") from None
    known: dict[str, str] = {}
    if "known_hosts" in doc:
        hk = paramiko.HostKeys()
        try:
            hk.load(str(Path(str(doc["known_hosts"])).expanduser()))
        except OSError as exc:
            raise InventoryError(f"inventory {path}: known_hosts: {exc}") from None
        for entry_name in hk:
            for kind, key in hk[entry_name].items():
                if kind == "ssh-ed25519":
                    known[entry_name] = f"{kind} {key.get_base64()}"
    entries = doc.get("host")
    if not isinstance(entries, list) or not entries:
        raise InventoryError(f"inventory {path}: no [[host]] entries")
    machines: list[Machine] = []
    for i, e in enumerate(entries, 1):
        where = f"inventory {path}, host {i}"
        if not isinstance(e, dict):
            raise InventoryError(f"{where}: not a table")
        missing = [f for f in FIELDS if f not in e]
        if missing:
            raise InventoryError(f"{where}: missing {', '.join(missing)}")
        if e["arch"] not in ARCHES:
            raise InventoryError(f"{where}: unknown arch {e['arch']!r}; known: "
                                 f"{', '.join(ARCHES)}")
        port = e["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InventoryError(f"{where}: port must be a number 1-65535")
        entry = f"[{e['address']}]:{port}" if port != 22 else str(e["address"])
        host_key = str(e.get("host_key") or known.get(entry, ""))
        if not host_key:
            raise InventoryError(
                f"{where}: no host_key and no known_hosts entry for {entry} (pin it: "
                f"ssh-keyscan -t ed25519 -p {port} {e['address']})"
            )
        machines.append(Machine(str(e["name"]), str(e["arch"]), str(e["address"]), port,
                                str(e["user"]), Path(str(e["key"])).expanduser(), host_key,
                                str(e.get("python", "python3"))))
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise InventoryError(f"inventory {path}: host names must differ")
    return machines


def place(names: Sequence[str], specs: Mapping[str, HostSpec],
          machines: Sequence[Machine]) -> dict[str, Machine]:
    """Each host on a machine of its architecture, in turn (name order)."""
    by_arch: dict[str, list[Machine]] = {}
    for m in machines:
        by_arch.setdefault(m.arch, []).append(m)
    out: dict[str, Machine] = {}
    used: dict[str, int] = {}
    for n in sorted(names):
        arch = specs[n].arch
        pool = by_arch.get(arch)
        if not pool:
            raise InventoryError(f"host {n} needs an {arch} machine; the inventory has none")
        out[n] = pool[used.get(arch, 0) % len(pool)]
        used[arch] = used.get(arch, 0) + 1
    return out


def _client_key(path: Path) -> ClientKey:
    try:
        pkey = paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise InventoryError(f"cannot read the key {path}: {exc}") from None
    return ClientKey(pkey, "")  # type: ignore[arg-type]  # any key type logs in


def _bare(m: Machine) -> Host:
    """The machine as its SSH user, outside any deployment (to reap, deploy, remove)."""
    return Host(m.name, m.port, parse_public_key(m.host_key), _client_key(m.key), m.address,
                m.user)


WRAPPER = """#!/bin/sh
# xsmig as the runner deployed it: everything it writes stays in this directory
# (bytecode too: beside its sources, the stdlib's from the system's own __pycache__).
d={dir}
export PYTHONPATH="$d${{PYTHONPATH:+:$PYTHONPATH}}"
unset PYTHONPYCACHEPREFIX
export XSMIG_STORE="${{XSMIG_STORE:-$d/store}}"
export XSMIG_HOST_ID="${{XSMIG_HOST_ID:-{host_id}}}"
exec {python} -S -m xsmig "$@"
"""


def deployment(package: Path, directory: str, host_id: int, python: str,
               runner: str = "") -> bytes:
    """A tar of xsmig's sources, the wrapper bin/xsmig, the empty store and scratch and
    the runner's identity (RUNNER_FILE, for the next run's reaper); with xsmig's bytecode
    compiled here, which a machine whose python writes the same format (magic number)
    uses instead of compiling it (under QEMU: seconds)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "store", "scratch"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        text = WRAPPER.format(dir=shlex.quote(directory), host_id=host_id,
                              python=shlex.quote(python))
        add("bin/xsmig", text.encode(), 0o755)
        if runner:
            add(RUNNER_FILE, f"{runner}\n{time.time():.0f}\n".encode(), 0o600)
        tag = sys.implementation.cache_tag
        for path in sorted(package.rglob("*.py")):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(package)
                info = tar.gettarinfo(str(path), f"xsmig/{rel}")
                info.mode = 0o644  # mtime kept: the bytecode's header records it
                with path.open("rb") as f:
                    tar.addfile(info, f)
                code = bytecode.pyc(path, f"{directory}/xsmig/{rel.as_posix()}")
                if code is not None:
                    add(f"xsmig/{rel.parent}/__pycache__/{path.stem}.{tag}.pyc".replace(
                        "/./", "/"), code, 0o644)
    return buf.getvalue()


RUNNER_FILE = "runner"  # runner identity (reaper.Runner.label) and creation time
# Each deployment directory of this user with a runner file: the directory, the file's
# two lines. Then, given directories, their processes (by the store in their
# environment: a detached guest outlives its SSH channel) are killed and they go.
LIST_DEPLOYMENTS = (
    'for f in /tmp/xsmig-*-*/' + RUNNER_FILE + '; do [ -f "$f" ] && [ -O "$f" ] || continue; '
    'printf "%s\\t" "${f%/*}"; tr "\\n" "\\t" < "$f"; echo; done; true')
REAP_DEPLOYMENTS = (
    'for d in "$@"; do for p in /proc/[0-9]*; do '
    'grep -qsaF "XSMIG_STORE=$d/store" "$p/environ" && kill -9 "${p#/proc/}"; done; '
    'rm -rf -- "$d"; done; true')


@dataclass(frozen=True)
class LeftDirectory:
    """A deployment directory found on a machine, seen as the reaper sees a container."""

    name: str
    labels: dict[str, str]

    def remove(self, *, force: bool = False, v: bool = False) -> None:
        pass  # removed in one command per machine (reap_machine)


def left_directories(listing: str) -> list[LeftDirectory]:
    """LIST_DEPLOYMENTS' lines as the reaper's containers; lines it cannot read, skipped
    (never reaped: only what is known to be a dead run's goes)."""
    out = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].startswith("/tmp/xsmig-"):
            continue
        out.append(LeftDirectory(parts[0], {reaper.LABEL: "1", reaper.RUNNER: parts[1],
                                            reaper.CREATED: parts[2]}))
    return out


def reap_machine(bare: Host, me: reaper.Runner | None = None) -> list[str]:
    """Remove the deployment directories (and their processes) of dead runs on one
    machine; returns them."""
    listed = bare.shell(LIST_DEPLOYMENTS, timeout=DEPLOY_TIMEOUT)
    if not listed.ok:
        return []
    dead = [d.name for d in reaper.orphans(left_directories(listed.out),
                                           me or reaper.current_runner())]
    if dead:
        bare.shell(REAP_DEPLOYMENTS, *dead, timeout=DEPLOY_TIMEOUT)
    return dead


@dataclass
class Deployed:
    machine: Machine
    host: Host | None = None
    directory: str = ""
    error: str | None = None


@dataclass
class Inventory(Guarded):
    """The hosts of one run on real machines. A context manager: always cleans up."""

    machines: Sequence[Machine]
    run_id: str
    mounts: Mapping[str, Path]  # host name -> xsmig package dir
    specs: Mapping[str, HostSpec]
    deployed: dict[str, Deployed] = field(default_factory=dict)
    _removed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, names: Sequence[str], say: Callable[[str], None] | None = None) -> None:
        placement = place(names, self.specs, self.machines)
        machines = list({m.name: m for m in placement.values()}.values())
        with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
            for m, gone in zip(machines, pool.map(self._reap, machines), strict=True):
                if gone and say is not None:
                    say(f"{m.name}: removed {len(gone)} deployment(s) of dead runs: "
                        + ", ".join(gone))
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            for n, d in zip(names, pool.map(lambda n: self._deploy(n, placement[n]), names),
                            strict=True):
                self.deployed[n] = d
                if say is not None:
                    m = d.machine
                    say(f"host {n}: FAILED: {d.error.splitlines()[0]}" if d.error else
                        f"host {n}: xsmig deployed on {m.name} ({m.user}@{m.address}:{m.port})"
                        f" in {d.directory}")

    @staticmethod
    def _reap(m: Machine) -> list[str]:
        """A dead run's leftovers on the machine; a machine that cannot be asked is
        reported by its deployment, not here."""
        try:
            bare = _bare(m)
        except (TestbedError, OSError):
            return []
        try:
            return reap_machine(bare)
        except (TestbedError, OSError):
            return []
        finally:
            bare.close()

    def _deploy(self, name: str, m: Machine) -> Deployed:
        d = Deployed(m)
        try:
            key = _client_key(m.key)
            bare = Host(name, m.port, parse_public_key(m.host_key), key, m.address, m.user)
            with self._lock:
                if self._removed:
                    raise InventoryError("run ended while the host was being deployed")
            r = bare.run(["mktemp", "-d", f"/tmp/xsmig-{self.run_id}-XXXXXX"],
                         timeout=DEPLOY_TIMEOUT)
            if not r.ok:
                raise InventoryError(f"mktemp on {m.name}: {r.err.strip()}")
            d.directory = r.out.strip()
            tar = deployment(self.mounts[name], d.directory, self.specs[name].host_id, m.python,
                             reaper.current_runner().label())
            r = bare.run(["tar", "-x", "-C", d.directory, "-f", "-"], timeout=DEPLOY_TIMEOUT,
                         stdin=tar)
            if not r.ok:
                raise InventoryError(f"unpacking xsmig on {m.name}: {r.err.strip()}")
            bare.close()
            host = Host(name, m.port, bare.host_key, key, m.address, m.user,
                        prefix=f"PATH={shlex.quote(d.directory)}/bin:$PATH; export PATH; ")
            host.scratch = f"{d.directory}/scratch"
            d.host = host
            self._check_abi(name, m, host)
        except (TestbedError, OSError) as exc:
            d.error = str(exc)
        return d

    def _check_abi(self, name: str, m: Machine, host: Host) -> None:
        """The machine's python must be the architecture the inventory says it is."""
        r = host.xsmig("host-info", "--json", timeout=DEPLOY_TIMEOUT)
        if not r.ok:
            raise InventoryError(f"xsmig host-info on {m.name}: exit {r.exit_status}: "
                                 f"{r.err.strip()[:300]}")
        try:
            abi = json.loads(r.out).get("abi")
        except ValueError:
            abi = None
        if abi != self.specs[name].arch:
            raise InventoryError(f"{m.name} is declared {m.arch} but its {m.python} is "
                                 f"{abi or 'unknown'}")

    # -- the provider of the host facade ---------------------------------------
    def host(self, name: str) -> Host:
        d = self.deployed.get(name)
        if d is None:
            raise InventoryError(f"host {name} was not started in this run")
        if d.host is None or d.error:
            raise InventoryError(f"host {name} is unreachable: {d.error}")
        return d.host

    def log_tail(self, name: str) -> str:
        d = self.deployed.get(name)
        if d is None:
            return ""
        m = d.machine
        return f"{m.name} ({m.user}@{m.address}:{m.port}), xsmig in {d.directory or '-'}"

    # -- removal ---------------------------------------------------------------
    def remove_all(self) -> None:
        """Idempotent; every deployment directory goes, whatever ended the run."""
        with self._lock:
            if self._removed:
                return
            self._removed = True
        with ThreadPoolExecutor(max_workers=max(1, len(self.deployed))) as pool:
            list(pool.map(self._remove, self.deployed.values()))

    @staticmethod
    def _remove(d: Deployed) -> None:
        if d.host is not None:
            d.host.close()  # agents end at their stdin's EOF
        if not d.directory:
            return
        m = d.machine
        with contextlib.suppress(TestbedError, OSError):
            bare = _bare(m)
            try:
                bare.run(["rm", "-rf", "--", d.directory], timeout=DEPLOY_TIMEOUT)
            finally:
                bare.close()



@contextlib.contextmanager
def inventory(
    path: Path,
    names: Sequence[str],
    *,
    run_id: str,
    mounts: Mapping[str, Path],
    specs: Mapping[str, HostSpec] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[Inventory]:
    from scenarios.hosts import BY_NAME

    inv = Inventory(load(path), run_id, mounts, dict(specs or BY_NAME))
    with inv:
        inv.start(names, progress)
        yield inv

