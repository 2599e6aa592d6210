"""The image pipeline's steps: debootstrap → rootfs tarball → base image → host layer.

No registry is involved: the base image is imported from a tarball, and the host
layer's Dockerfile starts FROM that local image and only COPYs files.
"""

from __future__ import annotations

import base64
import glob
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from testbed.errors import TestbedError
from testbed.images.arch import Arch
from testbed.images.engine import tail

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Removed from the rootfs before it is tarred: caches and docs make the import
# slower and the image bigger for nothing; host keys must never be shared by
# every container of an image (the entrypoint generates them at start).
STRIP = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "etc/ssh/ssh_host_*",
    "dev/*",
    "debootstrap",
)


class BuildError(TestbedError):
    """A build step failed: ``step`` names it, ``log`` holds its output, ``cause`` is
    the key of the likely cause in CAUSES ("" when the log matches none)."""

    def __init__(self, message: str, *, step: str = "", log: Path | None = None,
                 cause: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.log = log
        self.cause = cause


class Cause(NamedTuple):
    key: str
    says: str  # the likely cause, as the error states it ({mirror} filled in)
    fix: str  # the command (or action) that fixes it
    pattern: re.Pattern[str]  # what its tools print
    fallback_helps: bool  # would the other rootfs builder get past it?


# What a failed build's log says, most specific first: a failed step is reported once
# with the likely cause and its fix. Patterns are what apt, mmdebstrap, debootstrap,
# the kernel and Docker print.
CAUSES: tuple[Cause, ...] = (
    Cause(
        "disk-full",
        "disk full",
        "free space (docker image prune -a; rm -rf the image cache) or point "
        "XSMIG_IMAGE_CACHE at a bigger disk",
        re.compile(r"No space left on device|ENOSPC|not enough free space", re.I),
        False,
    ),
    Cause(
        "missing-tool",
        "a missing tool",
        "python3 -m testbed doctor --fix",
        re.compile(
            r"install arch-test|command not found|is not installed|"
            r"No such file or directory: '[^']*(?:strap|chroot|tar)'",
            re.I,
        ),
        True,
    ),
    Cause(
        "binfmt",
        "binfmt_misc cannot run this architecture's binaries (QEMU not registered)",
        "python3 -m testbed doctor --fix",
        re.compile(
            r"Exec format error|can neither be executed natively nor via qemu|"
            r"not supported on this machine",
            re.I,
        ),
        False,
    ),
    Cause(
        "mirror",
        "the Debian mirror {mirror} does not answer",
        "check that {mirror} serves bookworm (the host's apt sources name it), or set "
        "XSMIG_DEBIAN_MIRROR=URL to one that does",
        re.compile(
            r"Failed to fetch|Could not connect|Connection refused|Temporary failure resolving|"
            r"Could not resolve|Failed getting release file|Couldn't download|"
            r"Unable to connect|Connection timed out|No route to host|Network is unreachable|"
            r"Couldn't find these debs|Failed getting release signature",
            re.I,
        ),
        False,
    ),
)


def likely_cause(log_text: str) -> Cause | None:
    return next((c for c in CAUSES if c.pattern.search(log_text)), None)


def _read_log(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def step_failed(what: str, log: Path, detail: str = "", *, mirror: str = "") -> BuildError:
    """One error for a failed step: the step, its log, the likely cause and its fix,
    then the log's last lines."""
    extra = f" ({detail})" if detail else ""
    cause = likely_cause(_read_log(log))
    lines = [f"{what} failed{extra}", f"  log: {log}"]
    if cause is not None:
        where = mirror or "(the host's apt sources)"
        lines.append(f"  likely cause: {cause.says.format(mirror=where)}")
        lines.append(f"  fix: {cause.fix.format(mirror=where)}")
    else:
        lines.append("  likely cause: not recognised; read the log")
        lines.append("  fix: python3 -m testbed doctor, then rerun with the log's advice")
    lines.append(f"  --- last lines of {log.name} ---")
    lines += ["  " + ln for ln in tail(str(log), 8).splitlines()]
    return BuildError(
        "\n".join(lines), step=what, log=log, cause=cause.key if cause is not None else ""
    )


def debootstrap(
    arch: Arch,
    *,
    suite: str,
    variant: str,
    include: Iterable[str],
    mirror: str,
    rootfs: Path,
    debs: Path,
    log: Path,
) -> None:
    exe = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(exe):
        raise BuildError("debootstrap is not installed; fix: python3 -m testbed doctor --fix")
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root (it chroots and creates device nodes)")
    if rootfs.exists():
        shutil.rmtree(rootfs)  # left by an interrupted build
    rootfs.mkdir(parents=True)
    debs.mkdir(parents=True, exist_ok=True)
    log.write_text("")  # one log per base build
    cmd = [
        exe,
        "--foreign",  # stop after unpacking: the second stage runs below
        f"--variant={variant}",
        f"--arch={arch.debian_arch}",
        f"--include={','.join(include)}",
        f"--cache-dir={debs}",
    ]
    if os.path.exists(KEYRING):
        cmd.append(f"--keyring={KEYRING}")
    cmd += [suite, str(rootfs), mirror]
    _logged_run(cmd, log, f"debootstrap of {arch.name}", rootfs, mirror=mirror)
    # dpkg fsyncs every file it writes; a throwaway rootfs that is tarred right
    # after needs none of that (measured: about a quarter of the build time).
    unsafe = rootfs / "etc/dpkg/dpkg.cfg.d/xsmig-unsafe-io"
    unsafe.parent.mkdir(parents=True, exist_ok=True)
    unsafe.write_text("force-unsafe-io\n")
    second = ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"]
    _logged_run(second, log, f"debootstrap (second stage) of {arch.name}", rootfs, mirror=mirror)
    unsafe.unlink()


def mmdebstrap(
    arch: Arch,
    *,
    suite: str,
    variant: str,
    include: Iterable[str],
    mirror: str,
    tarball: Path,
    log: Path,
) -> dict[str, object]:
    """Build the root filesystem straight into ``tarball`` with mmdebstrap.

    Stripping happens in a customize hook, inside the build, so nothing is ever
    unpacked on the build machine; as root mmdebstrap chroots, otherwise its unshare
    mode lets a member of the docker group build without root. Returns the base info
    (packages, python path), read from the tarball.
    """
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise BuildError("mmdebstrap is not installed; fix: python3 -m testbed doctor --fix")
    log.write_text("")
    partial = tarball.with_suffix(".partial.tar")
    # /dev is mounted during hooks: left out of the tarball with output/dev instead.
    strip = " ".join(f'"$1"/{p}' for p in STRIP if p not in ("debootstrap", "dev/*"))
    cmd = [
        exe,
        f"--variant={variant}",
        f"--architectures={arch.debian_arch}",
        f"--include={','.join(include)}",
        "--mode=" + ("root" if os.geteuid() == 0 else "unshare"),
        "--format=tar",
        "--skip=output/dev",
        f"--customize-hook=rm -rf {strip}",
    ]
    if os.path.exists(KEYRING):
        cmd.append(f"--keyring={KEYRING}")
    cmd += [suite, str(partial), mirror]
    _logged_run(cmd, log, f"mmdebstrap of {arch.name}", Path("/nonexistent"), mirror=mirror)
    info = tar_info(partial)
    partial.rename(tarball)  # only complete tarballs ever count as cached
    return info


def tar_info(tarball: Path) -> dict[str, object]:
    """Packages and python path of a rootfs tarball, read without unpacking it."""
    status, python = "", "/usr/bin/python3"
    with tarfile.open(tarball) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name == "var/lib/dpkg/status":
                f = tar.extractfile(member)
                status = f.read().decode(errors="replace") if f else ""
            elif name == "usr/bin/python3" and member.issym():
                python = "/usr/bin/" + os.path.basename(member.linkname)
    return {"packages": parse_status(status), "python": python}


def _logged_run(cmd: list[str], log: Path, what: str, rootfs: Path, *, mirror: str = "") -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        inner = rootfs / "debootstrap" / "debootstrap.log"
        if inner.exists():
            with open(log, "a") as out:
                out.write(f"--- {inner} ---\n{tail(str(inner), 30)}\n")
        raise step_failed(what, log, f"exit {proc.returncode}", mirror=mirror)


def strip_rootfs(rootfs: Path) -> None:
    for pattern in STRIP:
        for path in glob.glob(str(rootfs / pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def installed_packages(rootfs: Path) -> dict[str, str]:
    """Package → version, read from the rootfs's dpkg status (no host dpkg needed)."""
    return parse_status((rootfs / "var/lib/dpkg/status").read_text(errors="replace"))


def parse_status(status: str) -> dict[str, str]:
    """Installed package → version, from a dpkg status file's text."""
    packages: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def python_path(rootfs: Path) -> str:
    """/usr/bin/python3.X: the interpreter the python3 symlink points at."""
    link = rootfs / "usr/bin/python3"
    target = os.readlink(link) if link.is_symlink() else "python3"
    return "/usr/bin/" + os.path.basename(target)


def make_tarball(rootfs: Path, tarball: Path, log: Path) -> None:
    partial = tarball.with_suffix(".partial")
    cmd = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."]
    with open(log, "a") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise step_failed("tar of the rootfs", log, f"exit {proc.returncode}")
    partial.rename(tarball)  # only complete tarballs ever count as cached


def import_base(
    client: Any, tarball: Path, repository: str, tag: str, base_info: dict[str, Any], log: Path
) -> None:
    # base64: the label goes through a Dockerfile-syntax "change", where JSON
    # quotes and spaces would need escaping.
    label = base64.b64encode(json.dumps(base_info, sort_keys=True).encode()).decode()
    changes = [
        f"LABEL xsmig.base={label}",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["/bin/sh"]',
    ]
    try:
        out = client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=changes
        )
    except Exception as exc:
        with open(log, "a") as f:
            f.write(f"import of {tarball} failed: {exc}\n")
        raise step_failed(f"docker import of {tarball.name}", log, str(exc)) from None
    with open(log, "a") as f:
        f.write(f"import: {str(out).strip()}\n")
    if '"error' in str(out):
        raise step_failed(f"docker import of {tarball.name}", log)


def read_base_info(image: Any) -> dict[str, Any]:
    label = (image.labels or {}).get("xsmig.base", "")
    try:
        info: dict[str, Any] = json.loads(base64.b64decode(label))
    except ValueError:
        return {}
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def layer_context(
    files: list[tuple[str, int, bytes]], generated: dict[str, tuple[int, bytes]]
) -> io.BytesIO:
    """An in-memory build context: images/ files plus generated overlay files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode, data in files:
            _add(tar, name, data, mode)
        for name, (mode, data) in generated.items():
            _add(tar, name, data, mode)
    buf.seek(0)
    return buf


def build_layer(
    client: Any,
    context: io.BytesIO,
    *,
    base: str,
    tag: str,
    labels: dict[str, str],
    log: Path,
) -> None:
    errors: list[str] = []
    with open(log, "w") as out:
        try:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                buildargs={"BASE": base},
                labels=labels,
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    out.write(chunk["stream"])
                if "error" in chunk:
                    errors.append(str(chunk["error"]))
                    out.write(f"ERROR: {chunk['error']}\n")
        except Exception as exc:
            errors.append(str(exc))
            out.write(f"ERROR: {exc}\n")
    if errors:
        raise step_failed(f"build of {tag}", log, errors[-1].strip())
