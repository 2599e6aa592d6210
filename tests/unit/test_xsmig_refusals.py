"""The oracle's refusals: what a restorer must refuse, cleanly, and what it must accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from xsmig_helpers import (
    ENCODINGS,
    Guest,
    assert_cli_error,
    assert_nothing_left,
    cli,
    digest,
    expect_error,
    make,
    restore_bytes,
    save_bytes,
)

from xsmig.domain import DomainDir
from xsmig.errors import StateError, StreamError, StreamRefused, UsageError
from xsmig.layout import AMD64, I386, Layout
from xsmig.store import Store
from xsmig.stream.format import Encoding

LAYOUTS = {"i386": I386, "amd64": AMD64}


@pytest.fixture
def old64(store: Store) -> DomainDir:
    """A 64-bit guest without extended state: what a 64-bit oldest saver could write."""
    return make(store, "old64", Guest(pages=96, width=64, vcpus=2, extended=False))


@pytest.fixture
def old32(store: Store) -> DomainDir:
    return make(store, "old32", Guest(pages=96, width=32, vcpus=2, extended=False))


def test_native_without_ext_info_from_amd64_is_read_in_own_width(
        store: Store, old64: DomainDir, capsys: pytest.CaptureFixture[str]) -> None:
    """The mail's rule: an amd64 restorer reads it as its own 64-bit width, saying so in
    one line on stderr; --source-width 64 gives the same without the note."""
    data = save_bytes(old64, Encoding.NATIVE, AMD64, ext_info=False)
    restored = restore_bytes(store, data, "own64", own=AMD64)
    assert digest(restored) == digest(old64)
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 1 and "own 64-bit width" in note[0] and "--source-width" in note[0]
    given = restore_bytes(store, data, "given64", own=I386, source_width=64)
    assert digest(given) == digest(old64)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("pages,vcpus,seed", [(96, 2, 1), (64, 1, 2), (300, 3, 3),
                                              (1500, 1, 4), (2048, 2, 5)])
def test_amd64_stream_without_ext_info_on_i386_fails_cleanly(
        store: Store, pages: int, vcpus: int, seed: int) -> None:
    """Read in the i386 restorer's own width, a 64-bit stream must fail the parser's
    checks (exit 3 or 4), never restore: the evidence contradicts the own width."""
    old = make(store, "old", Guest(pages=pages, width=64, vcpus=vcpus, seed=seed,
                                   extended=False))
    data = save_bytes(old, Encoding.NATIVE, AMD64, ext_info=False)
    before = store.names()
    with pytest.raises((StreamError, StreamRefused)) as info:
        restore_bytes(store, data, "wrong", own=I386)
    assert info.value.exit_code in (3, 4) and "\n" not in str(info.value)
    assert "--source-width 64" in str(info.value)  # the way out, named
    assert info.value.offset is not None and f"at byte {info.value.offset}" in str(info.value)
    assert_nothing_left(store, before)


def test_wrong_source_width_never_restores_silently(store: Store, old64: DomainDir) -> None:
    """The operator can be wrong: a 64-bit stream read as 32-bit must fail its checks."""
    data = save_bytes(old64, Encoding.NATIVE, AMD64, ext_info=False)
    before = store.names()
    with pytest.raises((StreamError, StreamRefused)):
        restore_bytes(store, data, "wrong", source_width=32)
    assert_nothing_left(store, before)


@pytest.mark.parametrize("own", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_native_without_ext_info_from_i386_is_detected(store: Store, old32: DomainDir,
                                                       own: Layout) -> None:
    data = save_bytes(old32, Encoding.NATIVE, I386, ext_info=False)
    restored = restore_bytes(store, data, "r5", own=own)  # rule R5: bytes 4-7 = pfn 16
    assert digest(restored) == digest(old32)
    e = expect_error(StreamRefused, store, data, own=own, source_width=64)
    assert "--source-width 64" in str(e)


@pytest.mark.parametrize("saver", LAYOUTS, ids=lambda n: f"from-{n}")
@pytest.mark.parametrize("width", [32, 64], ids=lambda w: f"guest{w}")
def test_native_with_ext_info_contradicting_source_width_is_refused(
        store: Store, saver: str, width: int) -> None:
    source = make(store, "g", Guest(width=width))
    data = save_bytes(source, Encoding.NATIVE, LAYOUTS[saver])
    wrong = 96 - LAYOUTS[saver].bits
    e = expect_error(StreamRefused, store, data, source_width=wrong)
    assert f"--source-width {wrong}" in str(e)
    right = restore_bytes(store, data, "right", source_width=LAYOUTS[saver].bits)
    assert digest(right) == digest(source)


@pytest.mark.parametrize("own", LAYOUTS, ids=lambda n: f"legacy-{n}")
@pytest.mark.parametrize("saver", LAYOUTS, ids=lambda n: f"from-{n}")
@pytest.mark.parametrize("width", [32, 64], ids=lambda w: f"guest{w}")
@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
def test_legacy_profile(store: Store, encoding: Encoding, width: int, saver: str,
                        own: str) -> None:
    """Legacy restores own-width native streams only; everything else fails with exit 3
    or 4 and leaves no domain behind."""
    source = make(store, "src", Guest(width=width, vcpus=2))
    data = save_bytes(source, encoding, LAYOUTS[saver])
    if encoding is Encoding.NATIVE and saver == own:
        restored = restore_bytes(store, data, "ok", own=LAYOUTS[own], profile="legacy")
        assert digest(restored) == digest(source)
        return
    before = store.names()
    with pytest.raises((StreamError, StreamRefused)) as info:
        restore_bytes(store, data, "bad", own=LAYOUTS[own], profile="legacy")
    assert info.value.exit_code in (3, 4)
    assert "\n" not in str(info.value)
    assert_nothing_left(store, before)
    if encoding is not Encoding.NATIVE or own == "amd64":
        # the first ulong is no valid p2m_size: refused right at byte 0
        assert isinstance(info.value, StreamRefused) and info.value.offset == 0


def test_legacy_profile_refuses_source_width(store: Store) -> None:
    source = make(store, "src", Guest())
    data = save_bytes(source, Encoding.NATIVE, AMD64)
    expect_error(UsageError, store, data, own=AMD64, profile="legacy", source_width=64)


def test_no_ext_info_refused_on_save_when_it_cannot_carry_the_guest(store: Store) -> None:
    cross = make(store, "g32", Guest(width=32, extended=False))
    with pytest.raises(StateError, match="--no-ext-info"):
        save_bytes(cross, Encoding.NATIVE, AMD64, ext_info=False)
    rich = make(store, "g64", Guest(width=64, extended=True))
    with pytest.raises(StateError, match="--no-extended-state"):
        save_bytes(rich, Encoding.NATIVE, AMD64, ext_info=False)
    with pytest.raises(UsageError):
        save_bytes(rich, Encoding.ESCAPED, AMD64, ext_info=False)


def test_cli_refusals(tmp_path: Path) -> None:
    st = tmp_path / "store"
    assert cli(st, "create", "old", "--pages", "64", "--guest-width", "64", "--vcpus", "1",
               "--no-extended-state").returncode == 0
    stream = tmp_path / "s.bin"
    assert cli(st, "save", "old", "--encoding", "native", "--no-ext-info", "--toolstack",
               "amd64", "-o", str(stream)).returncode == 0
    own = cli(st, "restore", "-i", str(stream), "--name", "x", "--toolstack", "amd64")
    assert own.returncode == 0 and own.stdout.decode().strip() == "x"
    note = own.stderr.decode().splitlines()
    assert len(note) == 1 and note[0].startswith("xsmig: note: ") and "64-bit" in note[0]
    other = cli(st, "restore", "-i", str(stream), "--name", "w", "--toolstack", "i386")
    assert other.returncode in (3, 4) and "Traceback" not in other.stderr.decode()
    assert other.stderr.decode().splitlines()[-1].startswith("xsmig: error: ")
    ok = cli(st, "restore", "-i", str(stream), "--name", "z", "--source-width", "64",
             "--toolstack", "i386")
    assert ok.returncode == 0 and ok.stdout.decode().strip() == "z"
    esc = tmp_path / "e.bin"
    assert cli(st, "save", "old", "--encoding", "escaped", "-o", str(esc)).returncode == 0
    assert_cli_error(cli(st, "restore", "-i", str(esc), "--name", "y", "--profile", "legacy"),
                     4)
    assert cli(st, "list").stdout.decode().split().count("y") == 0
    assert list((st / "incoming").iterdir()) == []


def test_mails_rule_failure_is_one_line(tmp_path: Path) -> None:
    """An amd64 stream without ext-info read by i386 in its own width: one error line
    (which names --source-width), no separate note."""
    st = tmp_path / "store"
    assert cli(st, "create", "old", "--pages", "64", "--guest-width", "64",
               "--no-extended-state").returncode == 0
    stream = cli(st, "save", "old", "--encoding", "native", "--no-ext-info", "--toolstack",
                 "amd64").stdout
    proc = cli(st, "restore", "--name", "x", "--toolstack", "i386", stdin=stream)
    assert proc.returncode in (3, 4)
    line = assert_cli_error(proc, proc.returncode)
    assert "--source-width 64" in line and "own 32-bit width" in line
