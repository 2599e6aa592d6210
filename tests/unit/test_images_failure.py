"""A build that cannot work fails once, clearly: the step, its log, the likely cause and
the command that fixes it; mmdebstrap falls back to debootstrap only when that can help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.images import imagebuild, images, prereqs
from testbed.images.arch import get_arch
from testbed.images.progress import PlainReporter

I386 = get_arch("i386")

LOGS = {
    "mirror": "E: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  "
    "Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n",
    "missing-tool": "E: install arch-test for foreign architecture support\n",
    "binfmt": "E: armhf can neither be executed natively nor via qemu user emulation with "
    "binfmt_misc\n",
    "disk-full": "tar: ./usr/lib/x: Cannot write: No space left on device\n",
}


@pytest.mark.parametrize("key", sorted(LOGS))
def test_each_cause_is_recognised(key: str) -> None:
    cause = imagebuild.likely_cause("I: retrieving\n" + LOGS[key])
    assert cause is not None and cause.key == key


def test_an_unknown_log_has_no_cause() -> None:
    assert imagebuild.likely_cause("I: something else went wrong\n") is None


def test_step_failed_names_step_log_cause_fix_and_mirror(tmp_path: Path) -> None:
    log = tmp_path / "i386-base.log"
    log.write_text(LOGS["mirror"])
    err = imagebuild.step_failed("mmdebstrap of i386", log, "exit 25",
                                 mirror="http://127.0.0.1:9/debian")
    text = str(err)
    assert text.startswith("mmdebstrap of i386 failed (exit 25)")
    assert f"log: {log}" in text
    assert "likely cause: the Debian mirror http://127.0.0.1:9/debian does not answer" in text
    assert "fix: " in text and "XSMIG_DEBIAN_MIRROR" in text
    assert err.cause == "mirror" and err.step == "mmdebstrap of i386" and err.log == log


def _fake_builders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mm_log: str,
                   calls: list[str]) -> None:
    monkeypatch.setattr(images, "_plan_builders", lambda _a, _c: ["mmdebstrap", "debootstrap"])
    monkeypatch.setattr(images, "builder", lambda: "mmdebstrap")
    monkeypatch.setattr(images, "debian_mirror", lambda _s: "http://127.0.0.1:9/debian")

    def mm(arch: Any, mirror: str, tarball: Path, info: Path, log: Path, rep: Any) -> None:
        calls.append("mmdebstrap")
        log.write_text(mm_log)
        raise imagebuild.step_failed("mmdebstrap of i386", log, "exit 1", mirror=mirror)

    def deb(arch: Any, cache: Path, mirror: str, tarball: Path, info: Path, log: Path,
            rep: Any) -> None:
        calls.append(f"debootstrap:{log.name}")

    monkeypatch.setattr(images, "_mmdebstrap", mm)
    monkeypatch.setattr(images, "_debootstrap", deb)


def test_mmdebstrap_failure_falls_back_to_debootstrap_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    _fake_builders(monkeypatch, tmp_path, LOGS["missing-tool"], calls)
    log = tmp_path / "i386-base.log"
    images._build_rootfs(I386, tmp_path, tmp_path / "t.tar", tmp_path / "t.json", log,
                         PlainReporter())
    assert calls == ["mmdebstrap", "debootstrap:i386-base-debootstrap.log"]
    assert "falling back to debootstrap" in capsys.readouterr().out


def test_a_mirror_failure_does_not_fall_back(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """debootstrap would meet the same dead mirror: the first failure is the error."""
    calls: list[str] = []
    _fake_builders(monkeypatch, tmp_path, LOGS["mirror"], calls)
    with pytest.raises(imagebuild.BuildError, match="does not answer") as info:
        images._build_rootfs(I386, tmp_path, tmp_path / "t.tar", tmp_path / "t.json",
                             tmp_path / "i386-base.log", PlainReporter())
    assert calls == ["mmdebstrap"] and info.value.cause == "mirror"


def test_no_usable_builder_is_one_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    def problems(_arches: Any, _cache: Path, names: list[str]
                 ) -> dict[str, list[prereqs.Check]]:
        pkgs = {"mmdebstrap": "arch-test", "debootstrap": "debootstrap"}
        return {n: [prereqs.Check(pkgs[n], False, "not installed", "apt-get ...", (pkgs[n],),
                                  "apt")] for n in names}

    monkeypatch.setattr(images, "build_problems", problems)
    monkeypatch.setattr(images, "builder", lambda: "mmdebstrap")
    monkeypatch.delenv("XSMIG_ROOTFS_BUILDER", raising=False)
    with pytest.raises(imagebuild.BuildError) as info:
        images._plan_builders(I386, tmp_path)
    text = str(info.value)
    assert "cannot build the i386 image" in text and "arch-test: not installed" in text
    assert "debootstrap: not installed" in text and "doctor --fix" in text
    assert "apt-get install -y --no-install-recommends arch-test debootstrap" in text
    assert "\n" not in text


def test_a_missing_preferred_builder_uses_the_fallback(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    def problems(_arches: Any, _cache: Path, names: list[str]
                 ) -> dict[str, list[prereqs.Check]]:
        return {n: [prereqs.Check("arch-test", False, "not installed", "", ("arch-test",))]
                if n == "mmdebstrap" else [] for n in names}

    monkeypatch.setattr(images, "build_problems", problems)
    monkeypatch.setattr(images, "builder", lambda: "mmdebstrap")
    monkeypatch.delenv("XSMIG_ROOTFS_BUILDER", raising=False)
    assert images._plan_builders(I386, tmp_path) == ["debootstrap"]


def test_cached_base_with_an_empty_cache_dir_writes_its_layer_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CI's fresh-machine step empties the cache while base images stay in Docker: the
    layer build must create the logs directory itself (it once died on it)."""
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("XSMIG_IMAGE_CACHE", str(cache))
    monkeypatch.setattr(images, "qemu_info", lambda _a: {
        "binary": "/bin/true", "package_version": "1", "version": "qemu 1"})
    monkeypatch.setattr(images, "_get_image", lambda _c, _t: None)
    monkeypatch.setattr(images, "_ensure_base", lambda *_a: {
        "packages": {"python3.11": "3.11.2-6"}, "python": "/usr/bin/python3.11"})
    logs: list[Path] = []

    def build_layer(_client: Any, _ctx: Any, *, base: str, tag: str, labels: Any,
                    log: Path) -> None:
        log.write_text("built\n")  # fails when the directory is missing
        logs.append(log)

    class Images:
        def get(self, _tag: str) -> Any:
            class Image:
                def tag(self, *_a: str) -> None:
                    pass
            return Image()

    class Client:
        images = Images()

    monkeypatch.setattr(images.imagebuild, "build_layer", build_layer)
    built = images._build(Client(), I386, False, PlainReporter())
    assert built.arch == "i386" and logs == [cache / "logs" / "i386-layer.log"]
