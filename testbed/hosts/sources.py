"""Which xsmig source each host runs: the working tree, or an exported git ref.

Release qualification mounts an older (or newer) xsmig on some hosts, so an
old saver meets a new restorer and back.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from scenarios.hosts import HOSTS
from testbed.errors import TestbedError

REPO = Path(__file__).resolve().parents[2]


class RefError(TestbedError):
    pass


def parse_refs(specs: Iterable[str]) -> dict[str, str]:
    """`HOSTSPEC=GITREF` items -> {host name: ref}. HOSTSPEC: a host, an arch, or `all`."""
    out: dict[str, str] = {}
    for spec in specs:
        target, sep, ref = spec.partition("=")
        if not sep or not target or not ref:
            raise RefError(f"--xsmig-ref wants HOSTSPEC=RELEASE|GITREF, got {spec!r}")
        hosts = _match_hosts(target)
        if not hosts:
            names = ", ".join([h.name for h in HOSTS] + sorted({h.arch for h in HOSTS}) + ["all"])
            raise RefError(f"--xsmig-ref: no host matches {target!r}; use one of: {names}")
        for h in hosts:
            out[h] = ref
    return out


def _match_hosts(target: str) -> list[str]:
    return [h.name for h in HOSTS if target in ("all", "*", h.name, h.arch)]


def resolve_ref(ref: str, repo: Path = REPO) -> str:
    """The commit a release name (CHANGELOG.md) or a git ref names; an error (before
    any host starts) when it names none."""
    from testbed.hosts.releases import lookup

    release = lookup(ref, repo)
    if release is not None:
        ref = release.commit
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if rev.returncode != 0:
        raise RefError(f"--xsmig-ref: {ref!r} is neither a release of CHANGELOG.md nor a "
                       f"commit of {repo}")
    return rev.stdout.strip()


def check_refs(refs: dict[str, str]) -> None:
    for ref in set(refs.values()):
        resolve_ref(ref)


def export_ref(ref: str, dest_root: Path, repo: Path = REPO) -> Path:
    """`git archive REF xsmig` unpacked under dest_root; returns the package directory."""
    sha = resolve_ref(ref, repo)
    target = dest_root / sha
    package = target / "xsmig"
    if package.is_dir():  # the same ref named twice (e.g. HEAD and main)
        return package
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", sha, "xsmig"],
        capture_output=True,
    )
    if archive.returncode != 0:
        msg = archive.stderr.decode(errors="replace").strip()
        raise RefError(f"--xsmig-ref: git archive {ref} failed: {msg}")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    if not package.is_dir():
        raise RefError(f"--xsmig-ref: {ref} has no xsmig/ package")
    return package


def resolve_sources(
    refs: dict[str, str], hosts: Sequence[str], workdir: Path | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Package directory to mount per host, and a label per host (`worktree` or the ref)."""
    mounts: dict[str, Path] = {}
    labels: dict[str, str] = {}
    root = workdir or Path(tempfile.mkdtemp(prefix="xsmig-refs-"))
    for h in hosts:
        ref = refs.get(h)
        if ref is None:
            mounts[h] = REPO / "xsmig"
            labels[h] = "worktree"
        else:
            mounts[h] = export_ref(ref, root)
            labels[h] = ref
    return mounts, labels
