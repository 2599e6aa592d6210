"""Input hashing and mirror discovery: what decides whether an image is rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed.images import images
from testbed.images.arch import get_arch
from testbed.images.mirror import (
    MirrorError,
    debian_mirror,
    parse_deb822,
    parse_one_line,
    pick_mirror,
)


@pytest.fixture
def image_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "images"
    shutil.copytree(images.IMAGES_DIR, copy)
    monkeypatch.setattr(images, "IMAGES_DIR", copy)
    return copy


def test_hash_is_stable_and_per_arch(image_dir: Path) -> None:
    i386, amd64 = get_arch("i386"), get_arch("amd64")
    assert images.input_hash(i386, "1:7.2") == images.input_hash(i386, "1:7.2")
    assert images.input_hash(i386, "1:7.2") != images.input_hash(amd64, "1:7.2")
    assert images.base_hash(i386) != images.base_hash(amd64)


def test_hash_follows_image_files_and_qemu(image_dir: Path) -> None:
    arch = get_arch("i386")
    before = images.input_hash(arch, "1:7.2")
    assert images.input_hash(arch, "1:8.0") != before
    entry = image_dir / "overlay/usr/local/sbin/xsmig-entrypoint"
    entry.write_text(entry.read_text() + "\n# changed\n")
    assert images.input_hash(arch, "1:7.2") != before


def test_exec_bit_is_an_input(image_dir: Path) -> None:
    arch = get_arch("i386")
    before = images.input_hash(arch, "1:7.2")
    (image_dir / "overlay/usr/local/bin/python3").chmod(0o644)
    assert images.input_hash(arch, "1:7.2") != before


def test_base_hash_ignores_layer_files(image_dir: Path) -> None:
    arch = get_arch("amd64")
    before = images.base_hash(arch)
    (image_dir / "Dockerfile").write_text("# other\n")
    assert images.base_hash(arch) == before


def test_python_version_from_package() -> None:
    got = images._python_version({"python3.11": "3.11.2-6+deb12u6"}, "/usr/bin/python3.11")
    assert got == ("3.11.2", "3.11.2-6+deb12u6")


DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example.invalid/debian
Suites: bookworm
Components: main
"""


def test_deb822_sources() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.example.invalid/debian",
        "http://mirror.example.invalid/debian-security",
    ]
    assert pick_mirror(sources, "bookworm") == "http://mirror.example.invalid/debian"


def test_one_line_sources_with_options() -> None:
    text = (
        "# deb http://old.example.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.invalid/debian/ trixie main contrib\n"
    )
    sources = parse_one_line(text)
    assert sources[0].uri == "http://one.example.invalid/debian/"
    # Another release's mirror still carries bookworm.
    assert pick_mirror(sources, "bookworm") == "http://one.example.invalid/debian"


def test_mirror_from_apt_dir_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XSMIG_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(MirrorError, match="XSMIG_DEBIAN_MIRROR"):
        debian_mirror("bookworm", tmp_path)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "x.sources.disabled").write_text("garbage")
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.example.invalid/debian"
    monkeypatch.setenv("XSMIG_DEBIAN_MIRROR", "http://override.example.invalid/d/")
    assert debian_mirror("bookworm", tmp_path) == "http://override.example.invalid/d"
