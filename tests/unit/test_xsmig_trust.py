"""Trust (issue 7): restore accepts exactly what digest accepts, exit status tells the
truth, outputs never clobber, input that stalls or nests or is closed ends cleanly."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from xsmig_helpers import REPO, Guest, assert_cli_error, cli, make, restore_bytes, save_bytes

from xsmig import pagetypes as pt
from xsmig.canonical import CanonicalDomain
from xsmig.domain import DomainDir
from xsmig.errors import StateError, StreamError
from xsmig.inspect import inspect_stream
from xsmig.layout import AMD64, I386
from xsmig.store import Store
from xsmig.stream import format as fmt
from xsmig.stream.format import Encoding
from xsmig.stream.reader import Batch, StreamHeader, StreamParser

# -- where things are in a stream --


class _Where:
    """A sink recording where each page's data and the unmapped list sit in a stream."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[int, int]] = {}  # pfn -> (type, offset of its data)
        self.unmapped_at = 0
        self.unmapped: list[int] = []
        self.header: StreamHeader | None = None

    def on_header(self, header: StreamHeader) -> None:
        self.header = header

    def on_batch(self, batch: Batch) -> None:
        i = 0
        for pfn, t in zip(batch.pfns, batch.types, strict=True):
            if pt.has_data(t):
                self.pages[pfn] = (t, batch.data_offset + i * fmt.PAGE_SIZE)
                i += 1

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        pass

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        self.unmapped_at = offset
        self.unmapped += pfns

    def on_vcpu(self, *args: object) -> None:
        pass

    def on_shared_info(self, offset: int, data: bytes) -> None:
        pass


def _where(data: bytes) -> _Where:
    w = _Where()
    StreamParser(io.BytesIO(data)).parse(w)
    return w


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> DomainDir:
    store = Store(tmp_path_factory.mktemp("sparse"))
    return make(store, "sp", Guest(pages=128, width=64, vcpus=1, seed=5, shape="sparse"))


def _point_pt_entry_at(data: bytes, target_pfn: int) -> tuple[bytes, int]:
    """Make a free (non-present) entry of the first L1 table map target_pfn."""
    w = _where(data)
    l1 = next(off for _pfn, (t, off) in sorted(w.pages.items()) if t & ~pt.LPINTAB == pt.L1TAB)
    entries = struct.unpack_from("<512Q", data, l1)
    index = next(i for i, e in enumerate(entries) if not e & 1)
    out = bytearray(data)
    struct.pack_into("<Q", out, l1 + 8 * index, (target_pfn << 12) | 0x67)
    return bytes(out), l1 + 8 * index


@pytest.mark.parametrize("encoding", list(Encoding))
def test_restore_refuses_a_pt_entry_naming_an_unmapped_pfn(store: Store, sparse: DomainDir,
                                                           encoding: Encoding) -> None:
    """Digest rejects a page table mapping a hole; so must restore, at that entry."""
    data = save_bytes(sparse, encoding, AMD64)
    hole = _where(data).unmapped[0]
    bad, at = _point_pt_entry_at(data, hole)
    with pytest.raises(StreamError) as e:
        restore_bytes(store, bad, "victim")
    assert e.value.offset == at and "page table" in str(e.value)
    assert store.names() == [] and list(store.incoming.iterdir()) == []


def test_restore_refuses_a_pt_entry_naming_a_pfn_never_sent(store: Store,
                                                            sparse: DomainDir) -> None:
    data = save_bytes(sparse, Encoding.EXTENDED, AMD64)
    w = _where(data)
    hole, other = w.unmapped[0], w.unmapped[1]
    bad, at = _point_pt_entry_at(data, hole)
    # Drop the hole from the unmapped list too: it is then neither sent nor unmapped.
    word = w.header.layout.ulong_size if w.header else 8
    out = bytearray(bad)
    at_list = w.unmapped_at + 4
    index = w.unmapped.index(hole)
    out[at_list + index * word:at_list + (index + 1) * word] = other.to_bytes(word, "little")
    with pytest.raises(StreamError) as e:
        restore_bytes(store, bytes(out), "victim")
    assert e.value.offset == at
    assert store.names() == []


def test_every_restored_domain_is_accepted_by_digest(store: Store, sparse: DomainDir) -> None:
    """The equivalence on a good stream of each encoding: restore 0 -> digest/diff/save 0."""
    for i, encoding in enumerate(Encoding):
        restored = restore_bytes(store, save_bytes(sparse, encoding, I386), f"r{i}")
        assert CanonicalDomain(restored).digest() == CanonicalDomain(sparse).digest()
        save_bytes(restored, encoding, AMD64)


# -- exit status tells the truth --


def _stream_file(tmp_path: Path, encoding: str = "extended") -> tuple[Path, Path]:
    st = tmp_path / "store"
    assert cli(st, "create", "g", "--pages", "256", "--vcpus", "1").returncode == 0
    stream = tmp_path / "g.bin"
    assert cli(st, "save", "g", "--encoding", encoding, "-o", str(stream)).returncode == 0
    return st, stream


def _env(st: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(st), "XSMIG_HOST_ID": "2"}
    env.pop("XSMIG_DEBUG", None)
    return env


def test_concurrent_restores_without_a_name_get_distinct_names(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "xsmig", "restore", "-i", str(stream)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(st))
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e.decode() for _o, e in outs]
    names = [o.decode().strip() for o, _e in outs]
    assert len(set(names)) == 4
    assert sorted(Store(st).names()) == sorted([*names, "g"])


def test_restore_whose_stdout_reader_is_gone_publishes_nothing(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "xsmig", "restore", "-i", str(stream)],
                              stdout=w, stderr=subprocess.PIPE, env=_env(st), timeout=60,
                              check=False)
    finally:
        os.close(w)
    assert proc.returncode == 5, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    assert Store(st).names() == ["g"]


@pytest.mark.parametrize("redirect, command, code, word", [
    (">&-", "restore -i {stream}", 5, "stdout is closed"),
    ("<&-", "restore", 5, "stdin is closed"),
    ("<&-", "inspect -", 5, "stdin is closed"),
    (">&-", "save g --encoding native", 5, "stdout is closed"),
    (">&-", "digest g", 5, "stdout is closed"),
    (">&-", "inspect {stream}", 5, "stdout is closed"),
])
def test_closed_descriptors_are_state_errors(tmp_path: Path, redirect: str, command: str,
                                             code: int, word: str) -> None:
    st, stream = _stream_file(tmp_path)
    line = f"{sys.executable} -m xsmig {command.format(stream=stream)} {redirect}"
    proc = subprocess.run(["sh", "-c", line], capture_output=True, env=_env(st), timeout=60,
                          check=False)
    assert word in assert_cli_error(proc, code)
    assert Store(st).names() == ["g"]


def test_deeply_nested_json_in_an_optional_block_is_ignored(store: Store,
                                                             sparse: DomainDir) -> None:
    data = save_bytes(sparse, Encoding.EXTENDED, AMD64)
    report = inspect_stream(io.BytesIO(data))
    wrtr = next(b for b in report["extended_info_section"] if b["id"] == "wrtr")
    nested = b"[" * 60000
    out = bytearray(data[:wrtr["offset"]])
    out += fmt.XBLOCK.pack(fmt.WRITER, fmt.XBLOCK_OPTIONAL, 0, len(nested)) + nested
    out += data[wrtr["offset"] + fmt.XBLOCK.size + wrtr["size"]:]
    assert inspect_stream(io.BytesIO(bytes(out)))["writer"] is None
    restored = restore_bytes(store, bytes(out), "nested")
    assert CanonicalDomain(restored).digest() == CanonicalDomain(sparse).digest()


def test_deeply_nested_dump_file_is_a_usage_error(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    dump = tmp_path / "dump.json"
    dump.write_text("[" * 100000)
    assert_cli_error(cli(st, "diff", "g", str(dump)), 2)


def test_stale_and_foreign_entries_in_incoming_are_harmless(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    incoming = st / "incoming"
    (incoming / "a.99999999999999999999999.x").mkdir()
    (incoming / "b.0.x").write_bytes(b"")
    (incoming / "c.4194305.dead").write_bytes(b"")
    (incoming / "d.\u0663.x").mkdir()  # a non-ASCII digit
    (incoming / "e.1.x").symlink_to("/")
    (incoming / "plain").write_bytes(b"")
    proc = cli(st, "restore", "-i", str(stream), "--name", "r", host_id=2)
    assert proc.returncode == 0, proc.stderr.decode()
    left = sorted(p.name for p in incoming.iterdir())
    assert "a.99999999999999999999999.x" not in left and "c.4194305.dead" not in left
    assert "plain" in left and "d.\u0663.x" in left
    assert Path("/").exists()  # the symlink was unlinked, never followed


def test_corrupt_meta_is_a_state_error_everywhere(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    meta = st / "domains" / "g" / "meta.json"
    for bad in ["[" * 100000, '{"format": 1}', json.dumps({"format": 1, "tsc": 3}), "\xff"]:
        meta.write_text(bad)
        for args in (["digest", "g"], ["save", "g", "--encoding", "native", "-o",
                                        str(tmp_path / "o.bin")], ["diff", "g", "g"]):
            assert_cli_error(cli(st, *args), 5)
        assert cli(st, "list").returncode == 0


# -- outputs that never clobber --


def test_save_writes_through_a_fifo(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = cli(st, "save", "g", "--encoding", "extended", "-o", str(fifo))
    reader.join(60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [stream.read_bytes()]


def test_save_to_dev_null_keeps_dev_null(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    before = os.lstat("/dev/null")
    assert cli(st, "save", "g", "--encoding", "native", "-o", "/dev/null").returncode == 0
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


def test_save_follows_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    assert cli(st, "save", "g", "--encoding", "extended", "-o", str(link)).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == stream.read_bytes()


def test_save_refuses_a_directory_before_writing(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    out = tmp_path / "outdir"
    out.mkdir()
    assert "directory" in assert_cli_error(cli(st, "save", "g", "--encoding", "native", "-o",
                                               str(out)), 2)
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bin", "outdir", "store"]


def _writes_into(pid: int, directory: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        targets = [os.readlink(fd) for fd in fds.iterdir()]
    except OSError:
        return False
    return any(t.startswith(f"{directory}/") for t in targets)


def test_a_killed_save_leaves_nothing_behind(tmp_path: Path) -> None:
    st = tmp_path / "store"
    assert cli(st, "create", "big", "--pages", "65536", "--vcpus", "1").returncode == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "big.bin"
    # What a save killed where O_TMPFILE is unsupported leaves: reaped by the next save.
    (out_dir / ".big.bin.xsmig-4194305.partial").write_bytes(b"x")
    # --rounds 20: a save long enough to be killed mid-way on a fast machine
    proc = subprocess.Popen([sys.executable, "-m", "xsmig", "save", "big", "--encoding",
                             "native", "--rounds", "20", "-o", str(out)], env=_env(st),
                            stderr=subprocess.PIPE)
    # Kill it mid-write, not after: once it holds an open file in out_dir (its unnamed
    # O_TMPFILE), the stale partial has been reaped and the output is being written.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not _writes_into(proc.pid,
                                                                                   out_dir):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the save ended before it could be killed"
    assert list(out_dir.iterdir()) == []
    assert cli(st, "save", "big", "--encoding", "native", "-o", str(out)).returncode == 0
    assert [p.name for p in out_dir.iterdir()] == ["big.bin"]


# -- bounded resources --


def test_idle_writer_ends_a_restore_and_publishes_nothing(tmp_path: Path) -> None:
    st, stream = _stream_file(tmp_path)
    data = stream.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "xsmig", "restore", "--idle-timeout", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(st))
    assert proc.stdin is not None
    proc.stdin.write(data[:len(data) // 2])
    proc.stdin.flush()
    try:
        proc.wait(30)  # the writer (us) keeps the pipe open and sends nothing more
    finally:
        proc.stdin.close()
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.returncode == 5, err
    assert b"--idle-timeout" in err and b"Traceback" not in err
    assert Store(st).names() == ["g"]
    assert list((st / "incoming").iterdir()) == []


def test_truncated_stream_declaring_a_huge_unmapped_list(sparse: DomainDir) -> None:
    """The list is read in chunks: the error names the truncation, no huge allocation."""
    data = save_bytes(sparse, Encoding.ESCAPED, AMD64)
    w = _where(data)
    out = bytearray(data)
    struct.pack_into("<I", out, w.unmapped_at, 128)  # as many as p2m_size allows
    with pytest.raises(StreamError) as e:
        inspect_stream(io.BytesIO(bytes(out[:w.unmapped_at + 4 + 8 * 3])))
    assert "truncated" in str(e.value) and e.value.offset == w.unmapped_at + 4 + 24


def test_state_errors_name_the_domain_or_path(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    line = assert_cli_error(cli(st, "save", "nope", "--encoding", "native"), 5)
    assert "nope" in line
    with pytest.raises(StateError):
        Store(st).get("nope")


def test_a_full_disk_is_a_state_error_naming_the_output(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    line = assert_cli_error(cli(st, "save", "g", "--encoding", "native", "-o", "/dev/full"), 5)
    assert "/dev/full" in line and "No space left" in line
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_idle_timeout_covers_a_fifo_nobody_opens(tmp_path: Path) -> None:
    st, _stream = _stream_file(tmp_path)
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    proc = cli(st, "restore", "-i", str(fifo), "--idle-timeout", "0.5")
    assert "--idle-timeout" in assert_cli_error(proc, 5)
    assert Store(st).names() == ["g"]


def test_save_copies_the_tmpfile_out_where_linking_it_fails(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Under an emulator whose /proc cannot link an O_TMPFILE, save still completes."""
    st, stream = _stream_file(tmp_path)
    from xsmig import cli as xcli

    def no_link(*args: object, **kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(xcli.os, "link", no_link)
    monkeypatch.setenv("XSMIG_STORE", str(st))
    out = tmp_path / "copied.bin"
    assert xcli.main(["save", "g", "--encoding", "extended", "-o", str(out)]) == 0
    assert out.read_bytes() == stream.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied.bin", "g.bin", "store"]


@pytest.mark.parametrize("dump", [
    {"format": "xsmig-dump-1"},
    {"format": "xsmig-dump-1", "metadata": {}, "types": "zz", "pages": {}, "vcpus": {},
     "shared_info": ""},
    {"format": "xsmig-dump-1", "metadata": [], "types": "", "pages": 3, "vcpus": {"x": 1},
     "shared_info": ""},
])
def test_a_malformed_dump_file_is_a_usage_error(tmp_path: Path, dump: dict[str, object]
                                                ) -> None:
    st, _stream = _stream_file(tmp_path)
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(dump))
    assert_cli_error(cli(st, "diff", "g", str(path)), 2)


@pytest.mark.parametrize("args", [
    ["--host-id", "-1", "restore"],
    ["--host-id", str(1 << 64), "restore"],
    ["restore", "--idle-timeout", "inf"],
    ["restore", "--idle-timeout", "nan"],
    ["inspect", "-", "--idle-timeout", "1e300"],
])
def test_out_of_range_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    assert_cli_error(cli(tmp_path / "store", *args, stdin=b""), 2)
