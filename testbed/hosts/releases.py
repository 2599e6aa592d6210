"""Release names and what each release can do.

CHANGELOG.md is the source of truth for names (git tags may not travel): a heading
`## NAME — DATE, commit SHA` names a release, and a release that predates
`xsmig --version --json` declares its capabilities in a `json` block under it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

REPO = Path(__file__).resolve().parents[2]
HEADING = re.compile(
    r"^## (?P<name>\S+) — (?P<date>\d{4}-\d{2}-\d{2}), commit (?P<sha>[0-9a-f]{40})\s*$"
)
UNRELEASED = re.compile(r"^## Unreleased — (?P<name>\S+)\s*$")
JSON_BLOCK = re.compile(r"^```json\n(?P<body>.*?)^```", re.M | re.S)


class ReleaseError(TestbedError):
    pass


@dataclass(frozen=True)
class Capabilities:
    """What one xsmig can do, as `xsmig --version --json` says (or its CHANGELOG entry)."""

    version: str
    encodings: frozenset[str]
    framings: frozenset[str]
    rules: frozenset[str]
    commands: frozenset[str]
    source: str  # "--version --json", or "CHANGELOG.md (NAME)"
    v2_writes: str | None = None  # the v2 framing a save writes by default
    legacy_xsave: str | None = None  # "area" (before 0.3) or "xen-buffer"; None: unknown

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str) -> Capabilities:
        try:
            rules = doc["detection_rules"]
            return cls(
                str(doc["version"]),
                frozenset(doc["encodings"]),
                frozenset(doc.get("framings", ())),
                frozenset(rules),  # a dict (id -> text) or a list of ids
                frozenset(doc.get("commands", ())),
                source,
                doc.get("v2_writes"),
                doc.get("legacy_xsave"),
            )
        except (KeyError, TypeError) as e:
            raise ReleaseError(f"capabilities from {source} lack {e}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "encodings": sorted(self.encodings),
            "framings": sorted(self.framings),
            "detection_rules": sorted(self.rules),
            "commands": sorted(self.commands),
            "v2_writes": self.v2_writes,
            "legacy_xsave": self.legacy_xsave,
            "source": self.source,
        }


@dataclass(frozen=True)
class Release:
    name: str
    date: str
    commit: str
    declared: Capabilities | None  # only for releases that predate --version --json


def changelog(repo: Path = REPO) -> str:
    path = repo / "CHANGELOG.md"
    try:
        return path.read_text()
    except OSError as e:
        raise ReleaseError(f"cannot read {path}: {e.strerror}") from None


def releases(repo: Path = REPO) -> list[Release]:
    """Every named release, newest first, as CHANGELOG.md lists them."""
    text = changelog(repo)
    out: list[Release] = []
    sections = re.split(r"^(?=## )", text, flags=re.M)
    for section in sections:
        head = HEADING.match(section.splitlines()[0]) if section.startswith("## ") else None
        if head is None:
            continue
        block = JSON_BLOCK.search(section)
        declared = None
        if block:
            try:
                doc = json.loads(block["body"])
            except ValueError as e:
                raise ReleaseError(f"CHANGELOG.md, {head['name']}: bad json block: {e}") from None
            declared = Capabilities.from_json(doc, f"CHANGELOG.md ({head['name']})")
        out.append(Release(head["name"], head["date"], head["sha"], declared))
    return out


def unreleased(repo: Path = REPO) -> str | None:
    """The version the working tree is heading for (`## Unreleased — 0.3.0.dev0`)."""
    for line in changelog(repo).splitlines():
        m = UNRELEASED.match(line)
        if m:
            return m["name"]
    return None


def lookup(name: str, repo: Path = REPO) -> Release | None:
    """The release of that name (`0.1.0` or `v0.1.0`), or None: then it is a git ref."""
    if not (repo / "CHANGELOG.md").is_file():
        return None
    bare = name[1:] if name.startswith("v") and name[1:2].isdigit() else name
    for r in releases(repo):
        if r.name == bare:
            return r
    return None


def previous(repo: Path = REPO) -> Release:
    """The newest named release: what `qualify` compares against by default."""
    named = releases(repo)
    if not named:
        raise ReleaseError("CHANGELOG.md names no release")
    return named[0]


def declared_for(commit: str, repo: Path = REPO) -> Capabilities | None:
    """The CHANGELOG's declaration for the release at this commit, if it is one."""
    for r in releases(repo):
        if r.commit == commit:
            return r.declared
    return None


def parse_version_json(out: str, source: str = "--version --json") -> Capabilities | None:
    """`xsmig --version --json`'s answer, or None when the output is not that JSON
    (an old release prints its usage error or a plain `xsmig X.Y.Z`)."""
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "encodings" not in doc:
        return None
    return Capabilities.from_json(doc, source)
