"""The CLI contract scripts and the testbed rely on (docs/cli.md), through real processes."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from xsmig_helpers import REPO, assert_cli_error, cli

from xsmig.store import Store


@pytest.fixture
def st(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    created = cli(store, "create", "vm", "--pages", "128", "--guest-width", "32", "--vcpus",
                  "2", "--seed", "4")
    assert created.returncode == 0 and created.stdout == b"vm\n"
    return store


def out(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_save_restore_digest_diff(st: Path, tmp_path: Path) -> None:
    stream = tmp_path / "vm.bin"
    assert out(cli(st, "save", "vm", "--encoding", "extended", "-o", str(stream))) == ""
    assert out(cli(st, "restore", "-i", str(stream), "--name", "vm2", host_id=9)) == "vm2\n"
    first = out(cli(st, "digest", "vm")).splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert out(cli(st, "digest", "vm2")).splitlines()[0] == first
    assert "same canonical state" in out(cli(st, "diff", "vm", "vm2"))
    # a default name, counted up
    assert out(cli(st, "restore", "-i", str(stream))) == "restored-1\n"
    assert out(cli(st, "restore", "-i", str(stream))) == "restored-2\n"
    # an existing name is a state error
    assert_cli_error(cli(st, "restore", "-i", str(stream), "--name", "vm2"), 5)


def test_save_to_stdout_pipes_into_restore(st: Path) -> None:
    env_cmd = [sys.executable, "-m", "xsmig", "--store", str(st)]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    saver = subprocess.Popen([*env_cmd, "--host-id", "1", "save", "vm", "--encoding", "native",
                              "--toolstack", "i386"], stdout=subprocess.PIPE, env=env)
    restorer = subprocess.run([*env_cmd, "--host-id", "5", "restore", "--name", "piped"],
                              stdin=saver.stdout, capture_output=True, env=env, timeout=60,
                              check=False)
    assert saver.stdout is not None
    saver.stdout.close()
    assert saver.wait(timeout=60) == 0
    assert restorer.returncode == 0, restorer.stderr
    assert out(cli(st, "digest", "piped")) == out(cli(st, "digest", "vm"))


def test_digest_json_and_dump(st: Path, tmp_path: Path) -> None:
    summary = json.loads(out(cli(st, "digest", "vm", "--json")))
    assert summary["digest"] == out(cli(st, "digest", "vm")).splitlines()[0]
    assert (summary["name"], summary["guest_width"], summary["p2m_size"], summary["vcpus"]) == (
        "vm", 32, 128, 2)
    assert summary["memory_bytes"] == 128 * 4096
    assert sum(summary["pages"].values()) == 128 and summary["pages"]["plain"] > 100
    dump = tmp_path / "vm.dump"
    assert out(cli(st, "digest", "vm", "--dump", str(dump))).splitlines()[0] == summary["digest"]
    data = json.loads(dump.read_text())
    assert data["format"] == "xsmig-dump-1" and data["digest"] == summary["digest"]
    assert "same canonical state" in out(cli(st, "diff", "vm", str(dump)))


def test_diff_names_the_corrupted_pfn(st: Path, tmp_path: Path) -> None:
    stream = tmp_path / "vm.bin"
    out(cli(st, "save", "vm", "--encoding", "escaped", "-o", str(stream)))
    out(cli(st, "restore", "-i", str(stream), "--name", "copy", host_id=3))
    copy = Store(st).get("copy")
    pfn = 100
    assert copy.read_types()[pfn] == 0 and pfn not in copy.read_meta().p2m_frames
    with copy.open_memory("r+b") as mem:
        mem.seek(pfn * 4096 + 123)
        byte = mem.read(1)
        mem.seek(pfn * 4096 + 123)
        mem.write(bytes([byte[0] ^ 0x40]))
    diff = cli(st, "diff", "vm", "copy")
    assert diff.returncode == 1
    assert diff.stdout.decode().splitlines() == [f"pfn {pfn:#x}: contents differ"]
    assert diff.stderr == b""
    assert out(cli(st, "digest", "copy")) != out(cli(st, "digest", "vm"))


def test_diff_names_vcpu_fields(st: Path, tmp_path: Path) -> None:
    stream = tmp_path / "vm.bin"
    out(cli(st, "save", "vm", "--encoding", "native", "-o", str(stream)))
    out(cli(st, "restore", "-i", str(stream), "--name", "copy"))
    ctx = Store(st).get("copy").vcpu_path(1, "ctx")
    data = bytearray(ctx.read_bytes())
    struct.pack_into("<I", data, 548, 0xDEADBEEF)  # eip of a 32-bit guest
    ctx.write_bytes(bytes(data))
    lines = cli(st, "diff", "vm", "copy").stdout.decode().splitlines()
    assert any(line.startswith("vCPU 1 rip:") and str(0xDEADBEEF) in line for line in lines)


@pytest.mark.parametrize("encoding,width", [("native", 32), ("native", 64), ("escaped", 64),
                                            ("extended", 32)])
def test_inspect_json(st: Path, tmp_path: Path, encoding: str, width: int) -> None:
    stream = tmp_path / "vm.bin"
    toolstack = {32: "i386", 64: "amd64"}[width]
    out(cli(st, "save", "vm", "--encoding", encoding, "--toolstack", toolstack, "-o",
            str(stream)))
    report = json.loads(out(cli(st, "inspect", str(stream), "--json")))
    assert report["encoding"] == encoding
    assert report["word_size"] == (8 if encoding == "escaped" else width // 8)
    assert (report["p2m_size"], report["guest_width"], report["ext_info"]) == (128, 32, True)
    assert [b["id"] for b in report["ext_blocks"]] == ["vcpu", "extv", "xcnt"]
    assert report["bytes"] == stream.stat().st_size
    assert sum(report["pages_by_type"].values()) == 128
    assert len(report["tail"]["vcpus"]) == 2
    kinds = [c["kind"] for c in report["chunks"]]
    assert kinds[0] == "batch" and kinds[-4:] == ["vcpu_info", "tsc_info", "toolstack",
                                                  "last_checkpoint"]
    if encoding == "extended":
        assert report["stream_info"]["word_size"] == width // 8
        assert [b["id"] for b in report["extended_info_section"]] == ["sinf", "wrtr", "end "]
    text = out(cli(st, "inspect", "-", stdin=stream.read_bytes()))
    assert text.startswith(f"encoding      {encoding} (")


def test_list_and_destroy(st: Path) -> None:
    assert out(cli(st, "list")).split()[:2] == ["vm", "32-bit"]
    rows = json.loads(out(cli(st, "list", "--json")))
    assert rows == [{"name": "vm", "guest_width": 32, "pages": 128, "vcpus": 2}]
    assert out(cli(st, "destroy", "vm")) == ""
    assert out(cli(st, "list")) == ""
    assert_cli_error(cli(st, "destroy", "vm"), 5)
    assert_cli_error(cli(st, "digest", "vm"), 5)


def test_host_info_json(st: Path) -> None:
    info = json.loads(out(cli(st, "host-info", "--json")))
    assert info["ulong_size"] == struct.calcsize("@L")
    assert info["u64_align"] == struct.calcsize("@IQ") - 8
    assert info["byteorder"] == sys.byteorder


@pytest.mark.parametrize("args,code", [
    (["create", "x", "--pages", "3"], 2),
    (["create", "vm"], 5),  # name taken
    (["save", "vm", "--encoding", "bogus"], 2),
    (["save", "vm"], 2),  # --encoding is required
    (["save", "vm", "--encoding", "escaped", "--no-ext-info"], 2),
    (["save", "vm", "--encoding", "native", "--word-size", "4"], 2),
    (["save", "vm", "--encoding", "native", "--rounds", "0"], 2),
    (["save", "nosuch", "--encoding", "native"], 5),
    (["restore", "-i", "/nonexistent/file"], 2),
    (["restore", "--max-pages", "0"], 2),
    (["restore", "--profile", "legacy", "--source-width", "32"], 2),
    (["frobnicate"], 2),
    ([], 2),
])
def test_usage_and_state_errors(st: Path, args: list[str], code: int) -> None:
    assert_cli_error(cli(st, *args, stdin=b""), code)


def test_bad_max_pages_environment(st: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_MAX_PAGES": "lots"}
    proc = subprocess.run([sys.executable, "-m", "xsmig", "--store", str(st), "restore"],
                          input=b"", capture_output=True, env=env, check=False, timeout=60)
    assert "XSMIG_MAX_PAGES" in assert_cli_error(proc, 2)
