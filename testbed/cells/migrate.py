"""Streaming one domain from `xsmig save` on a source host into `xsmig restore` on another.

Two exec channels, no PTY (the stream is binary), bytes pumped in big chunks,
both stderrs drained concurrently so neither side can stall on a full window,
EOF passed on with shutdown_write, and a deadline on every wait. An optional
tee keeps the stream for artifacts; an optional limit cuts it mid-flight
(truncated-stream cells), an optional patch overwrites bytes in flight (hostile cells),
an optional tap sees the byte count after every chunk delivered (fault cells).
"""

from __future__ import annotations

import contextlib
import queue
import shlex
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from testbed.hosts.ssh import CHUNK, Host, SSHError, drain_stderr, send_all, wait_exit

WINDOW = 16 << 20  # SSH receive window of the save's channel


@dataclass(frozen=True)
class Pump:
    """How the runner moves the save's bytes to the restore (bench/stream.py compares).

    recv: bytes asked of the save's channel per read; None: the whole window. paramiko
      buffers what arrived in an array and, for a read smaller than what is buffered,
      deletes the read part from the front: a memmove of the rest, per read (with a
      16 MiB window, up to 15 MiB moved per 1 MiB read). Reading it all leaves nothing
      to move.
    threaded: a thread of its own receives (into a bounded queue) while the calling
      thread sends, so one side's Python overlaps the other's socket waits.
    """

    recv: int | None = None
    threaded: bool = False

    def recv_size(self, window: int) -> int:
        return self.recv if self.recv is not None else max(CHUNK, window)


CLASSIC = Pump(recv=CHUNK)  # the pump before issue 9's second pass
DEFAULT_PUMP = Pump()
_END = object()


def _chunks(
    chan: paramiko.Channel, size: int, deadline: float, threaded: bool
) -> Generator[bytes, None, None]:
    """The save's bytes as they arrive, up to EOF; TimeoutError past the deadline."""
    if not threaded:
        while True:
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            data = chan.recv(size)
            if not data:
                return
            yield data
    got: queue.Queue[object] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand an item to the sending side; False once it has stopped listening."""
        while not stop.is_set():
            try:
                got.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def receive() -> None:
        item: object = _END
        try:
            while not stop.is_set():
                chan.settimeout(max(0.1, deadline - time.monotonic()))
                data = chan.recv(size)
                if not data:
                    break
                if not put(data):
                    return
        except Exception as exc:  # handed to the sending side, which raises it
            item = exc
        put(item)

    reader = threading.Thread(target=receive, daemon=True, name="pump-recv")
    reader.start()
    try:
        while True:
            try:
                item = got.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("no data from the save") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()


@dataclass(frozen=True)
class Transfer:
    save_argv: tuple[str, ...]
    restore_argv: tuple[str, ...]
    save_status: int | None  # None: the save was cut off on purpose (truncation)
    save_stderr: str
    restore_status: int | None  # None: the restore never reported a status (timeout)
    restore_stdout: str
    restore_stderr: str
    bytes: int
    seconds: float
    cut: bool  # the stream was cut on purpose at `limit`
    error: str | None = None  # transport failure: timeout, closed connection

    @property
    def mib_per_s(self) -> float:
        return self.bytes / (1 << 20) / self.seconds if self.seconds > 0 else 0.0


def apply_patch(data: bytes, pos: int, patch: tuple[int, bytes]) -> bytes:
    """Overwrite the part of `patch` that falls in this chunk (chunk starts at offset pos)."""
    at, new = patch
    lo, hi = max(at, pos), min(at + len(new), pos + len(data))
    if lo >= hi:
        return data
    buf = bytearray(data)
    buf[lo - pos : hi - pos] = new[lo - at : hi - at]
    return bytes(buf)


class _StepFailed(Exception):
    """Carries an exception of the caller's step out of the transport's error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.step_error = error


def _step(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:
        raise _StepFailed(exc) from exc


def encoding_args(option: str, encoding: str) -> list[str]:
    """A cell's encoding as xsmig options: "v2-libxc" is v2 in the bare libxc framing."""
    base, _, v2_format = encoding.partition("-")
    return [option, base, "--v2-format", v2_format] if v2_format else [option, encoding]


def save_argv(
    name: str,
    encoding: str,
    *,
    no_ext_info: bool,
    rounds: int | None,
    convert: Sequence[str] = (),
) -> list[str]:
    argv = ["xsmig", "save", name, *encoding_args("--encoding", encoding), "-o", "-"]
    if no_ext_info:
        argv.append("--no-ext-info")
    if rounds is not None:
        argv += ["--rounds", str(rounds)]
    if convert:
        # Convert on the source host: save | xsmig convert --to A | xsmig convert --to B.
        # A failing stage makes the next one see a truncated stream, so the last status
        # (the one a pipeline reports) still fails.
        stages = [argv] + [["xsmig", "convert", *encoding_args("--to", t)] for t in convert]
        return ["sh", "-c", " | ".join(shlex.join(stage) for stage in stages)]
    return argv


def restore_argv(name: str, *, profile: str, source_width: int | None) -> list[str]:
    argv = ["xsmig", "restore", "-i", "-", "--name", name, "--profile", profile]
    if source_width is not None:
        argv += ["--source-width", str(source_width)]
    return argv


def stream(
    src: Host,
    dst: Host,
    save: Sequence[str],
    restore: Sequence[str],
    *,
    timeout: float,
    tee: Path | None = None,
    limit: int | None = None,
    patch: tuple[int, bytes] | None = None,
    tap: Callable[[int, paramiko.Channel, paramiko.Channel], None] | None = None,
    before_save: Callable[[], None] | None = None,
    beside_save: Callable[[], None] | None = None,
    save_window: int = WINDOW,
    pump: Pump = DEFAULT_PUMP,
) -> Transfer:
    """Run save | restore across two hosts. Never raises for remote failures: reports them.

    The caller's own steps can overlap the two commands' start-up (each an emulated
    interpreter start): `before_save` runs once the restore is started (e.g. creating
    the source domain), `beside_save` once the save is started too (e.g. the source's
    digest). An exception from either ends the transfer, closes both commands' channels
    (the restore sees a cut stream and keeps nothing) and propagates. The transfer's
    seconds count from the end of those steps. `save_window`: how far the save may run
    ahead of the destination (fault cells keep it small, so a fault lands mid-stream).
    `pump`: how the bytes are moved (see Pump).
    """
    start = time.monotonic()
    deadline = start + timeout
    total = 0
    cut = False
    error: str | None = None
    pos = 0  # stream offset of the next byte read from the save
    s_chan = d_chan = None
    s_err: list[bytes] = []
    d_err: list[bytes] = []
    d_out = b""
    s_status: int | None = None
    d_status: int | None = None
    sink: BinaryIO | None = None
    failed: BaseException | None = None  # the caller's own step raised this
    # A connection per side that no other migration uses meanwhile: see Host.bulk.
    src_host, dst_host = src, dst
    src, dst = src_host.bulk(), dst_host.bulk()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:  # two logins at once, when new
            connecting = pool.submit(src.connect)
            dst.connect()
            connecting.result()
        d_chan = dst.open_exec(restore, timeout)
        if before_save is not None:
            _step(before_save)
        # A large window lets the save run ahead of the destination (up to WINDOW bytes
        # wait in this process) instead of moving in lock-step with the restore.
        s_chan = src.open_exec(save, timeout, window=save_window)
        if beside_save is not None:
            _step(beside_save)
        start = time.monotonic()
        d_thread, d_err = drain_stderr(d_chan, deadline)
        s_thread, s_err = drain_stderr(s_chan, deadline)
        s_chan.shutdown_write()  # save reads nothing from stdin
        if tee is not None:
            tee.parent.mkdir(parents=True, exist_ok=True)
            sink = tee.open("wb")
        forward = True  # False once the restorer stopped reading
        chunks = _chunks(s_chan, pump.recv_size(save_window), deadline, pump.threaded)
        for data in chunks:
            if patch is not None:
                data = apply_patch(data, pos, patch)
            pos += len(data)
            if limit is not None and total + len(data) >= limit:
                data = data[: limit - total]
                cut = True
            if sink is not None:
                sink.write(data)
            if forward:
                try:
                    d_chan.settimeout(max(0.1, deadline - time.monotonic()))
                    send_all(d_chan, data)
                    total += len(data)
                    if tap is not None:  # fault injection (cells/faults.py): bytes delivered so far
                        tap(total, s_chan, d_chan)
                except OSError:
                    # The restorer refused the stream: a result, not an error. The rest is
                    # still read, so the kept copy is whole and the save's status still counts.
                    forward = False
            if cut:
                break
        chunks.close()  # a cut leaves the rest unread: stops the threaded receiver
        if forward:
            with contextlib.suppress(OSError):
                d_chan.shutdown_write()
        if cut:
            s_chan.close()  # stops the save; its status no longer matters
        d_chan.settimeout(max(0.1, deadline - time.monotonic()))
        out: list[bytes] = []
        while data := d_chan.recv(CHUNK):
            out.append(data)
        d_out = b"".join(out)
        d_status = wait_exit(d_chan, deadline)
        if not cut:
            s_status = wait_exit(s_chan, deadline)
        for t in (d_thread, s_thread):
            t.join(max(0.0, deadline - time.monotonic()))
    except _StepFailed as exc:
        failed = exc.step_error
        error = f"stopped before streaming: {failed}"
    except TimeoutError:
        error = f"timed out after {timeout:.0f}s ({total} bytes streamed)"
    except (SSHError, OSError, paramiko.SSHException) as exc:
        error = f"transport failure after {total} bytes: {exc}"
    finally:
        if sink is not None:
            sink.close()
        for chan in (s_chan, d_chan):
            if chan is not None:
                chan.close()
        src_host.release_bulk(src, total, error is None)
        dst_host.release_bulk(dst, total, error is None)
    if failed is not None:
        raise failed
    return Transfer(
        tuple(save),
        tuple(restore),
        s_status,
        b"".join(s_err).decode(errors="replace"),
        d_status,
        d_out.decode(errors="replace"),
        b"".join(d_err).decode(errors="replace"),
        total,
        time.monotonic() - start,
        cut,
        error,
    )
