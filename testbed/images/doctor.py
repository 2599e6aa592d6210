"""``python -m testbed doctor [--fix]``: check (and, as root on Debian, fix) the host set-up.

The prerequisites are one table (``testbed.images.prereqs.PREREQS``): every check that fails
prints the exact command that fixes it; ``--fix`` runs those commands. A fresh Debian
machine needs nothing else before the matrix.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable

from testbed.errors import TestbedError
from testbed.images.arch import ARCHES, Arch, get_arch
from testbed.images.engine import ensure_engine
from testbed.images.prereqs import APT_PREFIX, Check
from testbed.images.prereqs import run_checks as _table_checks

HELP = "check the host set-up (Docker, QEMU, mmdebstrap, arch-test, disk, binfmt); --fix repairs it"


def run_checks(arches: list[Arch]) -> list[Check]:
    from testbed.images.images import cache_dir

    return _table_checks(arches, cache_dir())


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
