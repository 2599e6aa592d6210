"""The Debian mirror to debootstrap from, read from the host's apt sources at run time.

Policy: no mirror host name is ever written into the repository. The host's own
apt configuration (one-line ``.list`` or deb822 ``.sources``) names the mirror it
can reach; ``XSMIG_DEBIAN_MIRROR`` overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError

APT_ETC = Path("/etc/apt")
SUITE = "bookworm"  # the Debian release every host image is built from


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


class MirrorError(TestbedError):
    pass


def parse_one_line(text: str) -> list[Source]:
    out: list[Source] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            out.append(Source(words[0], (words[1],), tuple(words[2:])))
    return out


def parse_deb822(text: str) -> list[Source]:
    out: list[Source] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:  # continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        out.extend(Source(uri, suites, components) for uri in fields.get("uris", "").split())
    return out


def host_sources(apt_etc: Path = APT_ETC) -> list[Source]:
    sources: list[Source] = []
    main_list = apt_etc / "sources.list"
    if main_list.is_file():
        sources += parse_one_line(main_list.read_text(errors="replace"))
    parts = apt_etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                sources += parse_deb822(path.read_text(errors="replace"))
    return sources


def _is_base_suite(suite: str) -> bool:
    return "/" not in suite and not suite.endswith(("-security", "-updates", "-backports"))


def pick_mirror(sources: list[Source], suite: str) -> str | None:
    """The URI of a Debian archive carrying ``suite``'s main component.

    Prefer a source that lists the suite itself; otherwise any source of a plain
    (non-security, non-updates) suite with ``main``: a Debian mirror of another
    release still carries ours.
    """
    candidates = [s for s in sources if "main" in s.components and s.uri.startswith("http")]
    for s in candidates:
        if suite in s.suites:
            return s.uri.rstrip("/")
    for s in candidates:
        if any(_is_base_suite(x) for x in s.suites) and "security" not in s.uri:
            return s.uri.rstrip("/")
    return None


def debian_mirror(suite: str, apt_etc: Path = APT_ETC) -> str:
    override = os.environ.get("XSMIG_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    uri = pick_mirror(host_sources(apt_etc), suite)
    if uri is None:
        raise MirrorError(
            f"no Debian mirror with {suite} main found in {apt_etc}/sources.list or "
            f"{apt_etc}/sources.list.d/*.sources; add one there, or set XSMIG_DEBIAN_MIRROR=URL"
        )
    return uri
