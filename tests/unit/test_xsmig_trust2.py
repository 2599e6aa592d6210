"""Issue 16, targeted cases: the store never reaches outside itself, system errors are
one exit status naming the path, convert and verify have restore's bounds and
deadlines, v2 frame-list errors blame the entry."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from v2_spec import P2M_FRAMES, split
from xsmig_helpers import REPO, Guest, assert_cli_error, cli, make, restore_bytes, save_bytes

from xsmig import cli as xcli
from xsmig.errors import StreamError
from xsmig.layout import AMD64
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.verify import MAX_WARNINGS, verify_stream

# -- the store --


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory outside the store, holding files shaped like write-aside entries of
    dead processes (what the reaper would remove inside incoming/)."""
    out = tmp_path / "outside"
    out.mkdir()
    files = {"victim.999999999.dead": b"keep me", "other.4194999.abcd": b"me too"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "d.999999998.tree").mkdir()
    (out / "d.999999998.tree" / "f").write_bytes(b"and me")
    return out, files


def _untouched(out: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert (out / "d.999999998.tree" / "f").read_bytes() == b"and me"


@pytest.mark.parametrize("sub", ["incoming", "domains"])
def test_a_symlinked_store_directory_is_refused_and_never_followed(tmp_path: Path,
                                                                     sub: str) -> None:
    out, files = _outside(tmp_path)
    root = tmp_path / "store"
    root.mkdir()
    (root / ("domains" if sub == "incoming" else "incoming")).mkdir()
    (root / sub).symlink_to(out)
    for args in (["create", "g", "--pages", "64"], ["restore", "--name", "r"],
                 ["destroy", "victim.999999999.dead"]):
        proc = cli(root, *args, stdin=b"")
        assert proc.returncode in (2, 5), (args, proc.stderr)
        assert "Traceback" not in proc.stderr.decode()
    proc = cli(root, "create", "g", "--pages", "64")
    assert "symlink" in assert_cli_error(proc, 5)
    _untouched(out, files)


def test_a_symlinked_domain_is_no_domain(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    g = make(store, "g", Guest(pages=64))
    elsewhere = tmp_path / "elsewhere"
    os.rename(g.path, elsewhere)
    (store.domains / "g").symlink_to(elsewhere)
    assert store.names() == []
    for args in (["digest", "g"], ["destroy", "g"], ["save", "g", "--encoding", "v2"]):
        assert "no domain named 'g'" in assert_cli_error(cli(store.root, *args), 5)
    assert (elsewhere / "meta.json").is_file()  # destroy followed nothing


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "symlink-to-own-file"])
@pytest.mark.parametrize("part", ["meta.json", "types.bin", "memory.bin",
                                  "shared_info.bin", "vcpus/0.ctx"])
def test_domain_files_are_read_only_when_regular(tmp_path: Path, part: str,
                                                  target: str) -> None:
    """A domain file replaced by a device, a FIFO (nobody writes: reading it would
    hang) or a symlink (even to a file of the right size): every command that reads the
    domain refuses it (exit 5, names the domain or file), at once."""
    store = Store(tmp_path / "store")
    g = make(store, "g", Guest(pages=64))
    path = g.path / part
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    path.unlink()
    if target == "fifo":
        os.mkfifo(path)
    elif target == "/dev/zero":
        path.symlink_to("/dev/zero")
    else:
        path.symlink_to(copy)
    for args in (["digest", "g"], ["save", "g", "--encoding", "native", "-o",
                                  str(tmp_path / "s.bin")], ["diff", "g", "g"]):
        started = time.monotonic()
        proc = cli(store.root, *args)
        assert time.monotonic() - started < 30
        line = assert_cli_error(proc, 5)
        assert "'g'" in line or "domains/g" in line, line
    listed = cli(store.root, "list")  # lists the store without reading through it
    assert listed.returncode == 0 and listed.stderr == b""


def test_create_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = cli(tmp_path / "store", "create", "huge", "--pages", str(0x0FFFFFFF))
    assert "--max-pages" in assert_cli_error(proc, 2)
    proc = cli(tmp_path / "store", "create", "huge", "--pages", str(1 << 20), "--max-pages",
               str(1 << 20))  # 4 GiB: accepted by the cap, so it must fit the disk
    st = os.statvfs(tmp_path)
    if st.f_bavail * st.f_frsize < (1 << 32):
        assert "free" in assert_cli_error(proc, 5)
    else:
        assert proc.returncode == 0
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "store" / "incoming").iterdir())


# -- system errors: exit 5, naming the path --


@pytest.fixture(scope="module")
def v2_stream(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    store = Store(tmp_path_factory.mktemp("v2"))
    return save_bytes(make(store, "g", Guest(pages=64, vcpus=2)), Encoding.V2, AMD64)


def test_system_errors_writing_an_output_are_exit_5_naming_it(tmp_path: Path,
                                                               v2_stream: bytes) -> None:
    src = tmp_path / "in.v2"
    src.write_bytes(v2_stream)
    full = cli(tmp_path, "convert", "-i", str(src), "-o", "/dev/full", "--to", "native")
    assert "/dev/full" in assert_cli_error(full, 5)
    denied = cli(tmp_path, "convert", "-i", str(src), "-o", "/sys/x.bin", "--to", "native")
    assert "/sys/x.bin" in assert_cli_error(denied, 5)
    denied_in = cli(tmp_path, "verify", "/proc/self/mem")
    assert "/proc/self/mem" in assert_cli_error(denied_in, 5)
    missing = cli(tmp_path, "verify", str(tmp_path / "nothing"))
    assert_cli_error(missing, 2)


def test_a_read_only_filesystem_is_exit_5_as_a_full_one(
        tmp_path: Path, v2_stream: bytes, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """EROFS (faked: no read-only mount here) where save -o and convert -o create their
    aside file: the same exit 5 and the path, as ENOSPC."""
    real_open = os.open

    def read_only(path: object, flags: int, *args: object, **kw: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR) and str(path).startswith(str(tmp_path / "out")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    src = tmp_path / "in.v2"
    src.write_bytes(v2_stream)
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    code = xcli.main(["convert", "-i", str(src), "-o", str(tmp_path / "out" / "x"), "--to",
                      "extended"])
    err = capsys.readouterr().err
    assert code == 5 and str(tmp_path / "out" / "x") in err and "Read-only" in err, err


def test_convert_with_stdout_closed_is_a_state_error(tmp_path: Path,
                                                     v2_stream: bytes) -> None:
    src = tmp_path / "in.v2"
    src.write_bytes(v2_stream)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(tmp_path)}
    for args in (["convert", "-i", str(src), "--to", "native"],
                 ["verify", "--json", str(src)]):
        proc = subprocess.run([sys.executable, "-m", "xsmig", *args], stdout=None,
                              stderr=subprocess.PIPE, env=env, timeout=60, check=False,
                              close_fds=True, preexec_fn=lambda: os.close(1))
        assert proc.returncode == 5, proc.stderr
        assert proc.stderr.decode().strip() == "xsmig: error: stdout is closed"


# -- convert and verify: deadlines and bounds --


@pytest.mark.parametrize("command", [["verify", "-"], ["convert", "--to", "v2"],
                                     ["inspect", "-"]])
def test_idle_input_ends_verify_and_convert(tmp_path: Path, v2_stream: bytes,
                                            command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "xsmig", *command, "--idle-timeout", "1",
                             "-o" if command[0] == "convert" else "--json",
                             *([str(tmp_path / "out")] if command[0] == "convert" else [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    proc.stdin.write(v2_stream[:5000])
    proc.stdin.flush()
    try:
        proc.wait(timeout=30)  # stdin stays open: the writer stalls
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.returncode == 5 and b"--idle-timeout" in err, err
    assert not (tmp_path / "out").exists()


def test_verify_keeps_the_first_warnings_and_a_count(v2_stream: bytes) -> None:
    """4 MiB of empty optional records: memory does not follow the warning count."""
    s = split(v2_stream)
    flood = [(0x80000123, b"")] * 20_000
    s.records[2:2] = flood
    verdict = verify_stream(io.BytesIO(s.to_bytes()))
    assert verdict["valid"], verdict.get("error")
    assert len(verdict["warnings"]) == MAX_WARNINGS
    assert verdict["warnings_total"] == 20_000


def test_v2_frame_list_errors_blame_the_entry(tmp_path: Path) -> None:
    """A p2m frame list naming a pfn twice: restore refuses it at that entry's byte, not
    at byte 8, and verify says the same."""
    store = Store(tmp_path / "g")
    g = make(store, "g", Guest(pages=1100, width=64, vcpus=1))  # 3 frames
    s = split(save_bytes(g, Encoding.V2, AMD64))
    i = s.index(P2M_FRAMES)
    body = bytearray(s.records[i][1])
    body[8 + 16:8 + 24] = body[8:16]  # entry 2 repeats entry 0
    s.records[i] = (P2M_FRAMES, bytes(body))
    data = s.to_bytes()
    at = s.offsets[i] + 8 + 8 + 16
    with pytest.raises(StreamError) as e:
        restore_bytes(Store(tmp_path / "r"), data, "r")
    assert e.value.offset == at and "repeats" in str(e.value)
    verdict = verify_stream(io.BytesIO(data))
    assert not verdict["valid"] and verdict["error"]["offset"] == at


def test_verify_and_restore_share_the_page_cap(tmp_path: Path, v2_stream: bytes) -> None:
    src = tmp_path / "in.v2"
    src.write_bytes(v2_stream)
    for args in (["restore", "-i", str(src)], ["verify", str(src)],
                 ["convert", "-i", str(src), "--to", "native", "-o", str(tmp_path / "o")]):
        proc = cli(tmp_path / "s", *args, "--max-pages", "32")
        assert "--max-pages" in assert_cli_error(proc, 4), args
    assert not (tmp_path / "o").exists()


def test_a_domain_dir_is_the_only_state_verify_leaves(tmp_path: Path, v2_stream: bytes,
                                                      monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert verify_stream(io.BytesIO(v2_stream))["valid"]
    assert not verify_stream(io.BytesIO(v2_stream[:-100]))["valid"]
    assert list(tmp_path.iterdir()) == []



def test_verify_and_restore_give_one_verdict_on_the_command_line(tmp_path: Path,
                                                                 v2_stream: bytes) -> None:
    """The same exit status and the same error text (verify prefixes "invalid stream:"),
    options included: a truncation, an MSR record (spec-valid, refused by restore), the
    legacy profile, a cap."""
    s = split(v2_stream)
    s.records.insert(-2, (0x0C, bytes(8) + bytes(16)))  # X86_PV_VCPU_MSRS
    cases = {"valid": (v2_stream, []), "cut": (v2_stream[:-100], []),
             "msrs": (s.to_bytes(), []), "legacy profile": (v2_stream, ["--profile", "legacy"]),
             "cap": (v2_stream, ["--max-pages", "63"])}
    for name, (data, opts) in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        restored = cli(tmp_path / "s", "restore", "-i", str(path), "--name", "x", *opts)
        verified = cli(tmp_path / "s", "verify", str(path), *opts)
        cli(tmp_path / "s", "destroy", "x")
        assert restored.returncode == verified.returncode, (name, restored.stderr,
                                                             verified.stderr)
        if restored.returncode:
            r = assert_cli_error(restored, restored.returncode)
            v = assert_cli_error(verified, verified.returncode)
            assert v == r.replace("xsmig: error: ", "xsmig: error: invalid stream: "), name
