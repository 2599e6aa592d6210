"""Releases: CHANGELOG.md names them, `xsmig --version --json` says what a tree can do,
and each release's declared capabilities agree with that release's own tables."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import xsmig
from testbed.hosts import releases
from testbed.hosts.sources import REPO
from xsmig.stream.format import DETECTION_RULES, V2_DEFAULT_FORMAT, Encoding, V2Format


def test_version_json_is_read_from_xsmigs_own_tables() -> None:
    out = subprocess.run([sys.executable, "-m", "xsmig", "--version", "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    doc = json.loads(out)
    assert doc["version"] == xsmig.__version__
    assert doc["encodings"] == [e.value for e in Encoding]
    assert doc["detection_rules"] == DETECTION_RULES
    assert {"save", "restore", "convert", "verify"} <= set(doc["commands"])
    assert doc["framings"] == [f.value for f in V2Format]
    assert doc["v2_writes"] == V2_DEFAULT_FORMAT.value and doc["legacy_xsave"] == "xen-buffer"
    plain = subprocess.run([sys.executable, "-m", "xsmig", "--version"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert plain == f"xsmig {xsmig.__version__}\n"


def test_every_rule_a_detection_names_is_in_the_table() -> None:
    names = set()
    for f in ("detect.py", "byteorder.py", "reader.py"):
        text = (REPO / "xsmig" / "stream" / f).read_text()
        names |= set(re.findall(r"rule\([\"']([LRB]\d?[LX]?)[\"']\)", text))
        # a row spelled out as a literal would escape `--version --json`: use rule(ID)
        assert not re.findall(r'(?<!"")f?"[LRB]\d?[LX]?: ', text), f"{f}: a row not from the table"
    assert names and names <= set(DETECTION_RULES)
    # B1 (the byte-order choice) decides no Detection of its own; every other row does
    assert set(DETECTION_RULES) - names == {"B1"}


def test_changelog_names_releases_and_the_tree_heads_for_the_unreleased_one() -> None:
    named = releases.releases()
    assert [r.name for r in named][:2] == ["0.2.0", "0.1.0"]
    assert releases.unreleased() == xsmig.__version__
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == xsmig.__version__
    assert releases.lookup("v0.1.0") == releases.lookup("0.1.0") == named[1]
    assert releases.lookup("main") is None  # a git ref, not a release


def _show(commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("release", releases.releases(), ids=lambda r: r.name)
def test_declared_capabilities_match_the_release_tree(release: releases.Release) -> None:
    """Re-derive a release's capabilities from its commit's own sources: the CHANGELOG
    block must not drift from what that release really had."""
    if release.declared is None:
        pytest.fail(f"{release.name} declares no capabilities")  # all releases so far predate it
    caps = release.declared
    fmt = _show(release.commit, "xsmig/stream/format.py")
    enum = fmt.split("class Encoding(StrEnum):", 1)[1].split("\n\n", 1)[0]
    assert caps.encodings == set(re.findall(r'= "([a-z0-9]+)"', enum))
    detect = _show(release.commit, "xsmig/stream/detect.py")
    rules = set(re.findall(r'"([LRB]\d?): ', detect)) | set(re.findall(r"\b(B\d): ", detect))
    with contextlib.suppress(subprocess.CalledProcessError):  # no byte-order module then
        rules |= set(re.findall(r'"(B\d): ', _show(release.commit, "xsmig/stream/byteorder.py")))
    assert caps.rules == rules
    cli = _show(release.commit, "xsmig/cli.py")
    assert caps.commands == set(re.findall(r'cmd\("([a-z-]+)"', cli))
    assert caps.version == release.name
    # before 0.3: the legacy xsave area alone, v2 only as the bare libxc stream
    assert "XSAVE_BUFFER_HDR" not in fmt and caps.legacy_xsave == "area"
    assert "V2Format" not in fmt
    assert caps.framings == ({"libxc"} if "v2" in caps.encodings else set())
    assert caps.v2_writes == ("libxc" if "v2" in caps.encodings else None)


def test_a_bad_changelog_block_is_one_clear_error(tmp_path: Path) -> None:
    sha = "0" * 40
    entry = f"## 9.9 — 2026-01-01, commit {sha}\n\n```json\n{{\n```\n"
    (tmp_path / "CHANGELOG.md").write_text(entry)
    with pytest.raises(releases.ReleaseError, match=r"9\.9: bad json block"):
        releases.releases(tmp_path)
    assert releases.parse_version_json("xsmig 0.1.0") is None
