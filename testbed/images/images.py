"""Host images: build (or reuse) one Docker image per architecture, and check hosts.

Public API: ``ensure_image``, ``BuiltImage``, ``check_host_report``.
CLI: ``python -m testbed build-images [--arch A]... [--rebuild] [-q]``.

Images are tagged ``xsmig-host-<arch>:<input hash>``; the hash covers everything a
build depends on (images/ files, the arch definition, the debootstrap suite,
variant and packages, the QEMU package version), so an image whose inputs did not
change is never rebuilt. The debootstrap result is cached twice: as a tarball in
the cache directory and as the base image ``xsmig-base-<arch>:<base hash>``.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.images import imagebuild
from testbed.images.arch import ARCHES, Arch, get_arch
from testbed.images.mirror import SUITE, debian_mirror
from testbed.images.prereqs import Check, build_problems, describe_missing
from testbed.images.progress import (
    PlainReporter,
    Reporter,
    RichReporter,
    SilentReporter,
    make_reporter,
)

HELP = "build (or reuse) the host images (i386, amd64, armhf, arm64, s390x)"

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
VARIANT = "minbase"
INCLUDE = ("python3", "openssh-server")
PYTHON_SERIES = "3.11"  # bookworm's python3
SCHEMA = 1  # bump to invalidate every cached image and tarball


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    arch: str
    manifest: dict[str, Any] = field(repr=False)
    cache_hit: bool


def cache_dir() -> Path:
    """Where rootfs tarballs, .deb downloads and build logs go (outside the checkout,
    so that every clone on a machine shares them)."""
    env = os.environ.get("XSMIG_IMAGE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/xsmig-images")
    return Path.home() / ".cache" / "xsmig-images"


def image_files() -> list[tuple[str, int, bytes]]:
    """(path relative to images/, mode, content) for every image definition file."""
    files = []
    for path in sorted(IMAGES_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
            files.append((path.relative_to(IMAGES_DIR).as_posix(), mode, path.read_bytes()))
    return files


def qemu_info(arch: Arch) -> dict[str, str]:
    binary = f"/usr/bin/{arch.qemu_binary}"
    if not os.path.exists(binary):
        raise TestbedError(
            f"{binary} is missing (package qemu-user-static); fix: python3 -m testbed doctor --fix"
        )
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    pkg = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "qemu-user-static"], capture_output=True, text=True
    )
    package_version = pkg.stdout.strip() if pkg.returncode == 0 else ""
    if not package_version:  # not a dpkg install: the binary's own bytes stand in
        package_version = "sha256:" + hashlib.sha256(Path(binary).read_bytes()).hexdigest()
    return {
        "binary": binary,
        "package_version": package_version,
        "version": version.splitlines()[0] if version else "",
    }


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def base_hash(arch: Arch) -> str:
    return _digest(
        {
            "schema": SCHEMA,
            "debian_arch": arch.debian_arch,
            "suite": SUITE,
            "variant": VARIANT,
            "include": INCLUDE,
            "strip": imagebuild.STRIP,
        }
    )


def input_hash(arch: Arch, qemu_package_version: str) -> str:
    files = [(name, mode, hashlib.sha256(data).hexdigest()) for name, mode, data in image_files()]
    return _digest(
        {
            "base": base_hash(arch),
            "files": files,
            "arch": arch.definition(),
            "qemu": qemu_package_version,
        }
    )


def base_tag(arch: Arch) -> str:
    return f"xsmig-base-{arch.name}:{base_hash(arch)}"


def _labels(image: Any) -> dict[str, str]:
    return dict(image.labels or {})


def _get_image(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One build per arch at a time, across processes (pytest and a CLI, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_base(client: Any, arch: Arch, rebuild: bool, reporter: Reporter) -> dict[str, Any]:
    """Make sure the base image exists; return its info (packages, python path)."""
    tag = base_tag(arch)
    bhash = base_hash(arch)
    image = None if rebuild else _get_image(client, tag)
    if image is not None:
        info = imagebuild.read_base_info(image)
        if info:
            reporter.note(arch.name, f"base image {tag} cached")
            return info
    cache = cache_dir()
    tarball = cache / f"rootfs-{arch.name}-{bhash}.tar"
    info_file = cache / f"rootfs-{arch.name}-{bhash}.json"
    log = cache / "logs" / f"{arch.name}-base.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if rebuild or not (tarball.exists() and info_file.exists()):
        _build_rootfs(arch, cache, tarball, info_file, log, reporter)
    else:
        reporter.note(arch.name, f"rootfs tarball cached: {tarball}")
    info = json.loads(info_file.read_text())
    with reporter.step(arch.name, f"import {tag}"):
        imagebuild.import_base(client, tarball, f"xsmig-base-{arch.name}", bhash, info, log)
    return dict(info)


def builder() -> str:
    """mmdebstrap when installed (faster: no unpacked rootfs, no separate tar step, and
    root-less in unshare mode), else debootstrap. XSMIG_ROOTFS_BUILDER forces one."""
    forced = os.environ.get("XSMIG_ROOTFS_BUILDER", "")
    if forced in ("mmdebstrap", "debootstrap"):
        return forced
    if forced:
        raise TestbedError(f"XSMIG_ROOTFS_BUILDER={forced!r}: use mmdebstrap or debootstrap")
    return "mmdebstrap" if shutil.which("mmdebstrap") else "debootstrap"


def _plan_builders(arch: Arch, cache: Path) -> list[str]:
    """The rootfs builders to try, in order, each with its prerequisites present
    (the one table, testbed.images.prereqs): mmdebstrap, then debootstrap as the fallback.
    None usable: one error naming what is missing and the command that fixes it."""
    first = builder()
    order = [first] if os.environ.get("XSMIG_ROOTFS_BUILDER") else [first, "debootstrap"]
    usable: list[tuple[str, list[Check]]] = []
    missing: list[tuple[str, list[Check]]] = []
    for name, problems in build_problems([arch], cache, list(dict.fromkeys(order))).items():
        (missing if problems else usable).append((name, problems))
    if not usable:
        seen: dict[str, Check] = {}
        for _name, problems in missing:
            for c in problems:
                seen.setdefault(c.name, c)
        raise imagebuild.BuildError(
            f"cannot build the {arch.name} image, prerequisites missing: "
            + describe_missing(list(seen.values())),
            step="prerequisites",
            cause="missing-tool",
        )
    return [name for name, _ in usable]


def _build_rootfs(
    arch: Arch, cache: Path, tarball: Path, info_file: Path, log: Path, reporter: Reporter
) -> None:
    """Build the rootfs tarball with the first builder that works. A failed mmdebstrap
    falls back to debootstrap (said in the progress) unless the cause is one that
    debootstrap would meet too (mirror, disk); then the first failure is the error."""
    builders = _plan_builders(arch, cache)
    if builders[0] != builder():
        reporter.note(
            arch.name,
            f"{builder()} cannot run here (python3 -m testbed doctor says why); "
            f"building with {builders[0]} instead",
        )
    mirror = debian_mirror(SUITE)
    for i, name in enumerate(builders):
        this_log = log if i == 0 else log.with_name(f"{arch.name}-base-{name}.log")
        try:
            if name == "mmdebstrap":
                _mmdebstrap(arch, mirror, tarball, info_file, this_log, reporter)
            else:
                _debootstrap(arch, cache, mirror, tarball, info_file, this_log, reporter)
            return
        except imagebuild.BuildError as exc:
            nxt = builders[i + 1] if i + 1 < len(builders) else None
            cause = next((c for c in imagebuild.CAUSES if c.key == exc.cause), None)
            if nxt is None or (cause is not None and not cause.fallback_helps):
                raise
            reporter.note(
                arch.name,
                f"{name} failed ({exc.step}; log: {exc.log}); falling back to {nxt}",
            )


def _mmdebstrap(
    arch: Arch, mirror: str, tarball: Path, info_file: Path, log: Path, reporter: Reporter
) -> None:
    with reporter.step(arch.name, f"mmdebstrap {SUITE} {VARIANT} ({arch.debian_arch})"):
        started = time.monotonic()
        info = imagebuild.mmdebstrap(
            arch, suite=SUITE, variant=VARIANT, include=INCLUDE, mirror=mirror,
            tarball=tarball, log=log,
        )
        info.update(built_at=_now(), builder="mmdebstrap",
                    build_seconds=round(time.monotonic() - started, 1))
        info_file.write_text(json.dumps(info, sort_keys=True))


def _debootstrap(
    arch: Arch, cache: Path, mirror: str, tarball: Path, info_file: Path, log: Path,
    reporter: Reporter,
) -> None:
    bhash = base_hash(arch)
    rootfs = cache / "work" / f"{arch.name}-{bhash}"
    started = time.monotonic()
    with reporter.step(arch.name, f"debootstrap {SUITE} {VARIANT} ({arch.debian_arch})"):
        imagebuild.debootstrap(
            arch, suite=SUITE, variant=VARIANT, include=INCLUDE, mirror=mirror,
            rootfs=rootfs, debs=cache / "debs" / arch.debian_arch, log=log,
        )
    with reporter.step(arch.name, "tar rootfs"):
        imagebuild.strip_rootfs(rootfs)
        info = {
            "packages": imagebuild.installed_packages(rootfs),
            "python": imagebuild.python_path(rootfs),
            "built_at": _now(),
            "builder": "debootstrap",
            "build_seconds": round(time.monotonic() - started, 1),
        }
        imagebuild.make_tarball(rootfs, tarball, log)
        info_file.write_text(json.dumps(info, sort_keys=True))
        shutil.rmtree(rootfs)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def _python_version(packages: Mapping[str, str], python: str) -> tuple[str, str]:
    name = os.path.basename(python)
    package_version = packages.get(name, "")
    upstream = package_version.split(":")[-1].split("-")[0]
    return upstream, package_version


def _build(client: Any, arch: Arch, rebuild: bool, reporter: Reporter) -> BuiltImage:
    qemu = qemu_info(arch)
    ihash = input_hash(arch, qemu["package_version"])
    tag = f"xsmig-host-{arch.name}:{ihash}"
    image = None if rebuild else _get_image(client, tag)
    if image is not None:
        cached: dict[str, Any] = json.loads(_labels(image).get("xsmig.manifest", "{}"))
        reporter.note(arch.name, f"{tag} is up to date (cache hit)")
        return BuiltImage(tag=tag, arch=arch.name, manifest=cached, cache_hit=True)

    base = _ensure_base(client, arch, rebuild, reporter)
    python_version, python_package = _python_version(base["packages"], base["python"])
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "arch": arch.name,
        "debian_arch": arch.debian_arch,
        "suite": SUITE,
        "variant": VARIANT,
        "include": list(INCLUDE),
        "input_hash": ihash,
        "base_hash": base_hash(arch),
        "built_at": _now(),
        "base_built_at": base.get("built_at", ""),
        "qemu": qemu,
        "python": {
            "executable": base["python"],
            "version": python_version,
            "package_version": python_package,
        },
        "packages": base["packages"],
    }
    image_env = (
        f"XSMIG_ARCH={arch.name}\n"
        f"XSMIG_QEMU={qemu['binary']}\n"
        f"XSMIG_PYTHON={base['python']}\n"
        f"XSMIG_SETARCH={arch.native_setarch or ''}\n"
        f"XSMIG_INPUT_HASH={ihash}\n"
    )
    generated = {
        f"overlay{qemu['binary']}": (0o755, Path(qemu["binary"]).read_bytes()),
        "overlay/etc/xsmig/image.env": (0o644, image_env.encode()),
        "overlay/etc/xsmig/manifest.json": (0o644, json.dumps(manifest, indent=1).encode()),
    }
    labels = {
        "xsmig.arch": arch.name,
        "xsmig.input-hash": ihash,
        "xsmig.manifest": json.dumps(manifest, sort_keys=True),
    }
    log = cache_dir() / "logs" / f"{arch.name}-layer.log"
    log.parent.mkdir(parents=True, exist_ok=True)  # the base image may be cached, the dir not
    with reporter.step(arch.name, f"build {tag}"):
        context = imagebuild.layer_context(image_files(), generated)
        imagebuild.build_layer(
            client, context, base=base_tag(arch), tag=tag, labels=labels, log=log
        )
        client.images.get(tag).tag(f"xsmig-host-{arch.name}", "latest")
    return BuiltImage(tag=tag, arch=arch.name, manifest=manifest, cache_hit=False)


def ensure_image(
    arch: str, *, rebuild: bool = False, quiet: bool = False, reporter: Reporter | None = None
) -> BuiltImage:
    """The host image for ``arch``, built only when its inputs changed (or ``rebuild``)."""
    from testbed.images.engine import docker_client

    spec = get_arch(arch)
    if reporter is None:
        reporter = SilentReporter() if quiet else PlainReporter()
    client = docker_client()
    try:
        with _lock(cache_dir() / "locks" / f"{spec.name}.lock"):
            return _build(client, spec, rebuild, reporter)
    except OSError as exc:  # a cache that cannot be written, say: one error, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        raise imagebuild.BuildError(
            f"the {spec.name} image could not be built: {exc.strerror or exc}{where}; "
            f"check the image cache {cache_dir()} (XSMIG_IMAGE_CACHE) and python3 -m testbed "
            "doctor",
            step=f"build of the {spec.name} image",
            cause="disk-full" if exc.errno == errno.ENOSPC else "",
        ) from None
    finally:
        client.close()


def ensure_images(
    arches: list[str], *, rebuild: bool = False, reporter: Reporter | None = None
) -> list[BuiltImage]:
    """Several images at once: debootstrap is download- and dpkg-bound, so parallel helps."""
    specs = [get_arch(a) for a in arches]  # unknown names fail before anything starts
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = [
            pool.submit(ensure_image, s.name, rebuild=rebuild, reporter=reporter) for s in specs
        ]
        return [f.result() for f in futures]


def check_host_report(
    arch: str | Arch, report: Mapping[str, Any], *, mode: str | None = None
) -> list[str]:
    """Problems with a host's report (``xsmig-host-report``); empty when it matches ``arch``.

    ``mode``: the mode the host was started in, when the caller wants it checked.
    """
    spec = arch if isinstance(arch, Arch) else get_arch(arch)
    problems: list[str] = []

    def expect(key: str, want: object) -> None:
        got = report.get(key)
        if got != want:
            problems.append(f"{key} is {got!r}, expected {want!r} for {spec.name}")

    expect("arch", spec.name)
    expect("machine", spec.uname_machine)
    expect("sizeof_long", spec.sizeof_long)
    expect("uint64_align", spec.uint64_align)
    expect("byte_order", spec.byte_order)
    one = (1).to_bytes(spec.sizeof_long, spec.byte_order)  # type: ignore[arg-type]
    expect("long_one_bytes", one.hex())
    pad = bytes(spec.uint64_align - 4)
    iq = (1).to_bytes(4, spec.byte_order) + pad + (2).to_bytes(8, spec.byte_order)  # type: ignore[arg-type]
    expect("struct_iq_bytes", iq.hex())
    version = str(report.get("python_version", ""))
    if not version.startswith(PYTHON_SERIES + "."):
        problems.append(f"python_version is {version!r}, expected {PYTHON_SERIES}.x")
    got_mode = report.get("mode")
    if got_mode not in ("qemu", "native"):
        problems.append(f"mode is {got_mode!r}, expected 'qemu' or 'native'")
    elif mode is not None and got_mode != mode:
        problems.append(f"mode is {got_mode!r}, but the host was started in mode {mode!r}")
    evidence = report.get("evidence") or {}
    qemu = f"/usr/bin/{spec.qemu_binary}"
    helper_exe = evidence.get("helper_exe", "")
    cmdline = evidence.get("helper_cmdline") or [""]
    if got_mode == "qemu":
        if helper_exe != qemu or cmdline[0] != qemu:
            problems.append(
                f"no evidence of QEMU: the interpreter's process runs {helper_exe!r} "
                f"({cmdline[0]!r}), expected {qemu}"
            )
    elif got_mode == "native" and "qemu" in helper_exe:
        problems.append(f"mode native, but the interpreter runs under {helper_exe!r}")
    return problems


# -- CLI -----------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        action="append",
        metavar="ARCH",
        help=f"architecture to build (repeatable; default: all of {', '.join(ARCHES)})",
    )
    parser.add_argument("--rebuild", action="store_true", help="ignore every cache and rebuild")
    parser.add_argument("-q", "--quiet", action="store_true", help="plain progress lines (CI logs)")


def run(args: argparse.Namespace) -> int:
    arches = args.arch or list(ARCHES)
    for name in arches:
        get_arch(name)
    reporter = make_reporter(args.quiet)
    start = time.monotonic()
    if isinstance(reporter, RichReporter):
        with reporter:
            images = ensure_images(arches, rebuild=args.rebuild, reporter=reporter)
    else:
        images = ensure_images(arches, rebuild=args.rebuild, reporter=reporter)
    for img in images:
        state = "cached" if img.cache_hit else "built"
        python = img.manifest.get("python", {}).get("version", "?")
        qemu = img.manifest.get("qemu", {}).get("package_version", "?")
        print(f"{img.tag}  {state}  python {python}  qemu-user-static {qemu}")
    print(f"images ready in {time.monotonic() - start:.1f}s")
    return 0
