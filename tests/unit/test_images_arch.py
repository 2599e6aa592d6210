"""Architecture table, host reports and start-log parsing: no engine needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from testbed.hosts.hosts import parse_start_log
from testbed.images.arch import ARCHES, UnknownArchError, get_arch, parse_arches
from testbed.images.images import check_host_report


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
        "byte_order": spec.byte_order,
        "long_one_bytes": (1).to_bytes(spec.sizeof_long, spec.byte_order).hex(),  # type: ignore[arg-type]
        "struct_iq_bytes": {
            "i386": "010000000200000000000000",
            "amd64": "01000000000000000200000000000000",
            "armhf": "01000000000000000200000000000000",
            "arm64": "01000000000000000200000000000000",
            "s390x": "00000001000000000000000000000002",
        }[arch],
        "python_version": "3.11.2",
        "evidence": {
            "helper_exe": exe,
            "helper_cmdline": [exe, "/usr/bin/python3.11", "x.py"][: 3 if mode == "qemu" else 2],
            "self_exe": "/usr/bin/python3.11",
        },
    }


# Facts of Debian's ABIs, written out here (not read from xsmig.layout): machine,
# sizeof(long), alignof(uint64) in a struct, byte order, QEMU binary, binfmt entry.
FACTS = {
    "i386": ("i686", 4, 4, "little", "qemu-i386-static", "qemu-i386"),
    "amd64": ("x86_64", 8, 8, "little", "qemu-x86_64-static", "qemu-x86_64"),
    "armhf": ("armv7l", 4, 8, "little", "qemu-arm-static", "qemu-arm"),
    "arm64": ("aarch64", 8, 8, "little", "qemu-aarch64-static", "qemu-aarch64"),
    "s390x": ("s390x", 8, 8, "big", "qemu-s390x-static", "qemu-s390x"),
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_known_arches(name: str) -> None:
    assert set(ARCHES) == set(FACTS)
    a = get_arch(name)
    assert (a.uname_machine, a.sizeof_long, a.uint64_align, a.byte_order, a.qemu_binary,
            a.binfmt_entry) == FACTS[name]
    assert a.definition()["byte_order"] == FACTS[name][3]  # part of the image input hash


def test_arches_parse_all_and_lists() -> None:
    assert parse_arches("all") == ["i386", "amd64", "armhf", "arm64", "s390x"]
    assert parse_arches("s390x,amd64") == ["amd64", "s390x"]  # table order, not given order
    with pytest.raises(UnknownArchError):
        parse_arches("amd64,sparc")


def test_unknown_arch_lists_known_ones() -> None:
    with pytest.raises(UnknownArchError, match=r"'sparc'.*amd64, arm64, armhf, i386, s390x"):
        get_arch("sparc")


def test_binfmt_only_for_foreign_arches() -> None:
    assert not get_arch("i386").needs_binfmt("x86_64")
    assert not get_arch("amd64").needs_binfmt("x86_64")
    assert get_arch("amd64").needs_binfmt("aarch64")


@pytest.mark.parametrize("arch", ["i386", "amd64"])
@pytest.mark.parametrize("mode", ["qemu", "native"])
def test_matching_report_has_no_problems(arch: str, mode: str) -> None:
    assert check_host_report(arch, report(arch, mode), mode=mode) == []


@pytest.mark.parametrize("arch", ["armhf", "arm64", "s390x"])
def test_foreign_reports_prove_word_alignment_and_byte_order(arch: str) -> None:
    assert check_host_report(arch, report(arch), mode="qemu") == []
    # An arm64 interpreter reporting as armhf: word size, alignment bytes differ.
    wrong = report(arch)
    wrong["struct_iq_bytes"] = report("i386")["struct_iq_bytes"]
    assert any("struct_iq_bytes" in p for p in check_host_report(arch, wrong))


def test_s390x_report_must_be_big_endian() -> None:
    little = report("s390x")
    little["byte_order"] = "little"
    little["long_one_bytes"] = "0100000000000000"
    problems = check_host_report("s390x", little)
    assert any("byte_order is 'little', expected 'big'" in p for p in problems)
    assert any("long_one_bytes" in p for p in problems)


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
