"""Doctor logic with a faked machine: checks, fix commands, and who may --fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from testbed import doctor
from testbed.arch import Arch, get_arch
from testbed.errors import TestbedError

ARM64 = Arch(
    name="arm64",
    debian_arch="arm64",
    qemu_binary="qemu-aarch64-static",
    uname_machine="aarch64",
    sizeof_long=8,
    uint64_align=8,
    native_on=("aarch64",),
)


def test_binfmt_not_needed_for_x86_arches() -> None:
    check = doctor.check_binfmt([get_arch("i386"), get_arch("amd64")], machine="x86_64")
    assert check.ok and "not needed" in check.detail


def test_binfmt_needed_for_a_foreign_arch() -> None:
    check = doctor.check_binfmt([ARM64], machine="x86_64")
    if not check.ok:  # unless this machine really has qemu-aarch64 registered
        assert "qemu-aarch64" in check.detail
        assert "update-binfmts --enable" in check.fix
        assert check.action == "binfmt"


def test_disk_check_names_the_path(tmp_path: Path) -> None:
    assert doctor.check_disk([tmp_path / "not" / "yet"], min_free_gib=0).ok
    short = doctor.check_disk([tmp_path], min_free_gib=10**9)
    assert not short.ok and str(tmp_path) in short.detail and short.fix


def test_engine_check_gives_the_start_command() -> None:
    check = doctor.check_engine(answers=lambda: False)
    assert not check.ok
    assert "dockerd" in check.fix and "/var/log/xsmig-dockerd.log" in check.fix


def test_qemu_check_fix_is_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.path.exists", lambda p: False)
    check = doctor.check_qemu([get_arch("i386")])
    assert not check.ok and "/usr/bin/qemu-i386-static" in check.detail
    assert check.fix.startswith("apt-get update && ")
    assert check.apt == ("qemu-user-static",)


def test_apply_fixes_installs_all_packages_in_one_apt_call() -> None:
    ran: list[str] = []
    checks = [
        doctor.Check("a", False, "", "", ("qemu-user-static",), "apt"),
        doctor.Check("b", False, "", "", ("debootstrap",), "apt"),
        doctor.Check("c", True, "", "", ("never",), "apt"),
    ]

    def run(cmd: list[str]) -> int:
        ran.append(cmd[-1])
        return 0

    problems = doctor.apply_fixes(checks, run=run)
    assert problems == []
    assert len(ran) == 1
    assert ran[0].startswith("apt-get update && ")
    assert ran[0].endswith("--no-install-recommends debootstrap qemu-user-static")


def test_fix_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "run_checks", lambda arches: [doctor.Check("x", False, "d", "f")])
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="needs root"):
        doctor.run(argparse.Namespace(fix=True, arch=None))


def test_report_without_fix_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = doctor.Check("debootstrap", False, "not installed", "apt-get ... debootstrap")
    monkeypatch.setattr(doctor, "run_checks", lambda arches: [missing])
    assert doctor.run(argparse.Namespace(fix=False, arch=None)) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "fix: apt-get ... debootstrap" in out


def test_cli_unknown_arch_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.__main__ import main

    assert main(["build-images", "--arch", "sparc"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown architecture 'sparc'; known: amd64, i386"
