"""Doctor logic with a faked machine: checks, fix commands, and who may --fix."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import TestbedError
from testbed.images import doctor, prereqs
from testbed.images.arch import Arch, get_arch

ARM64 = Arch(
    name="arm64",
    debian_arch="arm64",
    qemu_binary="qemu-aarch64-static",
    uname_machine="aarch64",
    native_on=("aarch64",),
)


def test_binfmt_not_needed_for_x86_arches() -> None:
    check = prereqs.check_binfmt([get_arch("i386"), get_arch("amd64")], machine="x86_64")
    assert check.ok and "not needed" in check.detail


def test_binfmt_needed_for_a_foreign_arch(tmp_path: Path) -> None:
    root = _binfmt(tmp_path, {})
    check = prereqs.check_binfmt([ARM64], machine="x86_64", root=root, conf=tmp_path)
    assert not check.ok and "qemu-aarch64 not registered" in check.detail
    assert f"{root}/register" in check.fix and check.action == "binfmt"


def test_binfmt_registered_but_not_running_is_a_problem(tmp_path: Path) -> None:
    """Registration is not proof: arch-test must really run a foreign binary."""
    root = _binfmt(tmp_path, {"qemu-aarch64": ENABLED_F})
    check = prereqs.check_binfmt(
        [ARM64], machine="x86_64", root=root, conf=tmp_path,
        runs=lambda a: (False, f"{a.debian_arch}: not supported on this machine/kernel"),
    )
    assert not check.ok and "binary does not run" in check.detail
    assert "not supported" in check.detail and check.action == "binfmt"


def _binfmt(tmp_path: Path, entries: dict[str, str], mounted: bool = True) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir()
    if mounted:
        (root / "status").write_text("enabled\n")
        (root / "register").write_text("")
    for name, text in entries.items():
        (root / name).write_text(text)
    return root


ENABLED_F = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"


def test_binfmt_unmounted_is_reported_and_fixed_by_mount_and_register(tmp_path: Path) -> None:
    root = _binfmt(tmp_path, {}, mounted=False)
    check = prereqs.check_binfmt([ARM64], machine="x86_64", root=root, conf=tmp_path)
    assert not check.ok and "not mounted" in check.detail and check.action == "binfmt"
    assert f"mount -t binfmt_misc binfmt_misc {root}" in check.fix
    assert f"cat {tmp_path}/qemu-aarch64.conf > {root}/register" in check.fix


def test_binfmt_registered_enabled_with_f_flag_is_ok(tmp_path: Path) -> None:
    root = _binfmt(tmp_path, {"qemu-aarch64": ENABLED_F})
    check = prereqs.check_binfmt([ARM64], machine="x86_64", root=root, runs=lambda _a: (True, ""))
    assert check.ok and "arm64" in check.detail


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (None, "not registered"),
        ("disabled\nflags: POF\n", "disabled"),
        ("enabled\nflags: P\n", "registered without the F flag"),
    ],
)
def test_binfmt_entry_problems_name_the_entry(tmp_path: Path, entry: str | None,
                                              problem: str) -> None:
    root = _binfmt(tmp_path, {} if entry is None else {"qemu-aarch64": entry})
    (tmp_path / "qemu-aarch64.conf").write_text(":qemu-aarch64:M::x:y:/q:OPF\n")
    check = prereqs.check_binfmt([ARM64], machine="x86_64", root=root, conf=tmp_path)
    assert not check.ok and f"qemu-aarch64 {problem}" in check.detail
    assert f"echo -1 > {root}/qemu-aarch64" in check.fix  # a stale entry is replaced
    assert check.apt == ()  # the conf file is there: no package needed


def test_binfmt_fix_really_registers(tmp_path: Path) -> None:
    root = _binfmt(tmp_path, {})
    (tmp_path / "qemu-aarch64.conf").write_text(":qemu-aarch64:M::x:y:/q:OPF\n")
    check = prereqs.check_binfmt([ARM64], machine="x86_64", root=root, conf=tmp_path)
    fix = check.fix.replace("mountpoint -q", "true ||")  # tmp_path is no mount point
    assert doctor._run(["sh", "-c", fix]) == 0
    assert (root / "register").read_text() == ":qemu-aarch64:M::x:y:/q:OPF\n"


def test_mmdebstrap_missing_is_an_apt_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs.shutil, "which", lambda _name: None)
    check = prereqs.check_rootfs_builder()
    assert not check.ok and check.apt == ("mmdebstrap",) and check.action == "apt"


def test_disk_check_names_the_path(tmp_path: Path) -> None:
    assert prereqs.check_disk([tmp_path / "not" / "yet"], min_free_gib=0).ok
    short = prereqs.check_disk([tmp_path], min_free_gib=10**9)
    assert not short.ok and str(tmp_path) in short.detail and short.fix


def test_engine_check_gives_the_start_command() -> None:
    check = prereqs.check_engine(answers=lambda: False)
    assert not check.ok
    assert "dockerd" in check.fix and "/var/log/xsmig-dockerd.log" in check.fix


def test_qemu_check_fix_is_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.path.exists", lambda p: False)
    check = prereqs.check_qemu([get_arch("i386")])
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
    known = "amd64, arm64, armhf, i386, s390x"
    assert err.strip() == f"error: unknown architecture 'sparc'; known: {known}"


def test_arch_test_missing_is_named_for_mmdebstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fresh-machine failure: mmdebstrap of i386 on amd64 needs arch-test."""
    monkeypatch.setattr(prereqs.shutil, "which", lambda _name: None)
    monkeypatch.setattr(prereqs.os.path, "exists", lambda _p: False)
    check = prereqs.check_arch_test([get_arch("i386")], host_arch="amd64")
    assert not check.ok and check.apt == ("arch-test",) and "i386" in check.detail


def test_arch_test_not_needed_for_the_host_arch_alone() -> None:
    assert prereqs.check_arch_test([get_arch("amd64")], host_arch="amd64").ok


def test_arch_test_runs_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def answers(cmd: list[str]) -> tuple[bool, str]:
        calls.append(cmd)
        return True, "amd64: ok"

    monkeypatch.setattr(prereqs, "_tool", lambda name, *_: f"/usr/bin/{name}")
    monkeypatch.setattr(prereqs, "_answers", answers)
    assert prereqs.check_arch_test([get_arch("i386")], host_arch="amd64").ok
    assert calls == [["/usr/bin/arch-test", "amd64"]]


def test_build_problems_take_only_the_builders_rows(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    rows = []
    checked: list[str] = []

    def failing(name: str) -> Callable[[Any, Any], prereqs.Check]:
        def check(_a: Any, _c: Any) -> prereqs.Check:
            checked.append(name)
            return prereqs.Check(name, False, "x", "f", (name,), "apt")
        return check

    for p in prereqs.PREREQS:
        rows.append(prereqs.Prereq(p.name, p.needed_by, p.checked_by, p.packages,
                                   failing(p.name), p.build, p.builder))
    monkeypatch.setattr(prereqs, "PREREQS", tuple(rows))
    both = prereqs.build_problems([get_arch("i386")], tmp_path, ["mmdebstrap", "debootstrap"])
    # One pass: a row both builders need (qemu, binfmt, disk, ...) is asked once.
    assert len(checked) == len(set(checked)) and "mmdebstrap" in checked
    mm = {c.name for c in both["mmdebstrap"]}
    deb = {c.name for c in both["debootstrap"]}
    assert {"mmdebstrap", "arch-test"} <= mm and "debootstrap" not in mm
    assert "debootstrap" in deb and not {"mmdebstrap", "arch-test"} & deb
    assert "docker engine" not in mm and "python libraries" not in mm
    assert mm & deb  # the shared rows fail for both
    line = prereqs.describe_missing(
        prereqs.build_problems([get_arch("i386")], tmp_path, ["mmdebstrap"])["mmdebstrap"]
    )
    assert "arch-test: x" in line and "doctor --fix" in line and "\n" not in line


def test_docs_show_the_prerequisite_table() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "images.md").read_text()
    assert prereqs.table_markdown() in docs
