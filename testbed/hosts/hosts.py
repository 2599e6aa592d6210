"""Container lifecycle of the test hosts: start, wait for sshd, and always remove.

The engine backends of the host facade (hosts/facade.py): the local Docker engine,
or several (`--engine`, hosts/engines.py), the hosts spread over them.
Containers are labelled with the run id and the runner's identity
(testbed.hosts.reaper), publish sshd on their engine's address only (127.0.0.1 for an
engine on this machine), and are removed when the run
ends: normally, on an exception, on Ctrl-C or SIGTERM (signal handlers), at
interpreter exit (atexit), and if all of those were skipped (SIGKILL, a crash),
by the next run's reaper.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import ipaddress
import json
import signal
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, Self

from scenarios.hosts import BY_NAME, HostSpec
from testbed.errors import TestbedError
from testbed.hosts import bytecode, reaper
from testbed.hosts.engines import Engine, EngineSpec, connect_all, ensure_image, spread
from testbed.hosts.facade import LOOPBACK
from testbed.hosts.ssh import ClientKey, Host, SSHError, parse_public_key

NETWORK = "bridge"  # Docker's default network: the hosts' only one

READY_TIMEOUT = 120.0
READY_POLL = 0.1  # seconds between looks at a starting host's log (two cheap API calls)
MOUNT_POINT = "/opt/xsmig/xsmig"  # the image puts /opt/xsmig on PYTHONPATH
# A deliberately small store on every host, for the store-full fault (testbed.cells.faults):
# a restore pointed at it with XSMIG_STORE runs out of space mid-stream, while the
# host's own store and every other cell on that host are untouched.
TINY_STORE = "/var/lib/xsmig-tiny"
TINY_STORE_SIZE = "1m"
LOG_PREFIX = "xsmig-host: "


class HostStartError(TestbedError):
    pass


@dataclass
class StartLog:
    """What a host's start-up log says (images/overlay/usr/local/sbin/xsmig-entrypoint)."""

    ready: int = 0  # READY lines: one per (re)start of the container
    fatal: str = ""
    report: str = ""  # the last REPORT line's JSON text
    report_error: str = ""
    host_keys: list[tuple[str, str]] = field(default_factory=list)  # (type, base64)


def parse_start_log(text: str) -> StartLog:
    out = StartLog()
    for line in text.splitlines():
        if not line.startswith(LOG_PREFIX):
            continue
        kind, _, rest = line[len(LOG_PREFIX) :].partition(" ")
        if kind == "READY":
            out.ready += 1
        elif kind == "FATAL":
            out.fatal = rest
        elif kind == "HOSTKEY":
            keytype, _, blob = rest.partition(" ")
            out.host_keys.append((keytype, blob.strip()))
        elif kind == "REPORT":
            out.report = rest.strip()
        elif kind == "REPORT-FAILED":
            out.report_error = rest
    return out


@dataclass
class HostState:
    """One started (or failed) host of the run."""

    spec: HostSpec
    container: Any = None
    engine: Engine | None = None
    host: Host | None = None
    error: str | None = None
    source: str = "worktree"
    ready_seconds: float = 0.0
    report: str = ""

    def require(self) -> Host:
        """The SSH backend, or a failure that carries the container's log tail."""
        if self.host is None:
            raise HostStartError(f"host {self.spec.name} is unreachable: {self.error}")
        return self.host


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def log_tail(container: Any, lines: int = 20) -> str:
    try:
        data: bytes = container.logs(tail=lines)
        return data.decode(errors="replace").rstrip()
    except Exception as exc:  # the container may already be gone
        return f"(no logs: {exc})"


class Guarded:
    """A run's hosts as a context manager: removed on exit, and by the safety net below on
    SIGINT, SIGTERM, SIGHUP or interpreter exit (the Fleet's containers, an Inventory's
    deployments)."""

    def remove_all(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        register(self)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.remove_all()
        finally:
            unregister(self)


@dataclass
class Fleet(Guarded):
    """The hosts of one run. Use as a context manager; removal is guaranteed."""

    client: Any
    run_id: str
    key: ClientKey
    images: Mapping[str, str]  # arch -> image tag
    mounts: Mapping[str, Path]  # host name -> xsmig package dir
    source_labels: Mapping[str, str] = field(default_factory=dict)
    keep: bool = False
    mode: str = "qemu"
    specs: Mapping[str, HostSpec] = field(default_factory=lambda: dict(BY_NAME))
    states: dict[str, HostState] = field(default_factory=dict)
    engines: Sequence[Engine] = ()  # default: the one engine `client` talks to
    _removed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _compiled: dict[Path, bytes] = field(default_factory=dict)
    _placement: dict[str, Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.engines:
            self.engines = (Engine("local", self.client),)

    def engine(self, name: str) -> Engine:
        """The engine host `name` runs on (fixed once placed: hosts/engines.spread)."""
        return self._placement.setdefault(name, spread([name], self.engines)[name])

    # -- start -------------------------------------------------------------
    def start(self, names: Sequence[str], progress: Callable[[str], None] | None = None) -> None:
        """Start the named hosts concurrently; a host that fails is recorded, not raised."""
        say = progress or (lambda _msg: None)
        for n, e in spread(names, self.engines).items():
            self._placement.setdefault(n, e)  # a host never moves to another engine
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            for state in pool.map(self._start_one, names):
                self.states[state.spec.name] = state
                if state.error:
                    say(f"host {state.spec.name}: FAILED: {state.error.splitlines()[0]}")
                else:
                    where = f"{state.host.address}:{state.host.port}" if state.host else "?"
                    on = f" ({state.engine.name})" if len(self.engines) > 1 and state.engine else ""
                    say(f"host {state.spec.name}: ready in {state.ready_seconds:.1f}s "
                        f"on {where}{on}")

    def _labels(self, spec: HostSpec) -> dict[str, str]:
        return {
            reaper.LABEL: "1",
            reaper.RUN_ID: self.run_id,
            reaper.RUNNER: reaper.current_runner().label(),
            reaper.HOST: spec.name,
            reaper.KEEP: "1" if self.keep else "0",
            reaper.CREATED: str(int(time.time())),
        }

    def _start_one(self, name: str) -> HostState:
        spec = self.specs[name]
        engine = self.engine(name)
        state = HostState(spec, engine=engine, source=self.source_labels.get(name, "worktree"))
        t0 = time.monotonic()
        # xsmig goes in read-only: bind-mounted from this machine, or copied into a
        # remote engine's container before it starts (its entrypoint reports xsmig's ABI).
        settings: dict[str, Any] = {
            "detach": True,
            "name": f"xsmig-{self.run_id}-{name}",
            "hostname": name,
            "labels": self._labels(spec),
            "environment": {
                "XSMIG_AUTHORIZED_KEY": self.key.public_line,
                "XSMIG_HOST_ID": str(spec.host_id),
                "XSMIG_MODE": self.mode,
                # Empty: unset, for the entrypoint's host report (testbed.hosts.bytecode).
                "PYTHONPYCACHEPREFIX": "",
            },
            "ports": {"22/tcp": (publish_ip(engine), None)},
            "tmpfs": {TINY_STORE: f"size={TINY_STORE_SIZE}"},
        }
        containers = engine.client.containers
        try:
            if engine.copy_sources:
                # A remote engine cannot see this machine's files: xsmig is copied in
                # before the entrypoint runs (its host report looks for it).
                state.container = containers.create(self.images[spec.arch], **settings)
                state.container.put_archive("/", self._source_tar(name))
                state.container.start()
            else:
                ro = {str(self.mounts[name]): {"bind": MOUNT_POINT, "mode": "ro"}}
                state.container = containers.run(self.images[spec.arch], volumes=ro, **settings)
            with self._lock:
                removed = self._removed
            if removed:  # the run was torn down while this host was starting
                self._remove(state)
                raise HostStartError("run ended while the host was starting")
            state.host = self._wait_ready(state, t0 + READY_TIMEOUT)
            state.ready_seconds = time.monotonic() - t0
        except Exception as exc:
            tail = log_tail(state.container) if state.container is not None else ""
            state.error = f"{exc}" + (f"\n--- container log tail ---\n{tail}" if tail else "")
        return state

    def _wait_ready(self, state: HostState, deadline: float, starts: int = 1) -> Host:
        """Wait for the `starts`-th READY line, then pin the host key and log in."""
        c = state.container
        while True:
            c.reload()
            log = parse_start_log(c.logs().decode(errors="replace"))
            if log.ready >= starts:
                break
            if log.fatal:
                raise HostStartError(f"host entrypoint failed: {log.fatal}")
            if c.status in ("exited", "dead"):
                raise HostStartError(f"container exited ({c.attrs['State'].get('ExitCode')})")
            if time.monotonic() > deadline:
                raise HostStartError(f"no READY line within {READY_TIMEOUT:.0f}s")
            time.sleep(READY_POLL)
        state.report = log.report or log.report_error
        self._check_report(state)
        engine = state.engine or self.engines[0]
        port = self._published_port(c, publish_ip(engine))
        # The host key comes out of band, in the log the engine keeps, never from the network.
        keys = [f"{kind} {blob}" for kind, blob in log.host_keys if kind == "ssh-ed25519"]
        if not keys:
            raise HostStartError("no ssh-ed25519 HOSTKEY line in the host's log")
        host = Host(state.spec.name, port, parse_public_key(keys[-1]), self.key, engine.address)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                host.connect()
                self._prepare(host)
                return host
            except SSHError as exc:  # sshd may still be binding its socket
                last = exc
                time.sleep(READY_POLL)
        raise HostStartError(f"sshd did not accept us within {READY_TIMEOUT:.0f}s: {last}")

    def _prepare(self, host: Host) -> None:
        """What a fresh host's first cell would otherwise wait for; best effort each.

        Bytecode in the interpreters' cache (testbed.hosts.bytecode), and one spare connection
        for the first migration (Host.bulk), logged in meanwhile.
        """
        with ThreadPoolExecutor(max_workers=1) as pool:
            spare = pool.submit(host.warm_bulk)
            with contextlib.suppress(SSHError, OSError):
                code = self._bytecode(host.name)
                host.run(["sh", "-c", bytecode.seed_script()], timeout=60, stdin=code)
            with contextlib.suppress(SSHError):
                spare.result()

    def _source_tar(self, name: str) -> bytes:
        """The host's xsmig package as a tar rooted at /, for put_archive (mtimes kept:
        the bytecode seeded by _prepare records its sources' mtime and size)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            package = self.mounts[name]
            for path in sorted(package.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    arc = f"{MOUNT_POINT.lstrip('/')}/{path.relative_to(package)}"
                    info = tar.gettarinfo(str(path), arc)
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    info.mode = 0o644
                    with path.open("rb") as f:
                        tar.addfile(info, f)
        return buf.getvalue()

    def _bytecode(self, name: str) -> bytes:
        """xsmig's bytecode for this host's mounted source, compiled once per source."""
        package = self.mounts[name]
        with self._lock:
            code = self._compiled.get(package)
        if code is None:
            code = bytecode.xsmig_tar(package, MOUNT_POINT)
            with self._lock:
                self._compiled[package] = code
        return code

    def _check_report(self, state: HostState) -> None:
        """A host that is not what its name says (wrong width, no QEMU) must not pass cells."""
        from testbed.images.images import check_host_report

        try:
            report = json.loads(state.report)
        except ValueError as exc:
            raise HostStartError(f"no usable host report in the log: {exc}") from exc
        problems = check_host_report(state.spec.arch, report, mode=self.mode)
        if problems:
            raise HostStartError("host report: " + "; ".join(problems))

    @staticmethod
    def _published_port(c: Any, ip: str = LOOPBACK) -> int:
        bindings = (c.attrs["NetworkSettings"]["Ports"] or {}).get("22/tcp") or []
        for b in bindings:
            if b.get("HostIp") == ip:
                return int(b["HostPort"])
        raise HostStartError(f"sshd is not published on {ip}: {bindings}")

    # -- use ---------------------------------------------------------------
    def host(self, name: str) -> Host:
        state = self.states.get(name)
        if state is None:
            raise HostStartError(f"host {name} was not started in this run")
        return state.require()

    def reload_source(self, name: str) -> None:
        """The xsmig tree mounted on this host changed in place (bisect): its agents
        imported the old one, and its bytecode cache holds the old one's code."""
        with self._lock:
            self._compiled.pop(self.mounts[name], None)
        host = self.host(name)
        host.retire_agents()
        host.run(["sh", "-c", bytecode.seed_script()], timeout=60, stdin=self._bytecode(name))

    def log_tail(self, name: str) -> str:
        state = self.states.get(name)
        return log_tail(state.container) if state and state.container is not None else ""

    def container_name(self, name: str) -> str:
        return f"xsmig-{self.run_id}-{name}"

    def container(self, name: str) -> Any:
        state = self.states.get(name)
        if state is None or state.container is None:
            raise HostStartError(f"host {name} has no container in this run")
        return state.container

    # -- faults (testbed.cells.faults): break a host on purpose, then heal it ----------
    def kill(self, name: str) -> None:
        """SIGKILL the whole container: every process on the host dies at once."""
        self.container(name).kill()

    def restart(self, name: str) -> Host:
        """Start a killed host again and wait until it serves SSH (its port may change)."""
        state = self.states[name]
        c = self.container(name)
        starts = parse_start_log(c.logs().decode(errors="replace")).ready + 1
        c.start()
        host = self._wait_ready(state, time.monotonic() + READY_TIMEOUT, starts)
        return self._adopt(state, host)

    def disconnect(self, name: str) -> None:
        """Take the host off the network: its published port and every connection go."""
        client = self.engine(name).client
        client.networks.get(NETWORK).disconnect(self.container(name), force=True)

    def reconnect(self, name: str) -> Host:
        engine = self.engine(name)
        engine.client.networks.get(NETWORK).connect(self.container(name))
        state = self.states[name]
        c = self.container(name)
        c.reload()
        assert state.host is not None
        host = Host(name, self._published_port(c, publish_ip(engine)), state.host.host_key,
                    self.key, engine.address)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                host.connect()
                break
            except SSHError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        return self._adopt(state, host)

    @staticmethod
    def _adopt(state: HostState, fresh: Host) -> Host:
        """Point the run's Host object at the healed host (same key pins, new port)."""
        if state.host is None:
            state.host = fresh
            return fresh
        state.host.close()
        if fresh.host_key.asbytes() != state.host.host_key.asbytes():
            raise HostStartError(f"host {state.spec.name} came back with another host key")
        state.host.port = fresh.port
        fresh.close()
        return state.host

    # -- removal -----------------------------------------------------------
    def remove_all(self) -> None:
        """Idempotent; safe from signal handlers, atexit and normal exit alike."""
        with self._lock:
            if self._removed:
                return
            self._removed = True
        for state in self.states.values():
            if state.host is not None:
                state.host.close()
        if not self.keep and self.states:
            # At once: each removal is a SIGKILL and a filesystem teardown in dockerd
            # (0.3-0.5 s), independent of the others. All are done when this returns.
            with ThreadPoolExecutor(max_workers=len(self.states)) as pool:
                list(pool.map(self._remove, self.states.values()))
        if not self.keep:
            # Containers whose start raced with this teardown are found by label.
            for engine in self.engines:
                with contextlib.suppress(Exception):
                    for c in engine.client.containers.list(
                        all=True, filters={"label": f"{reaper.RUN_ID}={self.run_id}"}
                    ):
                        c.remove(force=True, v=True)

    @staticmethod
    def _remove(state: HostState) -> None:
        if state.container is not None:
            with contextlib.suppress(Exception):
                state.container.remove(force=True, v=True)



def publish_ip(engine: Engine) -> str:
    """The address an engine publishes sshd on: its own address when that is an IP (a
    name cannot be bound to), else every address of the engine's machine."""
    try:
        return str(ipaddress.ip_address(engine.address))
    except ValueError:
        return "0.0.0.0"


# -- process-wide safety net --------------------------------------------------
class Removable(Protocol):
    """What the safety net removes: a Fleet's containers, an Inventory's deployments."""

    def remove_all(self) -> None: ...


_live: list[Removable] = []
_previous: dict[int, Any] = {}  # signal handlers to put back when no fleet is left
_atexit_registered = False
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _cleanup_all() -> None:
    for fleet in list(_live):
        fleet.remove_all()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def register(fleet: Removable) -> None:
    global _atexit_registered
    _live.append(fleet)
    if not _atexit_registered:
        atexit.register(_cleanup_all)
        _atexit_registered = True
    if not _previous and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            _previous[sig] = signal.signal(sig, _on_signal)


def unregister(fleet: Removable) -> None:
    with contextlib.suppress(ValueError):
        _live.remove(fleet)
    if not _live and _previous and threading.current_thread() is threading.main_thread():
        for sig, handler in _previous.items():
            signal.signal(sig, handler)
        _previous.clear()


@contextlib.contextmanager
def fleet(
    names: Sequence[str],
    *,
    run_id: str | None = None,
    key: ClientKey | None = None,
    mounts: Mapping[str, Path],
    source_labels: Mapping[str, str] | None = None,
    keep: bool = False,
    mode: str = "qemu",
    progress: Callable[[str], None] | None = None,
    rebuild_images: bool = False,
    specs: Mapping[str, HostSpec] | None = None,
    engines: Sequence[EngineSpec] = (),
) -> Iterator[Fleet]:
    """Reap dead runs, build/reuse the images, start the hosts; remove them at the end.

    `engines`: where the hosts go (hosts/engines.py); default the local engine."""
    from testbed.images.engine import docker_client
    from testbed.images.images import ensure_images

    say = progress or (lambda _msg: None)
    client = docker_client()
    on = connect_all(engines) if engines else [Engine("local", client)]
    # Reaping dead runs' containers (one inspect per testbed container on the engine)
    # overlaps the image check and this run's host start: it never touches a container
    # of a live runner, so never ours.
    reaping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reaper")
    reaped = reaping.submit(lambda: [c for e in on for c in reaper.reap(e.client)])
    reaping.shutdown(wait=False)
    table = dict(specs or BY_NAME)
    arches = sorted({table[n].arch for n in names})
    images = {b.arch: b.tag for b in ensure_images(arches, rebuild=rebuild_images)}
    placement = spread(names, on)
    for engine in {id(e): e for e in placement.values()}.values():
        for arch in sorted({table[n].arch for n in names if placement[n] is engine}):
            ensure_image(engine, images[arch], client, say)
    f = Fleet(
        client,
        run_id or new_run_id(),
        key or ClientKey.generate(),
        images,
        mounts,
        dict(source_labels or {}),
        keep=keep,
        mode=mode,
        specs=table,
        engines=tuple(on),
    )
    with f:
        f.start(names, say)
        _report_reaped(reaped, say)
        yield f


def _report_reaped(reaped: Future[list[str]], say: Callable[[str], None]) -> None:
    try:
        gone = reaped.result()
    except Exception as exc:  # the run can go on: the next run tries again
        say(f"could not reap dead runs' containers: {exc}")
        return
    if gone:
        say(f"reaped {len(gone)} container(s) of dead runs: {', '.join(gone)}")
