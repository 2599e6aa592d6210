"""The save | restore pump, with fake channels standing in for paramiko's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_hosts import OneConnection, PartialSend

from testbed.cells import migrate

# Every pump variant (bench/stream.py compares them) must move the same bytes the same way.
PUMPS = pytest.mark.parametrize(
    "pump",
    [migrate.DEFAULT_PUMP, migrate.CLASSIC, migrate.Pump(threaded=True)],
    ids=["default", "classic", "threaded"],
)

STREAM = bytes(range(256)) * 4096  # 1 MiB, arrives in 3 uneven chunks
CHUNKS = [STREAM[:300_000], STREAM[300_000:900_000], STREAM[900_000:]]


class FakeChannel(PartialSend):
    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.exit_status = -1
        self.eof_received = False
        self.closed = False
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.received = bytearray()
        self.write_shut = False

    def finish(self, status: int, out: bytes = b"", err: bytes = b"") -> None:
        self.stdout.append(out)
        self.stderr.append(err)
        self.eof_received = True
        self.exit_status = status
        self.status_event.set()

    # paramiko.Channel surface used by testbed.cells.migrate / testbed.hosts.ssh
    def settimeout(self, t: float) -> None:
        pass

    def recv(self, n: int) -> bytes:
        while self.stdout and not self.stdout[0]:
            self.stdout.pop(0)
        return self.stdout.pop(0) if self.stdout else b""

    def recv_stderr_ready(self) -> bool:
        return any(self.stderr)

    def recv_stderr(self, n: int) -> bytes:
        """As paramiko's: blocks until stderr bytes, EOF or close."""
        while not any(self.stderr) and not (self.eof_received or self.closed):
            time.sleep(0.002)
        data = b"".join(self.stderr)
        self.stderr.clear()
        return data

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("Socket is closed")
        self.received += data

    def shutdown_write(self) -> None:
        self.write_shut = True

    def close(self) -> None:
        self.closed = True


class Save(FakeChannel):
    def __init__(self, chunks: Sequence[bytes], fail: bool = False) -> None:
        super().__init__()
        self.chunks = list(chunks)
        self.fail = fail

    def recv(self, n: int) -> bytes:
        if self.fail:
            raise TimeoutError
        if self.chunks:
            return self.chunks.pop(0)
        if not self.status_event.is_set():
            self.finish(0, err=b"")
        return b""


class Restore(FakeChannel):
    """Accepts up to `refuse_after` bytes, then behaves like a restorer that exited 4."""

    def __init__(self, refuse_after: int | None = None) -> None:
        super().__init__()
        self.refuse_after = refuse_after

    def sendall(self, data: bytes) -> None:
        if self.refuse_after is not None and len(self.received) >= self.refuse_after:
            if not self.closed:
                self.finish(4, err=b"xsmig: error: refused\n")
                self.closed = True
            raise OSError("Socket is closed")
        super().sendall(data)

    def shutdown_write(self) -> None:
        super().shutdown_write()
        ok = bytes(self.received) == STREAM
        self.finish(0 if ok else 3, b"dom\n" if ok else b"", b"" if ok else b"xsmig: error: x\n")


class FakeHost(OneConnection):
    def __init__(self, name: str, make: Callable[[], FakeChannel]) -> None:
        self.name = name
        self.make = make
        self.channels: list[FakeChannel] = []

        self.released: list[tuple[int, bool]] = []

    def release_bulk(self, twin: FakeHost, carried: int, reusable: bool) -> None:
        self.released.append((carried, reusable))

    def open_exec(
        self, argv: Sequence[str], timeout: float, window: int | None = None
    ) -> FakeChannel:
        chan = self.make()
        self.channels.append(chan)
        return chan


def run(
    save: FakeChannel,
    restore: FakeChannel,
    tmp: Path,
    limit: int | None = None,
    patch: tuple[int, bytes] | None = None,
    pump: migrate.Pump = migrate.DEFAULT_PUMP,
) -> migrate.Transfer:
    src: Any = FakeHost("src", lambda: save)
    dst: Any = FakeHost("dst", lambda: restore)
    return migrate.stream(
        src,
        dst,
        ["xsmig", "save"],
        ["xsmig", "restore"],
        timeout=5,
        tee=tmp / "s.stream",
        limit=limit,
        patch=patch,
        pump=pump,
    )


@PUMPS
def test_whole_stream_is_pumped_then_eof_passed_on(tmp_path: Path, pump: migrate.Pump) -> None:
    save, restore = Save(CHUNKS), Restore()
    t = run(save, restore, tmp_path, pump=pump)
    assert t.error is None
    assert bytes(restore.received) == STREAM and restore.write_shut
    assert (t.save_status, t.restore_status, t.restore_stdout) == (0, 0, "dom\n")
    assert t.bytes == len(STREAM) and not t.cut
    assert (tmp_path / "s.stream").read_bytes() == STREAM
    assert save.closed and restore.closed


@PUMPS
def test_limit_cuts_the_stream_and_stops_the_save(tmp_path: Path, pump: migrate.Pump) -> None:
    save, restore = Save(CHUNKS), Restore()
    t = run(save, restore, tmp_path, limit=400_000, pump=pump)
    assert t.cut and t.bytes == 400_000
    assert bytes(restore.received) == STREAM[:400_000]
    assert t.save_status is None  # the save was cut off, not waited for
    assert t.restore_status == 3 and "xsmig: error" in t.restore_stderr
    assert (tmp_path / "s.stream").read_bytes() == STREAM[:400_000]


@PUMPS
def test_restorer_refusing_early_is_a_result_not_a_transport_error(
    tmp_path: Path, pump: migrate.Pump
) -> None:
    save, restore = Save(CHUNKS), Restore(refuse_after=1)
    t = run(save, restore, tmp_path, pump=pump)
    assert t.error is None
    assert t.restore_status == 4 and t.restore_stderr == "xsmig: error: refused\n"
    # The rest of the stream is still read: the kept copy is whole, the save's status known.
    # Counted: what the restorer took before it refused (whole chunks), not the rest.
    assert t.save_status == 0 and t.bytes < len(STREAM)
    assert (tmp_path / "s.stream").read_bytes() == STREAM


@PUMPS
def test_a_stalled_source_times_out_without_raising(tmp_path: Path, pump: migrate.Pump) -> None:
    t = run(Save(CHUNKS, fail=True), Restore(), tmp_path, pump=pump)
    assert t.error is not None and "timed out" in t.error
    assert t.restore_status is None


def test_argv_builders() -> None:
    assert migrate.save_argv("d", "native", no_ext_info=True, rounds=3) == [
        "xsmig",
        "save",
        "d",
        "--encoding",
        "native",
        "-o",
        "-",
        "--no-ext-info",
        "--rounds",
        "3",
    ]
    assert migrate.restore_argv("d", profile="legacy", source_width=64) == [
        "xsmig",
        "restore",
        "-i",
        "-",
        "--name",
        "d",
        "--profile",
        "legacy",
        "--source-width",
        "64",
    ]


@PUMPS
def test_patch_overwrites_bytes_across_chunk_boundaries(tmp_path: Path, pump: migrate.Pump) -> None:
    at = 299_998  # straddles the first two chunks
    save, restore = Save(CHUNKS), Restore()
    t = run(save, restore, tmp_path, patch=(at, b"ABCD"), pump=pump)
    sent = bytes(restore.received)
    assert sent[at : at + 4] == b"ABCD" and sent[:at] == STREAM[:at]
    assert sent[at + 4 :] == STREAM[at + 4 :]
    assert t.restore_status == 3  # the fake restorer sees a stream that is not the original
    assert migrate.apply_patch(b"xyz", 10, (0, b"AB")) == b"xyz"


def test_save_argv_with_conversions_is_one_shell_pipeline() -> None:
    argv = migrate.save_argv("d", "native", no_ext_info=False, rounds=None,
                             convert=("v2", "native"))
    assert argv == [
        "sh",
        "-c",
        "xsmig save d --encoding native -o - | xsmig convert --to v2 "
        "| xsmig convert --to native",
    ]


def test_v2_libxc_is_v2_in_the_bare_libxc_framing() -> None:
    assert migrate.save_argv("d", "v2-libxc", no_ext_info=False, rounds=None) == [
        "xsmig", "save", "d", "--encoding", "v2", "--v2-format", "libxc", "-o", "-"]
    argv = migrate.save_argv("d", "native", no_ext_info=False, rounds=None,
                             convert=("v2-libxc", "v2", "native"))
    assert argv[2] == ("xsmig save d --encoding native -o - | xsmig convert --to v2 "
                       "--v2-format libxc | xsmig convert --to v2 | xsmig convert --to native")


def test_connections_go_back_to_the_pool_only_after_a_clean_transfer(tmp_path: Path) -> None:
    src: Any = FakeHost("src", lambda: Save(CHUNKS))
    dst: Any = FakeHost("dst", lambda: Restore())
    t = migrate.stream(src, dst, ["xsmig", "save"], ["xsmig", "restore"], timeout=5)
    assert t.error is None
    assert src.released == dst.released == [(len(STREAM), True)]
    stalled: Any = FakeHost("src", lambda: Save(CHUNKS, fail=True))
    t = migrate.stream(stalled, dst, ["xsmig", "save"], ["xsmig", "restore"], timeout=0.5)
    assert t.error is not None and stalled.released[-1][1] is False


def test_a_used_connection_retires_before_the_rekey_volume() -> None:
    from testbed.hosts.ssh import BULK_REUSE_LIMIT, ClientKey, Host

    key = ClientKey.generate()
    host = Host("h", 1, key.pkey, key)
    twin = host.bulk()
    assert twin is not host
    host.release_bulk(twin, BULK_REUSE_LIMIT, True)
    assert host._bulk == []  # carried its share: closed, not pooled
    fresh = host.bulk()
    host.release_bulk(fresh, 1 << 20, True)
    assert host._bulk == [fresh] and fresh.carried == 1 << 20
