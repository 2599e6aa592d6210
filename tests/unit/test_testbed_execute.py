"""Running a cell end to end against fake hosts: verdicts, source kept or destroyed, artifacts."""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fake_hosts import OneConnection, PartialSend

import scenarios
from testbed.cells.execute import run_cell
from testbed.cells.results import FAILED, PASSED, REFUSED
from testbed.hosts.hosts import HostStartError
from testbed.hosts.ssh import CommandResult

CELLS = scenarios.by_id()
# restore behaviour: (stream, restore argv) -> (exit status, stderr, digest stored or None)
Behaviour = Callable[[bytes, Sequence[str]], tuple[int, str, str | None]]


def faithful(stream: bytes, argv: Sequence[str]) -> tuple[int, str, str | None]:
    return 0, "", json.loads(stream)["digest"]


class Chan(PartialSend):
    def __init__(
        self, out: bytes = b"", on_eof: Callable[[bytes], tuple[int, bytes, bytes]] | None = None
    ) -> None:
        self.out, self.err, self.on_eof = [out], [b""], on_eof
        self.received = bytearray()
        self.status_event = threading.Event()
        self.exit_status = -1
        self.eof_received = self.closed = False
        if on_eof is None:
            self._finish(0, out, b"")

    def _finish(self, status: int, out: bytes, err: bytes) -> None:
        self.out, self.err = [out], [err]
        self.exit_status, self.eof_received = status, True
        self.status_event.set()

    def settimeout(self, t: float) -> None: ...
    def recv(self, n: int) -> bytes:
        return self.out.pop(0) if self.out else b""

    def recv_stderr_ready(self) -> bool:
        return any(self.err)

    def recv_stderr(self, n: int) -> bytes:
        """As paramiko's: blocks until stderr bytes, EOF or close."""
        while not any(self.err) and not (self.eof_received or self.closed):
            time.sleep(0.002)
        data = b"".join(self.err)
        self.err = []
        return data

    def sendall(self, data: bytes) -> None:
        self.received += data

    def shutdown_write(self) -> None:
        if self.on_eof is not None and not self.status_event.is_set():
            self._finish(*self.on_eof(bytes(self.received)))

    def close(self) -> None:
        self.closed = True


class FakeHost(OneConnection):
    def __init__(self, name: str, behaviour: Behaviour) -> None:
        self.name, self.behaviour = name, behaviour
        self.store: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self.teed = ""
        self.uploads = 0

    def _res(self, argv: Sequence[str], status: int, out: str = "", err: str = "") -> CommandResult:
        return CommandResult(tuple(argv), status, out.encode(), err.encode(), 0.01)

    def xsmig(self, *args: str, timeout: float = 0) -> CommandResult:
        cmd, rest = args[0], list(args[1:])
        if cmd == "create" and self.name == "broken":
            return self._res(args, 5, err="xsmig: error: store is read-only\n")
        if cmd == "create":
            seed = rest[rest.index("--seed") + 1]
            self.store[rest[0]] = hashlib.sha256(seed.encode()).hexdigest()
            return self._res(args, 0)
        if cmd == "digest":
            if rest[0] not in self.store:
                return self._res(args, 5, err="xsmig: error: no such domain\n")
            if "--dump" in rest:
                self.files[rest[rest.index("--dump") + 1]] = self.store[rest[0]].encode()
            return self._res(args, 0, self.store[rest[0]] + "\n")
        if cmd == "list":
            return self._res(args, 0, json.dumps([{"name": n} for n in self.store]))
        if cmd == "destroy":
            self.store.pop(rest[0])
            return self._res(args, 0)
        if cmd == "diff":
            return self._res(args, 0, "same canonical state\n")
        return self._res(args, 0, f"{cmd} output\n")

    def run(self, argv: Sequence[str], timeout: float = 0, stdin: bytes = b"") -> CommandResult:
        self.uploads += len(stdin)
        if argv[0] == "xsmig":
            return self.xsmig(*argv[1:])
        if argv[0] == "cat":
            return self._res(argv, 0, self.files.get(argv[1], b"").decode())
        return self._res(argv, 0)

    def open_exec(self, argv: Sequence[str], timeout: float, window: int | None = None) -> Chan:
        if argv[0] == "sh":  # a teed restore: `tee -p COPY 2>/dev/null | xsmig restore ...`
            self.teed = argv[2]
            argv = shlex.split(argv[2].split("|", 1)[1])
        name = argv[2] if argv[1] == "save" else argv[argv.index("--name") + 1]
        if argv[1] == "save":
            return Chan(json.dumps({"digest": self.store[name]}).encode())

        def restore(stream: bytes) -> tuple[int, bytes, bytes]:
            status, err, digest = self.behaviour(stream, argv)
            if digest is not None:
                self.store[name] = digest
            return status, (name + "\n").encode() if status == 0 else b"", err.encode()

        return Chan(on_eof=restore)


class Provider:
    def __init__(self, behaviour: Behaviour = faithful, down: str | None = None) -> None:
        self.hosts = {n: FakeHost(n, behaviour) for n in ("i386-a", "i386-b", "amd64-a", "amd64-b")}
        self.down = down

    def host(self, name: str) -> FakeHost:
        if name == self.down:
            raise HostStartError(
                f"host {name} is unreachable: no READY line\n"
                "--- container log tail ---\nsshd: fatal: boom"
            )
        return self.hosts[name]

    def log_tail(self, name: str) -> str:
        return f"log of {name}"


def test_identical_restore_passes_and_only_then_destroys_the_source(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/cold"]
    p = Provider()
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == PASSED, r.message
    assert cell.domain_name not in p.hosts["i386-a"].store
    assert cell.domain_name in p.hosts["amd64-b"].store
    assert r.bytes > 0 and r.hops[0].restore_status == 0
    assert not (tmp_path / "artifacts" / "i386-to-amd64__escaped__guest64__cold").exists()


def test_wrong_digest_fails_keeps_the_source_and_the_artifacts(tmp_path: Path) -> None:
    cell = CELLS["amd64-to-i386/native/guest32/cold"]
    p = Provider(lambda s, a: (0, "", "0" * 64))
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED and "different" in r.message
    assert cell.domain_name in p.hosts["amd64-a"].store
    names = {Path(a).name for a in r.artifacts}
    assert {
        "hop1-try1.stream",
        "hop1-try1-save.stderr",
        "hop1-try1-restore.stderr",
        "inspect.txt",
        "diff.txt",
        "repro.txt",
        "result.json",
    } <= names
    assert (tmp_path / r.artifacts[0]).exists()
    # The destination kept its own copy of the stream: nothing was sent back to it.
    dst = p.hosts["i386-b"]
    assert f"tee -p /tmp/{cell.domain_name}.stream 2>/dev/null | xsmig restore" in dst.teed
    assert dst.uploads == 0
    assert "python3 -m testbed repro amd64-to-i386/native/guest32/cold" in r.repro
    assert f"# seed {cell.seed}" in r.repro


def test_refusal_then_retry_with_source_width(tmp_path: Path) -> None:
    cell = CELLS["amd64-to-i386/native/guest64/no-ext-info"]

    def needs_width(stream: bytes, argv: Sequence[str]) -> tuple[int, str, str | None]:
        if "--source-width" in argv:
            return faithful(stream, argv)
        return 4, "xsmig: error: cannot tell the width; pass --source-width\n", None

    p = Provider(needs_width)
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == REFUSED, r.message
    assert r.hops[0].retried_with == "--source-width 64"
    assert cell.domain_name not in p.hosts["amd64-a"].store  # migrated after the retry


def test_restore_where_a_refusal_was_expected_fails(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/legacy"]
    r = run_cell(cell, Provider(), tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED and "expected refused" in r.message


def test_half_restored_domain_fails_a_refusal(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/legacy"]
    p = Provider(lambda s, a: (4, "xsmig: error: refused\n", "leftover"))
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED and "left a domain" in r.message


def test_unreachable_host_fails_the_cell_with_the_log_tail(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/cold"]
    r = run_cell(cell, Provider(down="amd64-b"), tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED
    assert "unreachable" in r.message and "sshd: fatal: boom" in r.message


def test_pingpong_checks_every_hop(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64-to-i386-to-amd64/extended/guest64/pingpong"]
    calls: list[str] = []

    def breaks_third(stream: bytes, argv: Sequence[str]) -> tuple[int, str, str | None]:
        calls.append("x")
        return faithful(stream, argv) if len(calls) < 3 else (0, "", "f" * 64)

    p = Provider(breaks_third)
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED and r.message.startswith("hop 3 i386-b->amd64-b")
    assert len(r.hops) == 3
    assert cell.domain_name in p.hosts["i386-b"].store  # the last good copy stays


def test_teed_restore_keeps_its_argv_status_and_stderr() -> None:
    from testbed.cells.artifacts import teed

    argv = teed(["xsmig", "restore", "-i", "-", "--name", "it's"], "/tmp/a b.stream")
    assert argv[:2] == ["sh", "-c"]
    tee, _, restore = argv[2].partition(" | ")
    # -p: keep copying after the restore stopped reading; tee's own words never reach stderr
    assert tee == "tee -p '/tmp/a b.stream' 2>/dev/null"
    assert shlex.split(restore) == ["xsmig", "restore", "-i", "-", "--name", "it's"]


def test_cost_model_splits_the_cell_and_set_up_overlaps_the_start_up(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/cold"]
    r = run_cell(cell, Provider(), tmp_path)  # type: ignore[arg-type]
    assert r.verdict == PASSED, r.message
    assert min(r.setup_seconds, r.transfer_seconds, r.check_seconds) >= 0
    total = r.setup_seconds + r.transfer_seconds + r.check_seconds
    assert abs(total - r.seconds) < 0.01


def test_a_failed_create_fails_the_cell_and_the_early_restore_gets_nothing(
    tmp_path: Path,
) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/cold"]
    p = Provider()
    p.hosts["i386-a"].name = "broken"
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED
    assert r.message.startswith("xsmig create on broken: exit 5: xsmig: error: store is read-only")
    assert cell.domain_name not in p.hosts["amd64-b"].store  # the restore saw no stream


def test_no_cell_dumps_its_source_at_set_up(tmp_path: Path) -> None:
    from testbed.cells.artifacts import source_dump_path

    for cell_id in ("i386-to-amd64/extended/guest64/large", "i386-to-amd64/escaped/guest64/cold"):
        cell = CELLS[cell_id]
        p = Provider()
        assert run_cell(cell, p, tmp_path).verdict == PASSED  # type: ignore[arg-type]
        assert source_dump_path(cell.domain_name) not in p.hosts["i386-a"].files


class Inspecting(Provider):
    """Counts `xsmig inspect` runs per destination, and what each read."""

    def __init__(self) -> None:
        super().__init__()
        self.inspects: list[tuple[str, str]] = []
        for h in self.hosts.values():
            h.run = self._run_on(h)  # type: ignore[method-assign]

    def _run_on(self, h: FakeHost) -> Callable[..., CommandResult]:
        plain = h.run

        def run(argv: Sequence[str], timeout: float = 0, stdin: bytes = b"") -> CommandResult:
            if argv[0] == "sh" and "xsmig inspect" in argv[2]:
                self.inspects.append((h.name, argv[2]))
                return h._res(argv, 0, f"# exit 0\ninspected on {h.name}\n")
            return plain(argv, timeout, stdin)

        return run


def test_a_repro_inspects_each_stream_once_as_soon_as_it_is_through(tmp_path: Path) -> None:
    cell = CELLS["amd64-to-i386/native/guest64/no-ext-info"]  # refused, then retried
    p = Inspecting()

    def needs_width(stream: bytes, argv: Sequence[str]) -> tuple[int, str, str | None]:
        if "--source-width" in argv:
            return faithful(stream, argv)
        return 4, "xsmig: error: cannot tell the width; pass --source-width\n", None

    p.hosts["i386-b"].behaviour = needs_width
    r = run_cell(cell, p, tmp_path, keep_artifacts=True)  # type: ignore[arg-type]
    assert r.verdict == REFUSED, r.message  # refused as expected, then identical
    # One inspect per attempt, started after each transfer; the artifact is the last one's.
    assert [h for h, _ in p.inspects] == ["i386-b", "i386-b"]
    text = (tmp_path / "artifacts" / "amd64-to-i386__native__guest64__no-ext-info" / "inspect.txt")
    assert "inspected on i386-b" in text.read_text()


def test_a_failing_matrix_cell_inspects_once_after_the_verdict(tmp_path: Path) -> None:
    cell = CELLS["i386-to-amd64/escaped/guest64/cold"]
    p = Inspecting()
    for h in p.hosts.values():
        h.behaviour = lambda stream, argv: (0, "", "0" * 64)  # restores something else
    r = run_cell(cell, p, tmp_path)  # type: ignore[arg-type]
    assert r.verdict == FAILED
    assert [h for h, _ in p.inspects] == ["amd64-b"]
