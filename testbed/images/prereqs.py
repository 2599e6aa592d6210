"""What the testbed needs on the build machine, as one table: each prerequisite, what
needs it, how it is checked (by asking the tool itself), and the package that fixes it.

``doctor`` runs the whole table (and ``--fix`` applies the fixes); the image builder
runs the rows its build path needs before it starts, so a missing tool is named once,
with its fix, instead of surfacing as a failed mmdebstrap three steps later.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.images.arch import Arch
from testbed.images.engine import DOCKERD_LOG, START_COMMAND, engine_answers

MIN_FREE_GIB = 3.0
PYTHON_LIBS = {"docker": "docker>=7.1", "rich": "rich>=13", "paramiko": "paramiko>=3.4"}
APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends"
APT_PREFIX = f"apt-get update && {APT_INSTALL}"
DOCTOR_FIX = "python3 -m testbed doctor --fix"
DOCKER_ROOT = Path("/var/lib/docker")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BINFMT_ROOT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d")  # qemu-user-static's entries, one file each


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # the exact shell command that fixes it ("" when only a person can)
    apt: tuple[str, ...] = ()  # Debian packages that fix it
    action: str = ""  # what --fix does: "apt", "pip", "dockerd", "binfmt", or ""
    extra: dict[str, str] = field(default_factory=dict)


def _apt_check(name: str, detail: str, *packages: str) -> Check:
    return Check(name, False, detail, f"{APT_PREFIX} {' '.join(packages)}", packages, "apt")


def _tool(name: str, *extra_paths: str) -> str | None:
    path = shutil.which(name)
    if path:
        return path
    return next((p for p in extra_paths if os.path.exists(p)), None)


def _answers(cmd: Sequence[str]) -> tuple[bool, str]:
    """Run a tool's own self-description; (it worked, its first output line)."""
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[0] if lines else f"exit {proc.returncode}"


def host_dpkg_arch() -> str:
    ok, out = _answers(["dpkg", "--print-architecture"])
    return out.strip() if ok else ""


# -- the checks -------------------------------------------------------------------


def check_python_libs() -> Check:
    missing = [spec for mod, spec in PYTHON_LIBS.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return Check("python libraries", True, ", ".join(PYTHON_LIBS) + " importable")
    cmd = f"{shlex.quote(sys.executable)} -m pip install " + " ".join(map(shlex.quote, missing))
    return Check("python libraries", False, "missing: " + ", ".join(missing), cmd, action="pip")


def check_engine(answers: Callable[[], bool] = engine_answers) -> Check:
    dockerd = _tool("dockerd", "/usr/bin/dockerd")
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
        "docker engine", False, f"no engine answers (log: {DOCKERD_LOG})", START_COMMAND, (),
        "dockerd",
    )


def check_qemu(arches: Iterable[Arch]) -> Check:
    """Every host's interpreter runs under QEMU: its static binary must run here."""
    missing, broken = [], []
    for a in arches:
        binary = f"/usr/bin/{a.qemu_binary}"
        if not os.path.exists(binary):
            missing.append(binary)
        elif not _answers([binary, "--version"])[0]:
            broken.append(binary)
    if not missing and not broken:
        return Check("qemu-user-static", True, "present and runs for every architecture")
    detail = "; ".join(
        part
        for part in (
            "missing: " + ", ".join(missing) if missing else "",
            "does not run: " + ", ".join(broken) if broken else "",
        )
        if part
    )
    return _apt_check("qemu-user-static", detail, "qemu-user-static")


def check_rootfs_builder() -> Check:
    """mmdebstrap builds the root filesystems; debootstrap is the fallback."""
    path = _tool("mmdebstrap")
    if path and _answers([path, "--version"])[0]:
        return Check("mmdebstrap", True, path)
    detail = "does not run" if path else "not installed"
    return _apt_check(
        "mmdebstrap", f"{detail} (images fall back to the slower debootstrap)", "mmdebstrap"
    )


def foreign_to_dpkg(arches: Iterable[Arch], host_arch: str | None = None) -> list[Arch]:
    """Architectures dpkg calls foreign here (mmdebstrap asks arch-test about those,
    even the ones the kernel runs natively, like i386 on amd64)."""
    host = host_dpkg_arch() if host_arch is None else host_arch
    return [a for a in arches if a.debian_arch != host]


def check_arch_test(arches: Iterable[Arch], host_arch: str | None = None) -> Check:
    """mmdebstrap refuses a foreign architecture without arch-test ("E: install
    arch-test for foreign architecture support"): the arch-test that runs here."""
    foreign = foreign_to_dpkg(arches, host_arch)
    if not foreign:
        return Check("arch-test", True, "not needed: no foreign architecture asked for")
    path = _tool("arch-test")
    if path is None:
        return _apt_check(
            "arch-test",
            "not installed (mmdebstrap needs it for " + ", ".join(a.name for a in foreign) + ")",
            "arch-test",
        )
    ok, out = _answers([path, host_arch or host_dpkg_arch() or "amd64"])
    if not ok:
        return _apt_check("arch-test", f"{path} does not run: {out}", "arch-test")
    return Check("arch-test", True, path)


def check_debootstrap() -> Check:
    path = _tool("debootstrap", "/usr/sbin/debootstrap")
    if path and _answers([path, "--version"])[0]:
        return Check("debootstrap", True, path)
    return _apt_check("debootstrap", "does not run" if path else "not installed", "debootstrap")


def check_keyring() -> Check:
    if os.path.exists(KEYRING):
        return Check("debian keyring", True, KEYRING)
    return _apt_check("debian keyring", f"{KEYRING} missing", "debian-archive-keyring")


def check_mirror() -> Check:
    from testbed.images.mirror import SUITE, MirrorError, debian_mirror

    try:
        debian_mirror(SUITE)
    except MirrorError as exc:
        return Check("debian mirror", False, str(exc))
    # The URL itself is not printed: it belongs to the machine, not to logs.
    return Check("debian mirror", True, f"{SUITE} found in the host's apt sources")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(paths: Iterable[Path], min_free_gib: float = MIN_FREE_GIB) -> Check:
    details, short = [], []
    for p in paths:
        free = shutil.disk_usage(_existing_parent(p)).free / 2**30
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


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def check_binfmt(
    arches: Iterable[Arch],
    machine: str | None = None,
    root: Path = BINFMT_ROOT,
    conf: Path = BINFMT_CONF,
    runs: Callable[[Arch], tuple[bool, str]] | None = None,
) -> Check:
    """Only foreign architectures need it: their /bin/sh and sshd run through QEMU.

    binfmt_misc must be mounted, and each foreign architecture's QEMU entry registered,
    enabled and carrying the F flag (the kernel opens the interpreter at registration,
    so it also works inside containers, whose root has no QEMU); then a foreign binary
    must really run (``arch-test ARCH`` executes one, where arch-test is installed)."""
    need = [a for a in arches if a.needs_binfmt(machine)]
    if not need:
        return Check("binfmt_misc", True, "not needed: every architecture runs natively here")
    if runs is None:
        runs = _arch_test_runs
    problems: list[str] = []
    broken: list[str] = []
    if not (root / "status").exists():
        problems.append(f"binfmt_misc is not mounted at {root}")
        broken = [binfmt_name(a) for a in need]
    else:
        for a in need:
            name = binfmt_name(a)
            entry = _read(root / name)
            flags = next(
                (ln.split(":", 1)[1] for ln in entry.splitlines() if ln.startswith("flags:")), ""
            )
            if not entry:
                problems.append(f"{name} not registered")
            elif not entry.startswith("enabled"):
                problems.append(f"{name} disabled")
            elif "F" not in flags:
                problems.append(f"{name} registered without the F flag (containers cannot use it)")
            else:
                ran, out = runs(a)
                if ran:
                    continue
                problems.append(f"{name} registered but a {a.name} binary does not run: {out}")
            broken.append(name)
    if not problems:
        return Check("binfmt_misc", True, "runs " + ", ".join(a.name for a in need) + " binaries")
    return Check(
        "binfmt_misc",
        False,
        "; ".join(problems),
        binfmt_fix(broken, root, conf),
        ("qemu-user-static",) if any(not (conf / f"{n}.conf").exists() for n in broken) else (),
        "binfmt",
    )


def _arch_test_runs(arch: Arch) -> tuple[bool, str]:
    """arch-test executes a tiny binary of ``arch``; without arch-test, registration
    (checked above) is all that can be known, and the arch-test row names the gap."""
    path = _tool("arch-test")
    if path is None:
        return True, "arch-test not installed"
    return _answers([path, arch.debian_arch])


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


# -- the table --------------------------------------------------------------------


@dataclass(frozen=True)
class Prereq:
    """One row: who needs it, how it is checked, what fixes it (for the docs and --help)."""

    name: str
    needed_by: str
    checked_by: str
    packages: tuple[str, ...]
    check: Callable[[Sequence[Arch], Path], Check]
    build: bool  # the image builder needs it (for a build that is not cached)
    builder: str = ""  # "" any build path; else only that rootfs builder's


PREREQS: tuple[Prereq, ...] = (
    Prereq("python libraries", "the runner", "import docker, rich, paramiko", (),
           lambda _a, _c: check_python_libs(), build=False),
    Prereq("docker engine", "images and hosts", "ping the engine", ("docker.io",),
           lambda _a, _c: check_engine(), build=False),
    Prereq("qemu-user-static", "every host's interpreter", "qemu-ARCH-static --version",
           ("qemu-user-static",), lambda a, _c: check_qemu(a), build=True),
    Prereq("mmdebstrap", "rootfs builds (debootstrap is the fallback)", "mmdebstrap --version",
           ("mmdebstrap",), lambda _a, _c: check_rootfs_builder(), build=True,
           builder="mmdebstrap"),
    Prereq("arch-test", "mmdebstrap, for every architecture dpkg calls foreign",
           "arch-test HOSTARCH", ("arch-test",), lambda a, _c: check_arch_test(a), build=True,
           builder="mmdebstrap"),
    Prereq("debootstrap", "rootfs builds without mmdebstrap, and the fallback",
           "debootstrap --version", ("debootstrap",), lambda _a, _c: check_debootstrap(),
           build=True, builder="debootstrap"),
    Prereq("debian keyring", "both rootfs builders", f"{KEYRING} exists",
           ("debian-archive-keyring",), lambda _a, _c: check_keyring(), build=True),
    Prereq("debian mirror", "both rootfs builders", "bookworm main in the apt sources", (),
           lambda _a, _c: check_mirror(), build=True),
    Prereq("disk space", "rootfs tarballs and images", f">= {MIN_FREE_GIB:.0f} GiB free", (),
           lambda _a, c: check_disk([c, DOCKER_ROOT]), build=True),
    Prereq("binfmt_misc", "images of architectures the CPU cannot run",
           "entry registered with F, and arch-test ARCH runs a binary", ("qemu-user-static",),
           lambda a, _c: check_binfmt(a), build=True),
)


def run_checks(arches: Sequence[Arch], cache: Path) -> list[Check]:
    """Every row of the table (doctor)."""
    return [p.check(arches, cache) for p in PREREQS]


def build_problems(arches: Sequence[Arch], cache: Path, builders: Sequence[str]
                   ) -> dict[str, list[Check]]:
    """For each of ``builders``, the failed rows a rootfs build of ``arches`` with it
    needs. One pass: a row shared by the builders is checked once."""
    wanted = [p for p in PREREQS if p.build and (not p.builder or p.builder in builders)]
    checked = {p.name: p.check(arches, cache) for p in wanted}
    return {b: [checked[p.name] for p in wanted
                if p.builder in ("", b) and not checked[p.name].ok] for b in builders}


def describe_missing(checks: Sequence[Check]) -> str:
    """One sentence naming what is missing and the one command that fixes it all."""
    names = "; ".join(f"{c.name}: {c.detail}" for c in checks)
    packages = sorted({p for c in checks for p in c.apt})
    direct = f" (or: {APT_PREFIX} {' '.join(packages)})" if packages else ""
    return f"{names}; fix: {DOCTOR_FIX}{direct}"


def table_markdown() -> str:
    """The table as docs/images.md shows it (a unit test keeps the two in step)."""
    rows = [
        "| prerequisite | needed by | checked by | package |",
        "|---|---|---|---|",
    ]
    for p in PREREQS:
        rows.append(
            f"| {p.name} | {p.needed_by} | `{p.checked_by}` | "
            f"{', '.join(p.packages) or '-'} |"
        )
    return "\n".join(rows)
