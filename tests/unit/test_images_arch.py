"""Architecture table, host reports and start-log parsing: no engine needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from testbed.arch import ARCHES, UnknownArchError, get_arch
from testbed.hosts import parse_start_log
from testbed.images import check_host_report


def report(arch: str, mode: str = "qemu") -> dict[str, Any]:
    spec = get_arch(arch)
    qemu = f"/usr/bin/{spec.qemu_binary}"
    exe = qemu if mode == "qemu" else "/usr/bin/python3.11"
    return {
        "arch": arch,
        "mode": mode,
        "machine": spec.uname_machine,
        "uname_machine": spec.uname_machine,
        "sizeof_long": spec.sizeof_long,
        "uint64_align": spec.uint64_align,
        "python_version": "3.11.2",
        "evidence": {
            "helper_exe": exe,
            "helper_cmdline": [exe, "/usr/bin/python3.11", "x.py"][: 3 if mode == "qemu" else 2],
            "self_exe": "/usr/bin/python3.11",
        },
    }


def test_known_arches() -> None:
    assert set(ARCHES) == {"i386", "amd64"}
    i386, amd64 = get_arch("i386"), get_arch("amd64")
    assert (i386.uname_machine, i386.sizeof_long, i386.uint64_align) == ("i686", 4, 4)
    assert (amd64.uname_machine, amd64.sizeof_long, amd64.uint64_align) == ("x86_64", 8, 8)
    assert i386.qemu_binary == "qemu-i386-static"
    assert amd64.qemu_binary == "qemu-x86_64-static"


def test_unknown_arch_lists_known_ones() -> None:
    with pytest.raises(UnknownArchError, match=r"'sparc'.*amd64, i386"):
        get_arch("sparc")


def test_binfmt_only_for_foreign_arches() -> None:
    assert not get_arch("i386").needs_binfmt("x86_64")
    assert not get_arch("amd64").needs_binfmt("x86_64")
    assert get_arch("amd64").needs_binfmt("aarch64")


@pytest.mark.parametrize("arch", ["i386", "amd64"])
@pytest.mark.parametrize("mode", ["qemu", "native"])
def test_matching_report_has_no_problems(arch: str, mode: str) -> None:
    assert check_host_report(arch, report(arch, mode), mode=mode) == []


def test_report_of_another_arch_is_refused() -> None:
    problems = check_host_report("amd64", report("i386"))
    assert any("sizeof_long" in p for p in problems)
    assert any("machine" in p for p in problems)
    assert any("arch" in p for p in problems)


def test_i386_interpreter_without_qemu_is_refused() -> None:
    # An i386 binary run directly on an x86_64 kernel says x86_64, and no QEMU.
    bad = report("i386", "native")
    bad["machine"] = "x86_64"
    bad["mode"] = "qemu"
    problems = check_host_report("i386", bad)
    assert any("machine" in p for p in problems)
    assert any("no evidence of QEMU" in p for p in problems)


def test_mode_mismatch_and_garbage_are_refused() -> None:
    assert check_host_report("i386", report("i386", "native"), mode="qemu")
    assert check_host_report("i386", {})
    wrong_python = copy.deepcopy(report("i386"))
    wrong_python["python_version"] = "3.9.2"
    assert check_host_report("i386", wrong_python) == ["python_version is '3.9.2', expected 3.11.x"]


def test_parse_start_log() -> None:
    log = "\n".join(
        [
            "xsmig-host: HOSTKEY ssh-ed25519 AAAAC3Nz",
            'xsmig-host: REPORT {"arch": "i386"}',
            "noise from sshd",
            "xsmig-host: READY arch=i386 mode=qemu host_id=h1",
        ]
    )
    parsed = parse_start_log(log)
    assert parsed.ready == 1 and not parsed.fatal
    assert parsed.host_keys == [("ssh-ed25519", "AAAAC3Nz")]
    assert parsed.report == '{"arch": "i386"}'
    assert parse_start_log(log + "\n" + log).ready == 2  # a restarted host logs READY again
    assert parse_start_log("xsmig-host: FATAL no key").fatal == "no key"
    assert parse_start_log("xsmig-host: REPORT-FAILED boom").report_error == "boom"
