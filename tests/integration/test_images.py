"""Real Docker, real debootstrap, real QEMU: build (or reuse) both host images,
start one emulated host of each, and check what they report."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
ARCHES = ("i386", "amd64")

# A stand-in xsmig package: proves the /opt/xsmig mount + `xsmig` wrapper run the
# host's interpreter under QEMU, whatever state the real package is in.
FAKE_MAIN = """\
import json, os, platform, struct, sys
print(json.dumps({
    "argv": sys.argv[1:],
    "machine": platform.machine(),
    "sizeof_long": struct.calcsize("L"),
    "store": os.environ.get("XSMIG_STORE"),
    "host_id": os.environ.get("XSMIG_HOST_ID"),
    "file": __file__,
}))
"""


HOST_IDS = {"i386": 71, "amd64": 72}


@dataclass
class Host:
    arch: str
    container: Any
    ssh: Any  # testbed.hosts.ssh.Host: pinned key, key-only login
    report: dict[str, Any]


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    from testbed.images.images import ensure_images
    from testbed.images.progress import PlainReporter

    return {img.arch: img for img in ensure_images(list(ARCHES), reporter=PlainReporter())}


@contextlib.contextmanager
def started(
    package: Path, arches: tuple[str, ...], mode: str = "qemu"
) -> Iterator[dict[str, Host]]:
    """Hosts started by the matrix's own stack (testbed.hosts.hosts): same labels, same removal."""
    from scenarios.hosts import HostSpec
    from testbed.hosts.hosts import fleet

    specs = {f"test-{a}": HostSpec(f"test-{a}", a, HOST_IDS[a]) for a in arches}
    with fleet(list(specs), mounts={n: package for n in specs}, mode=mode, specs=specs) as f:
        out: dict[str, Host] = {}
        for name, spec in specs.items():
            state = f.states[name]
            assert state.error is None, state.error
            out[spec.arch] = Host(
                spec.arch, state.container, f.host(name), json.loads(state.report)
            )
        yield out


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pkg = tmp_path_factory.mktemp("fake") / "xsmig"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    pkg.chmod(0o755)
    return pkg


@pytest.fixture(scope="module")
def hosts(built: dict[str, Any], fake_package: Path) -> Iterator[dict[str, Host]]:
    with started(fake_package, ARCHES) as h:
        yield h


def ssh(host: Host, command: str) -> str:
    r = host.ssh.run(["sh", "-c", command], timeout=120)
    assert r.ok, r.err
    return str(r.out)


EXPECTED = {"i386": ("i686", 4, 4), "amd64": ("x86_64", 8, 8)}


@pytest.mark.parametrize("arch", ARCHES)
def test_report_matches_arch_under_qemu(hosts: dict[str, Host], arch: str) -> None:
    from testbed.images.images import check_host_report

    r = hosts[arch].report
    assert (r["machine"], r["sizeof_long"], r["uint64_align"]) == EXPECTED[arch]
    assert r["mode"] == "qemu"
    assert r["python_version"].startswith("3.11.")
    qemu = "/usr/bin/qemu-i386-static" if arch == "i386" else "/usr/bin/qemu-x86_64-static"
    assert r["evidence"]["helper_exe"] == qemu
    assert r["evidence"]["helper_cmdline"][:2] == [qemu, "/usr/bin/python3.11"]
    # QEMU hides itself from the emulated process: only the outside view shows it.
    assert r["evidence"]["self_exe"] == "/usr/bin/python3.11"
    assert check_host_report(arch, r, mode="qemu") == []


def test_hosts_refuse_each_others_arch(hosts: dict[str, Host]) -> None:
    from testbed.images.images import check_host_report

    assert check_host_report("amd64", hosts["i386"].report)
    assert check_host_report("i386", hosts["amd64"].report)


@pytest.mark.parametrize("arch", ARCHES)
def test_ssh_session_runs_emulated_python(hosts: dict[str, Host], arch: str) -> None:
    host = hosts[arch]
    out = ssh(host, "command -v python3; xsmig-host-report").splitlines()
    assert out[0] == "/usr/local/bin/python3"
    assert json.loads(out[1]) == host.report


@pytest.mark.parametrize("arch", ARCHES)
def test_xsmig_wrapper_runs_mounted_package(hosts: dict[str, Host], arch: str) -> None:
    out = json.loads(ssh(hosts[arch], "xsmig hello --flag"))
    assert out["argv"] == ["hello", "--flag"]
    assert (out["machine"], out["sizeof_long"]) == EXPECTED[arch][:2]
    assert out["store"] == "/var/lib/xsmig"
    assert out["host_id"] == str(HOST_IDS[arch])
    assert out["file"] == "/opt/xsmig/xsmig/__main__.py"


def test_mount_is_read_only(hosts: dict[str, Host]) -> None:
    out = ssh(hosts["i386"], "touch /opt/xsmig/xsmig/x 2>&1 || echo refused")
    assert "refused" in out


def test_password_login_is_off(hosts: dict[str, Host]) -> None:
    out = ssh(hosts["amd64"], "sshd -T 2>/dev/null | grep -iE '^(passwordauth|permitroot)'")
    assert "passwordauthentication no" in out
    assert "permitrootlogin without-password" in out  # sshd's name for prohibit-password


def test_manifest_in_image_and_labels(built: dict[str, Any], hosts: dict[str, Host]) -> None:
    for arch in ARCHES:
        m = built[arch].manifest
        assert m["arch"] == arch
        assert m["python"]["version"].startswith("3.11.")
        assert m["qemu"]["package_version"]
        assert "openssh-server" in m["packages"] and "python3.11" in m["packages"]
        assert m["built_at"] and m["input_hash"] in built[arch].tag
        manifest = hosts[arch].ssh.get("/etc/xsmig/manifest.json")
        assert json.loads(manifest)["input_hash"] == m["input_hash"]


def test_real_xsmig_through_the_wrapper(built: dict[str, Any]) -> None:
    if not (REPO / "xsmig" / "__main__.py").exists():
        pytest.skip("the xsmig package is not in this checkout yet")
    with started(REPO / "xsmig", ("i386",)) as h:
        assert "usage" in ssh(h["i386"], "xsmig --help").lower()


def test_native_mode_reports_native(built: dict[str, Any], fake_package: Path) -> None:
    from testbed.images.images import check_host_report

    with started(fake_package, ("i386",), mode="native") as h:
        report = h["i386"].report
        assert report["mode"] == "native"
        assert report["machine"] == "i686"  # setarch, as a 32-bit kernel says
        assert report["evidence"]["helper_exe"] == "/usr/bin/python3.11"
        assert check_host_report("i386", report, mode="native") == []


def test_second_build_is_a_cache_hit(built: dict[str, Any]) -> None:
    from testbed.images.images import ensure_image

    for arch in ARCHES:
        again = ensure_image(arch, quiet=True)
        assert again.cache_hit
        assert again.tag == built[arch].tag
