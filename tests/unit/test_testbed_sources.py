"""--xsmig-ref: host specs and git exports, including the current HEAD."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.hosts.sources import (
    REPO,
    RefError,
    check_refs,
    export_ref,
    parse_refs,
    resolve_sources,
)


def test_specs_name_a_host_an_arch_or_all() -> None:
    assert parse_refs(["i386-a=v1"]) == {"i386-a": "v1"}
    # An architecture names all its hosts, the fault cells' own hosts included.
    amd64 = {"amd64-a", "amd64-b", "amd64-fault-a", "amd64-fault-b"}
    assert parse_refs(["amd64=v1"]) == dict.fromkeys(amd64, "v1")
    # two hosts for each of the five arches, two fault hosts for each nightly arch
    assert len(parse_refs(["all=v1"])) == 14
    assert parse_refs(["all=v1", "i386-b=v2"])["i386-b"] == "v2"  # later specs win


@pytest.mark.parametrize("spec", ["i386", "=v1", "i386=", "sparc=v1"])
def test_bad_specs_are_errors(spec: str) -> None:
    with pytest.raises(RefError):
        parse_refs([spec])


def test_head_exports_the_committed_package(tmp_path: Path) -> None:
    package = export_ref("HEAD", tmp_path)
    assert (package / "__init__.py").is_file() and package.name == "xsmig"
    assert export_ref("HEAD", tmp_path) == package  # the same commit twice: one export


def test_unknown_ref_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RefError, match=r"neither a release of CHANGELOG\.md nor a commit"):
        export_ref("no-such-ref-xyz", tmp_path)


def test_a_release_name_is_a_ref(tmp_path: Path) -> None:
    from testbed.hosts.releases import lookup

    release = lookup("0.1.0")
    assert release is not None and lookup("v0.1.0") == release
    package = export_ref("v0.1.0", tmp_path)
    assert package.parent.name == release.commit
    # 0.1.0 predates v2: its format table has three encodings
    assert '"v2"' not in (package / "stream" / "format.py").read_text()


def test_hosts_without_a_ref_mount_the_working_tree(tmp_path: Path) -> None:
    mounts, labels = resolve_sources({"i386-a": "HEAD"}, ["i386-a", "amd64-b"], tmp_path)
    assert mounts["amd64-b"] == REPO / "xsmig" and labels["amd64-b"] == "worktree"
    assert mounts["i386-a"].is_relative_to(tmp_path) and labels["i386-a"] == "HEAD"


def test_check_refs_rejects_a_bad_ref_before_any_host_starts() -> None:
    check_refs({"i386-a": "HEAD"})
    with pytest.raises(RefError, match="nope-xyz"):
        check_refs({"i386-a": "nope-xyz"})
