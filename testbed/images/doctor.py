"""``python -m testbed doctor [--fix]``: check (and, as root on Debian, fix) the host set-up.

Every check that fails prints the exact command that fixes it; ``--fix`` runs
those commands. A fresh Debian machine needs nothing else before the matrix.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.errors import TestbedError
from testbed.images.arch import ARCHES, Arch, get_arch
from testbed.images.engine import DOCKERD_LOG, START_COMMAND, engine_answers, ensure_engine

HELP = "check the host set-up (Docker, QEMU, mmdebstrap, disk, binfmt); --fix repairs it"

MIN_FREE_GIB = 3.0
PYTHON_LIBS = {"docker": "docker>=7.1", "rich": "rich>=13", "paramiko": "paramiko>=3.4"}
APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends"
APT_PREFIX = f"apt-get update && {APT_INSTALL}"
DOCKER_ROOT = Path("/var/lib/docker")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # the exact shell command that fixes it ("" when only a person can)
    apt: tuple[str, ...] = ()  # Debian packages that fix it
    action: str = ""  # what --fix does: "apt", "pip", "dockerd", "binfmt", or ""
    extra: dict[str, str] = field(default_factory=dict)


def _exists_any(*paths: str) -> str | None:
    for p in paths:
        if os.path.exists(p):
            return p
    return None


def check_python_libs() -> Check:
    missing = [spec for mod, spec in PYTHON_LIBS.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return Check("python libraries", True, ", ".join(PYTHON_LIBS) + " importable")
    cmd = f"{shlex.quote(sys.executable)} -m pip install " + " ".join(map(shlex.quote, missing))
    return Check("python libraries", False, "missing: " + ", ".join(missing), cmd, action="pip")


def check_debootstrap() -> Check:
    path = shutil.which("debootstrap") or _exists_any("/usr/sbin/debootstrap")
    if path:
        return Check("debootstrap", True, path)
    return Check(
        "debootstrap", False, "not installed", f"{APT_PREFIX} debootstrap", ("debootstrap",), "apt"
    )


def check_keyring() -> Check:
    path = "/usr/share/keyrings/debian-archive-keyring.gpg"
    if os.path.exists(path):
        return Check("debian keyring", True, path)
    pkg = ("debian-archive-keyring",)
    return Check("debian keyring", False, f"{path} missing", f"{APT_PREFIX} {pkg[0]}", pkg, "apt")


def check_qemu(arches: Iterable[Arch]) -> Check:
    missing = [f"/usr/bin/{a.qemu_binary}" for a in arches]
    missing = [p for p in missing if not os.path.exists(p)]
    if not missing:
        return Check("qemu-user-static", True, "present for every architecture")
    pkg = ("qemu-user-static",)
    return Check(
        "qemu-user-static",
        False,
        "missing: " + ", ".join(missing),
        f"{APT_PREFIX} {pkg[0]}",
        pkg,
        "apt",
    )


def check_engine(answers: Callable[[], bool] = engine_answers) -> Check:
    dockerd = shutil.which("dockerd") or _exists_any("/usr/bin/dockerd")
    if importlib.util.find_spec("docker") is None:
        return Check("docker engine", False, "cannot ask: the docker Python SDK is missing")
    if answers():
        return Check("docker engine", True, "answers")
    if dockerd is None:
        return Check(
            "docker engine",
            False,
            "dockerd not installed",
            f"{APT_PREFIX} docker.io && {START_COMMAND}",
            ("docker.io",),
            "dockerd",
        )
    return Check(
        "docker engine",
        False,
        f"no engine answers (log: {DOCKERD_LOG})",
        START_COMMAND,
        (),
        "dockerd",
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(paths: Iterable[Path], min_free_gib: float = MIN_FREE_GIB) -> Check:
    details, short = [], []
    for p in paths:
        where = _existing_parent(p)
        free = shutil.disk_usage(where).free / 2**30
        details.append(f"{p}: {free:.1f} GiB free")
        if free < min_free_gib:
            short.append(str(p))
    if not short:
        return Check("disk space", True, "; ".join(details))
    return Check(
        "disk space",
        False,
        f"under {min_free_gib:.0f} GiB free: " + "; ".join(details),
        "free space there (e.g. docker image prune -a; rm -rf the image cache), "
        "or point XSMIG_IMAGE_CACHE elsewhere",
    )


def binfmt_name(arch: Arch) -> str:
    return arch.binfmt_entry


BINFMT_ROOT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d")  # qemu-user-static's entries, one file each


def check_binfmt(
    arches: Iterable[Arch],
    machine: str | None = None,
    root: Path = BINFMT_ROOT,
    conf: Path = BINFMT_CONF,
) -> Check:
    """Only foreign architectures need it: their /bin/sh and sshd run through QEMU.

    binfmt_misc must be mounted, and each foreign architecture's QEMU entry registered,
    enabled and carrying the F flag (the kernel opens the interpreter at registration,
    so it also works inside containers, whose root has no QEMU)."""
    need = [a for a in arches if a.needs_binfmt(machine)]
    if not need:
        return Check("binfmt_misc", True, "not needed: every architecture runs natively here")
    problems: list[str] = []
    broken: list[str] = []
    if not (root / "status").exists():
        problems.append(f"binfmt_misc is not mounted at {root}")
        broken = [binfmt_name(a) for a in need]
    else:
        for a in need:
            name = binfmt_name(a)
            entry = _read(root / name)
            flags = next((ln.split(":", 1)[1] for ln in entry.splitlines()
                          if ln.startswith("flags:")), "")
            if not entry:
                problems.append(f"{name} not registered")
            elif not entry.startswith("enabled"):
                problems.append(f"{name} disabled")
            elif "F" not in flags:
                problems.append(f"{name} registered without the F flag (containers cannot use it)")
            else:
                continue
            broken.append(name)
    if not problems:
        return Check("binfmt_misc", True, "enabled for " + ", ".join(binfmt_name(a) for a in need))
    return Check(
        "binfmt_misc",
        False,
        "; ".join(problems),
        binfmt_fix(broken, root, conf),
        ("qemu-user-static",) if any(not (conf / f"{n}.conf").exists() for n in broken) else (),
        "binfmt",
    )


def binfmt_fix(names: Iterable[str], root: Path = BINFMT_ROOT, conf: Path = BINFMT_CONF) -> str:
    """Mount binfmt_misc, then (re)register each entry from qemu-user-static's own file."""
    steps = [f"(mountpoint -q {root} || mount -t binfmt_misc binfmt_misc {root})"]
    for name in names:
        entry = root / name
        steps.append(
            f"([ ! -e {entry} ] || echo -1 > {entry}) && cat {conf / (name + '.conf')} > "
            f"{root / 'register'}"
        )
    return " && ".join(steps)


def check_rootfs_builder() -> Check:
    """mmdebstrap builds the root filesystems (debootstrap is the fallback)."""
    path = shutil.which("mmdebstrap")
    if path:
        return Check("mmdebstrap", True, path)
    return Check(
        "mmdebstrap",
        False,
        "not installed (images fall back to the slower debootstrap)",
        f"{APT_PREFIX} mmdebstrap",
        ("mmdebstrap",),
        "apt",
    )


def check_mirror() -> Check:
    from testbed.images.images import SUITE
    from testbed.images.mirror import debian_mirror

    try:
        debian_mirror(SUITE)
    except TestbedError as exc:
        return Check("debian mirror", False, str(exc))
    # The URL itself is not printed: it belongs to the machine, not to logs.
    return Check("debian mirror", True, f"{SUITE} found in the host's apt sources")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def run_checks(arches: list[Arch]) -> list[Check]:
    from testbed.images.images import cache_dir

    return [
        check_python_libs(),
        check_engine(),
        check_qemu(arches),
        check_rootfs_builder(),
        check_debootstrap(),
        check_keyring(),
        check_mirror(),
        check_disk([cache_dir(), DOCKER_ROOT]),
        check_binfmt(arches),
    ]


def print_checks(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok' if c.ok else 'MISSING':<7}  {c.name:<{width}}  {c.detail}")
        if not c.ok:
            print(f"{'':<7}  {'':<{width}}  fix: {c.fix or '(see above)'}")
    packages = sorted({p for c in checks if not c.ok for p in c.apt})
    if len(packages) > 1:
        print(f"all packages at once: {APT_PREFIX} {' '.join(packages)}")


def apply_fixes(checks: list[Check], run: Callable[[list[str]], int] | None = None) -> list[str]:
    """Run the fixes of failed checks (root, Debian); return what could not be fixed."""
    run = run or _run
    failed = [c for c in checks if not c.ok]
    problems: list[str] = []
    pip = [c for c in failed if c.action == "pip"]
    for c in pip:
        if run(["sh", "-c", c.fix]) != 0:
            problems.append(f"{c.name}: {c.fix} failed")
    packages = sorted({p for c in failed for p in c.apt})
    if packages:
        if shutil.which("apt-get") is None:
            return [
                *problems,
                "apt-get not found: --fix only knows Debian; install " + ", ".join(packages),
            ]
        if run(["sh", "-c", f"{APT_PREFIX} {' '.join(packages)}"]) != 0:
            problems.append("apt-get install " + " ".join(packages) + " failed")
    if any(c.action == "dockerd" for c in failed):
        try:
            ensure_engine(start=True)
        except TestbedError as exc:
            problems.append(str(exc))
    for c in failed:
        if c.action == "binfmt" and run(["sh", "-c", c.fix]) != 0:
            problems.append(f"{c.name}: {c.fix} failed")
    return problems


def _run(cmd: list[str]) -> int:
    print("+ " + (cmd[2] if cmd[:2] == ["sh", "-c"] else shlex.join(cmd)), flush=True)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fix", action="store_true", help="apply the fixes (root, Debian)")
    parser.add_argument(
        "--arch",
        action="append",
        metavar="ARCH",
        help=f"architectures to check for (default: all of {', '.join(ARCHES)})",
    )


def run(args: argparse.Namespace) -> int:
    arches = [get_arch(a) for a in (args.arch or ARCHES)]
    checks = run_checks(arches)
    print_checks(checks)
    if all(c.ok for c in checks):
        print("doctor: all good")
        return 0
    if not args.fix:
        print(
            "doctor: problems found; fix them with the commands above, or run: "
            "python3 -m testbed doctor --fix (as root)"
        )
        return 1
    if os.geteuid() != 0:
        raise TestbedError(
            "doctor --fix needs root (apt-get, dockerd, binfmt); run it as root, "
            "e.g. sudo python3 -m testbed doctor --fix"
        )
    print("doctor: fixing ...", flush=True)
    problems = apply_fixes(checks)
    checks = run_checks(arches)
    print_checks(checks)
    for p in problems:
        print(f"doctor: {p}", file=sys.stderr)
    if all(c.ok for c in checks):
        print("doctor: all good")
        return 0
    print(
        "doctor: still missing: " + ", ".join(c.name for c in checks if not c.ok), file=sys.stderr
    )
    return 1
