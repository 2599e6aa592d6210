"""SSH to the test hosts with paramiko: pinned host keys, key-only login, timeouts everywhere.

`Host` is the one implementation of the host facade (hosts/facade.py), in the spirit
of pytest-testinfra's backends: `run()` for a command's result, `xsmig()` through the
host's agent, files and domains (facade.HostQueries), `open_exec()` for a raw channel
that migrations stream through. Every backend's hosts are reached this way: local and
remote engines' containers at their engine's address, inventory machines at theirs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from testbed.errors import TestbedError
from testbed.hosts.facade import LOOPBACK, CommandResult, HostQueries

CONNECT_TIMEOUT = 10.0
BANNER_TIMEOUT = 30.0
AUTH_TIMEOUT = 30.0
KEEPALIVE_SECONDS = 15
CHUNK = 1 << 20
BULK = 16 << 20  # stdin above this goes over a connection of its own (see Host.dedicated)
# Commands a host's long-lived `xsmig agent` answers in-process (xsmig/agent.py);
# everything else, save and restore above all, is a command of its own.
AGENT_COMMANDS = frozenset({"create", "digest", "diff", "list", "destroy", "host-info"})
AGENT_START_TIMEOUT = 60.0
# A bulk connection goes back to its host's pool for the next migration only while it
# has carried less than this: with the largest cell (~270 MB) on top it stays below
# paramiko's re-key volume (512 MiB), so no migration ever re-keys mid-stream.
BULK_REUSE_LIMIT = 192 << 20
# paramiko logs a failed handshake's traceback from its transport thread (to stderr, by
# logging's last resort) although connect() raises it too: an engine whose port proxy
# accepts before sshd listens (docker-proxy, no iptables) printed one per early try.
# The runner reports connection failures itself, as SSHError.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    """paramiko's transport, preferring AES-GCM: one AEAD pass per packet instead of
    AES-CTR plus a separate HMAC, so the runner spends ~40 % less CPU per MiB pumped
    (docs/performance.md). Every other cipher stays as a fallback."""
    t = paramiko.Transport(sock, **kwargs)  # as SSHClient.connect would make it
    opts = t.get_security_options()
    opts.ciphers = sorted(opts.ciphers, key=lambda c: "-gcm@" not in c)  # stable: keeps order
    return t


class SSHError(TestbedError):
    """A host could not be reached, or a command did not finish in time."""


@dataclass(frozen=True)
class ClientKey:
    """A fresh ed25519 key pair, made per run and never reused."""

    pkey: paramiko.Ed25519Key
    private_openssh: str

    @property
    def public_line(self) -> str:
        return f"{self.pkey.get_name()} {self.pkey.get_base64()} xsmig-testbed"

    @classmethod
    def generate(cls) -> ClientKey:
        pem = (
            Ed25519PrivateKey.generate()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            .decode()
        )
        return cls(paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), pem)

    def write(self, path: Path) -> Path:
        """Write the private key for a developer's `ssh -i` (mode 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(self.private_openssh)
        path.chmod(0o600)
        return path


def host_key_entry(port: int, address: str = LOOPBACK) -> str:
    """known_hosts name of an address and port, as OpenSSH writes it."""
    return f"[{address}]:{port}" if port != 22 else address


def parse_public_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line (`ssh-ed25519 AAAA... comment`) as a paramiko key."""
    fields = line.split()
    if len(fields) < 2:
        raise SSHError(f"not a public key line: {line!r}")
    try:
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))
    except (ValueError, paramiko.SSHException) as exc:
        raise SSHError(f"bad public key line {line!r}: {exc}") from exc


def _read_all(chan: paramiko.Channel, deadline: float, stderr: bool) -> bytes:
    recv = chan.recv_stderr if stderr else chan.recv
    parts: list[bytes] = []
    while True:
        chan.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = recv(CHUNK)
        except TimeoutError as exc:
            raise SSHError("timed out reading command output") from exc
        if not data:
            return b"".join(parts)
        parts.append(data)


def drain_stderr(chan: paramiko.Channel, deadline: float) -> tuple[threading.Thread, list[bytes]]:
    """Read a channel's stderr in a thread so a full stderr window never stalls stdout.

    Blocking reads: the thread sleeps until stderr bytes, EOF (which covers both
    streams: no stderr byte can follow it) or the channel's close wake it, instead of
    polling (a poll every 10 ms, two per migration, was ~7 % of the runner's GIL time
    while pumping)."""
    sink: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = chan.recv_stderr(CHUNK)
            except TimeoutError:  # the channel's timeout, set by its reader: look again
                if time.monotonic() >= deadline:
                    return
                continue
            except (OSError, paramiko.SSHException):
                return
            if not data:
                return
            sink.append(data)

    t = threading.Thread(target=pump, daemon=True, name="stderr-drain")
    t.start()
    return t, sink


def send_all(chan: paramiko.Channel, data: bytes) -> None:
    """chan.sendall(data) without its copies: paramiko's sendall re-slices what is left
    after each packet (at most 32 KiB), which for bytes copies the whole rest every
    time: quadratic in the size (a 256 MiB stdin took minutes). A memoryview slices
    for free, and paramiko's packet writer takes any buffer."""
    view = memoryview(data)
    while view:
        sent = chan.send(view)  # type: ignore[arg-type]  # any buffer works, see above
        view = view[sent:]


def wait_exit(chan: paramiko.Channel, deadline: float) -> int:
    if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
        raise SSHError("timed out waiting for the command's exit status")
    return int(chan.exit_status)


class Agent:
    """One `xsmig agent` process on a host: a JSON request line in, an answer line out."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self._buf = b""

    def read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            self.chan.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.chan.recv(CHUNK)
            if not data:
                err = b""
                while self.chan.recv_stderr_ready():
                    err += self.chan.recv_stderr(CHUNK)
                raise SSHError(f"xsmig agent ended: {err.decode(errors='replace').strip()}")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, argv: Sequence[str], timeout: float) -> CommandResult:
        start = time.monotonic()
        self.chan.settimeout(timeout)
        self.chan.sendall(json.dumps({"argv": list(argv)}).encode() + b"\n")
        answer = json.loads(self.read_line(start + timeout))
        return CommandResult(
            ("xsmig", *argv),
            int(answer["status"]),
            str(answer["stdout"]).encode(),
            str(answer["stderr"]).encode(),
            time.monotonic() - start,
        )

    @property
    def alive(self) -> bool:
        return not (self.chan.closed or self.chan.eof_received or self.chan.exit_status_ready())

    def close(self) -> None:
        self.chan.close()


class Host(HostQueries):
    """One test host reached over SSH: a container's published port, or a machine's."""

    def __init__(
        self,
        name: str,
        port: int,
        host_key: paramiko.PKey,
        key: ClientKey,
        address: str = LOOPBACK,
        user: str = "root",
        prefix: str = "",
    ) -> None:
        self.name = name
        self.port = port
        self.host_key = host_key
        self._key = key
        self.address = address
        self.user = user
        # Shell text in front of every command: an inventory machine's puts the xsmig it
        # deployed first on PATH (hosts/inventory.py); a container's image has its own.
        self.prefix = prefix
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._idle: list[Agent] = []  # started agents not serving anyone right now
        self._bulk: list[Host] = []  # idle connections for migrations (see bulk())
        self.carried = 0  # bytes streamed over this connection (a bulk twin's)
        self.agent_unsupported = False  # its xsmig has no agent (an old --xsmig-ref)

    def known_hosts_line(self) -> str:
        return (
            f"{host_key_entry(self.port, self.address)} {self.host_key.get_name()} "
            f"{self.host_key.get_base64()}"
        )

    def connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and self._transport_alive(self._client):
                return self._client
            client = paramiko.SSHClient()
            keys = client.get_host_keys()
            keys.add(host_key_entry(self.port, self.address), self.host_key.get_name(),
                     self.host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    self.address,
                    port=self.port,
                    username=self.user,
                    pkey=self._key.pkey,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=CONNECT_TIMEOUT,
                    banner_timeout=BANNER_TIMEOUT,
                    auth_timeout=AUTH_TIMEOUT,
                    channel_timeout=CONNECT_TIMEOUT,
                    transport_factory=_transport,
                )
            except (TimeoutError, paramiko.SSHException, OSError) as exc:
                client.close()
                raise SSHError(
                    f"{self.name}: ssh to {self.address}:{self.port} failed: {exc}"
                ) from exc
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(KEEPALIVE_SECONDS)
            self._client = client
            return client

    @staticmethod
    def _transport_alive(client: paramiko.SSHClient) -> bool:
        t = client.get_transport()
        return t is not None and t.is_active()

    def open_exec(
        self, argv: Sequence[str], timeout: float, window: int | None = None
    ) -> paramiko.Channel:
        """Start a command on a fresh exec channel (no PTY: binary-clean stdout).

        `window`: how many bytes the host may send ahead of our reads (SSH flow
        control); a bulk reader gives a large one so the command never waits on us.
        """
        client = self.connect()
        transport = client.get_transport()
        assert transport is not None
        try:
            chan = transport.open_session(window_size=window, timeout=CONNECT_TIMEOUT)
            chan.settimeout(timeout)
            chan.exec_command(self.prefix + shlex.join(argv))
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"{self.name}: cannot start {argv[0]}: {exc}") from exc
        return chan

    def dedicated(self) -> Host:
        """A twin with its own SSH connection, for bulk transfers.

        A stream of hundreds of MiB on the shared connection makes paramiko re-key it
        mid-transfer, which under load can time out for every cell using that host;
        connections of their own (pooled by bulk(), retired before the re-key volume)
        stay below it and isolate cells.
        """
        return Host(self.name, self.port, self.host_key, self._key, self.address, self.user,
                    self.prefix)

    def bulk(self) -> Host:
        """A connection of its own for one migration: an idle pooled one, or a new twin.

        Give it back with release_bulk(). Pooling saves a key exchange and login per
        hop; BULK_REUSE_LIMIT keeps every stream clear of a re-key (see dedicated()).
        """
        with self._lock:
            while self._bulk:
                twin = self._bulk.pop()
                if twin._client is not None and self._transport_alive(twin._client):
                    return twin
                twin.close()
        return self.dedicated()

    def warm_bulk(self) -> None:
        """Log a spare bulk connection in ahead of need: the next bulk() takes it."""
        twin = self.dedicated()
        twin.connect()
        with self._lock:
            self._bulk.append(twin)

    def release_bulk(self, twin: Host, carried: int, reusable: bool) -> None:
        twin.carried += carried
        if reusable and twin.carried < BULK_REUSE_LIMIT:
            with self._lock:
                self._bulk.append(twin)
        else:
            twin.close()

    def run(self, argv: Sequence[str], timeout: float = 120.0, stdin: bytes = b"") -> CommandResult:
        if len(stdin) > BULK:
            twin = self.dedicated()
            try:
                return twin._run(argv, timeout, stdin)
            finally:
                twin.close()
        return self._run(argv, timeout, stdin)

    def _run(self, argv: Sequence[str], timeout: float, stdin: bytes) -> CommandResult:
        start = time.monotonic()
        deadline = start + timeout
        chan = self.open_exec(argv, timeout)
        try:
            err_thread, err = drain_stderr(chan, deadline)
            if stdin:
                send_all(chan, stdin)
            chan.shutdown_write()
            out = _read_all(chan, deadline, stderr=False)
            status = wait_exit(chan, deadline)
            err_thread.join(max(0.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            raise SSHError(f"{self.name}: {shlex.join(argv)} timed out after {timeout}s") from exc
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"{self.name}: {shlex.join(argv)}: connection failed: {exc}") from exc
        finally:
            chan.close()
        return CommandResult(tuple(argv), status, out, b"".join(err), time.monotonic() - start)

    def xsmig(self, *args: str, timeout: float = 300.0) -> CommandResult:
        """An xsmig command: bookkeeping through an agent when the host has one."""
        if args and args[0] in AGENT_COMMANDS and not self.agent_unsupported:
            agent = self._take_agent()
            if agent is not None:
                try:
                    result = agent.call(args, timeout)
                except (TimeoutError, OSError, ValueError, KeyError, paramiko.SSHException) as e:
                    agent.close()
                    raise SSHError(f"{self.name}: xsmig agent: {shlex.join(args)}: {e}") from e
                except SSHError as e:
                    agent.close()
                    raise SSHError(f"{self.name}: {shlex.join(args)}: {e}") from e
                with self._lock:
                    self._idle.append(agent)
                return result
        return self.run(("xsmig", *args), timeout=timeout)

    def _take_agent(self) -> Agent | None:
        """An idle live agent, or a new one; None when this host's xsmig has none."""
        with self._lock:
            while self._idle:
                agent = self._idle.pop()
                if agent.alive:
                    return agent
                agent.close()
        return self.start_agent()

    def start_agent(self) -> Agent | None:
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        chan = self.open_exec(("xsmig", "agent"), AGENT_START_TIMEOUT)
        agent = Agent(chan)
        try:
            hello = json.loads(agent.read_line(deadline))
            if not isinstance(hello, dict) or hello.get("agent") != 1:
                raise ValueError(f"unexpected greeting {hello!r}")
        except (SSHError, ValueError, OSError, paramiko.SSHException):
            # An xsmig without the agent answers `agent` with a usage error: plain commands.
            agent.close()
            self.agent_unsupported = True
            return None
        return agent

    def warm_agents(self, n: int) -> int:
        """Start n agents ahead of need (each pays its interpreter start once); how many run."""
        started = [a for a in (self.start_agent() for _ in range(n)) if a is not None]
        with self._lock:
            self._idle.extend(started)
        return len(started)

    def retire_agents(self) -> None:
        """Stop the idle agents: the next bookkeeping command starts one from the
        xsmig now mounted (which may have an agent where the last one had none)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self.agent_unsupported = False
        for agent in idle:
            agent.close()

    def close(self) -> None:
        with self._lock:
            for agent in self._idle:
                agent.close()
            self._idle.clear()
            bulk, self._bulk = self._bulk, []
        for twin in bulk:
            twin.close()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def ssh_command(self, key_file: Path, known_hosts: Path) -> str:
        """The command a developer types to enter this host, with the same pinning."""
        return shlex.join(
            [
                "ssh",
                "-i",
                str(key_file),
                "-p",
                str(self.port),
                "-o",
                f"UserKnownHostsFile={known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                f"{self.user}@{self.address}",
            ]
        )
