"""`xsmig convert`: any encoding to any other, restore(convert(s)) has the digest of
restore(s), the converted stream is valid (v2 ones against an independent spec check),
memory does not grow with the guest, and bad input leaves no output file."""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from v2_spec import spec_check, split, xen_check
from xsmig_helpers import ENCODINGS, Guest, assert_cli_error, cli, digest, make, restore_bytes
from xsmig_helpers import save_bytes as save_stream

from xsmig.convert import convert
from xsmig.domain import DomainDir
from xsmig.errors import StreamRefused
from xsmig.layout import AMD64, I386, Layout
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.synth import SHAPES
from xsmig.verify import verify_stream

LAYOUTS = {"i386": I386, "amd64": AMD64}
GUESTS = {
    "guest32-sparse": Guest(pages=300, width=32, vcpus=3, max_vcpu_id=70, seed=2,
                            shape="sparse"),
    "guest64": Guest(pages=150, width=64, vcpus=2, max_vcpu_id=5, seed=3),
    "guest64-old": Guest(pages=100, width=64, vcpus=1, seed=4, extended=False),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DomainDir]:
    store = Store(tmp_path_factory.mktemp("src"))
    return {name: make(store, name, g) for name, g in GUESTS.items()}


def converted(data: bytes, target: Encoding, abi: Layout, **kw: object) -> bytes:
    out = io.BytesIO()
    convert(io.BytesIO(data), out, target, abi=abi, **kw)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("guest", GUESTS)
@pytest.mark.parametrize("saver", LAYOUTS)
@pytest.mark.parametrize("source_enc", ENCODINGS, ids=lambda e: f"from-{e.value}")
def test_every_encoding_to_every_other(store: Store, sources: dict[str, DomainDir],
                                       guest: str, saver: str, source_enc: Encoding) -> None:
    src = sources[guest]
    data = save_stream(src, source_enc, LAYOUTS[saver])
    for target in ENCODINGS:
        for abi in (I386, AMD64):
            out = converted(data, target, abi)
            assert verify_stream(io.BytesIO(out))["valid"], (target, abi)
            if target is Encoding.V2:  # libxl-framed: the spec's rules and Xen's verifier's
                assert spec_check(out) == [] and xen_check(out) == []
            for own in (I386, AMD64):
                restored = restore_bytes(store, out, "copy", own=own)
                assert digest(restored) == digest(src), (target, abi, own)
                store.destroy("copy")


@pytest.mark.parametrize("saver", LAYOUTS)
def test_native_to_v2_and_back_is_the_identity(sources: dict[str, DomainDir],
                                               saver: str) -> None:
    """For guests without holes (legacy batches give holes no pfn, so a round trip moves
    them to the tail list), native -> v2 -> native gives the very same bytes."""
    for guest in ("guest64", "guest64-old"):
        data = save_stream(sources[guest], Encoding.NATIVE, LAYOUTS[saver])
        v2 = converted(data, Encoding.V2, LAYOUTS[saver])
        assert converted(v2, Encoding.NATIVE, LAYOUTS[saver]) == data


def test_converter_names_itself_in_the_domain_header(sources: dict[str, DomainDir]) -> None:
    """The spec: a legacy conversion tool writes xen_major 0 and its own version."""
    data = save_stream(sources["guest64"], Encoding.NATIVE, I386)
    v2 = split(converted(data, Encoding.V2, AMD64))
    assert struct.unpack("<IHHII", v2.dhdr) == (1, 12, 0, 0, 1)


def test_no_ext_info_source_uses_the_mail_rule_or_the_given_width(
        store: Store, sources: dict[str, DomainDir]) -> None:
    src = sources["guest64-old"]
    data = save_stream(src, Encoding.NATIVE, AMD64, ext_info=False)
    for kw in ({"own": AMD64}, {"own": I386, "source_width": 64}):
        out = converted(data, Encoding.V2, I386, **kw)
        assert digest(restore_bytes(store, out, "c", own=I386)) == digest(src)
        store.destroy("c")


def test_from_must_match(sources: dict[str, DomainDir]) -> None:
    data = save_stream(sources["guest64"], Encoding.ESCAPED, AMD64)
    with pytest.raises(StreamRefused, match="not v2"):
        converted(data, Encoding.NATIVE, AMD64, expect=Encoding.V2)


@pytest.mark.parametrize("source_enc,target", [(Encoding.NATIVE, Encoding.V2),
                                                (Encoding.V2, Encoding.NATIVE)])
def test_memory_does_not_grow_with_the_guest(tmp_path: Path, source_enc: Encoding,
                                             target: Encoding) -> None:
    """Peak Python allocations converting a 4 MiB and a 64 MiB guest: the batch buffers
    and a few small lists, not the guest (the v2 -> legacy body spools to a file)."""
    peaks = []
    for pages in (1024, 16384):
        src = make(Store(tmp_path / str(pages)), "g", Guest(pages=pages, width=64, vcpus=2))
        path = tmp_path / f"{pages}.stream"
        path.write_bytes(save_stream(src, source_enc, AMD64))
        with path.open("rb") as source, (tmp_path / "out").open("wb") as out:
            tracemalloc.start()
            convert(source, out, target, abi=I386)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + (1 << 20), peaks  # 60 MiB more guest, < 1 MiB more memory


def test_cli(tmp_path: Path) -> None:
    st = tmp_path / "store"
    assert cli(st, "create", "g", "--pages", "128", "--guest-width", "32").returncode == 0
    native = cli(st, "save", "g", "--encoding", "native").stdout
    v2 = cli(st, "convert", "--to", "v2", stdin=native)
    assert v2.returncode == 0 and v2.stderr == b""
    assert v2.stdout[:8] == b"LibxlFmt" and v2.stdout[32:36] == b"XENF"  # libxl framing
    assert v2.stdout[12:16] == b"\0\0\0\2"  # options: converted from a legacy stream
    assert xen_check(v2.stdout) == []
    out = tmp_path / "back.stream"
    back = cli(st, "convert", "-i", "-", "-o", str(out), "--to", "extended", "--from", "v2",
               stdin=v2.stdout)
    assert back.returncode == 0 and "v2 -> extended" in back.stderr.decode()
    assert cli(st, "--host-id", "4", "restore", "-i", str(out), "--name", "h").returncode == 0
    assert cli(st, "digest", "h").stdout == cli(st, "digest", "g").stdout
    bad = tmp_path / "bad.stream"
    line = assert_cli_error(cli(st, "convert", "-o", str(bad), "--to", "v2",
                                stdin=v2.stdout[:-100]), 3)
    assert "truncated" in line and not bad.exists()
    assert not list(tmp_path.glob("bad.stream*"))
    assert_cli_error(cli(st, "convert", "--to", "v2", "--from", "native", stdin=v2.stdout), 4)
    assert_cli_error(cli(st, "convert", "--to", "v2", "--word-size", "4", stdin=native), 2)
    assert_cli_error(cli(st, "convert", "--to", "native", "--v2-format", "libxc",
                         stdin=native), 2)
    # bare libxc cannot carry the physmap: refused, no output file left
    libxc = tmp_path / "libxc.stream"
    line = assert_cli_error(cli(st, "convert", "-o", str(libxc), "--to", "v2", "--v2-format",
                                "libxc", stdin=native), 4)
    assert "physmap" in line and not libxc.exists()
    assert_cli_error(cli(st, "save", "g", "--encoding", "v2", "--v2-format", "libxc"), 5)
    assert cli(st, "create", "n", "--pages", "128", "--physmap", "0").returncode == 0
    bare = cli(st, "save", "n", "--encoding", "v2", "--v2-format", "libxc").stdout
    assert bare[:8] == b"\xff" * 8 and xen_check(bare) == []
    assert cli(st, "restore", "--name", "n2", stdin=bare).returncode == 0
    assert cli(st, "digest", "n2").stdout == cli(st, "digest", "n").stdout


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    pages=st.integers(64, 500),
    vcpus=st.integers(1, 4),
    width=st.sampled_from([32, 64]),
    shape=st.sampled_from(SHAPES),
    source_enc=st.sampled_from(ENCODINGS),
    chain=st.lists(st.sampled_from(ENCODINGS), min_size=1, max_size=3),
    saver=st.sampled_from([I386, AMD64]),
    abi=st.sampled_from([I386, AMD64]),
    rounds=st.integers(1, 3),
)
def test_conversion_chains_keep_the_guest(seed: int, pages: int, vcpus: int, width: int,
                                          shape: str, source_enc: Encoding,
                                          chain: list[Encoding], saver: Layout, abi: Layout,
                                          rounds: int) -> None:
    if shape == "sparse":
        pages = max(pages, 256)
    guest = Guest(pages=pages, width=width, vcpus=vcpus, max_vcpu_id=vcpus + seed % 50,
                  seed=seed, shape=shape)
    with tempfile.TemporaryDirectory() as tmp:
        src = make(Store(Path(tmp) / "s"), "g", guest, host_id=seed % 5)
        data = save_stream(src, source_enc, saver, rounds=rounds)
        for target in chain:
            data = converted(data, target, abi)
        restored = restore_bytes(Store(Path(tmp) / "d"), data, "g", host_id=seed % 5 + 1)
        assert digest(restored) == digest(src)
