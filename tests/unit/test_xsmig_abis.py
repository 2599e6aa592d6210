"""The five Debian ABIs (i386, amd64, armhf, arm64, s390x): their facts, a golden stream
of each in each encoding, byte-level checks of what differs between them, and every
ordered pair restored in-process against the expectations the matrix derives from the
ABIs (scenarios.abi). Golden hashes: tests/golden/abi_streams.json, regenerated after a
deliberate format change only, with XSMIG_UPDATE_GOLDEN=1."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import platform
import struct
from pathlib import Path

import pytest
from xsmig_helpers import Guest, digest, make, save_bytes

from scenarios.abi import expect
from scenarios.model import Outcome
from xsmig import layout
from xsmig.domain import DomainDir
from xsmig.errors import StreamRefused, UsageError, XsmigError
from xsmig.layout import ABIS, AMD64, ARMHF, I386, S390X, Layout
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream import emit
from xsmig.stream.detect import detect
from xsmig.stream.format import Encoding

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "abi_streams.json"
# name -> (sizeof long, uint64 alignment, byte order, physmap record without the name)
FACTS = {
    "i386": (4, 4, "little", 28),
    "amd64": (8, 8, "little", 32),
    "armhf": (4, 8, "little", 32),
    "arm64": (8, 8, "little", 32),
    "s390x": (8, 8, "big", 32),
}
PAGES = 64


@pytest.fixture(autouse=True)
def fixed_writer_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emit, "__version__", "golden")
    monkeypatch.setattr(layout, "machine", lambda: "golden")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("abis"))


@pytest.fixture(scope="module")
def guests(store: Store) -> dict[int, DomainDir]:
    return {w: make(store, f"g{w}", Guest(pages=PAGES, width=w, seed=1)) for w in (32, 64)}


@pytest.fixture(scope="module")
def bare(store: Store) -> dict[int, DomainDir]:
    """Guests a stream without extended info can carry (no xsave state)."""
    return {w: make(store, f"b{w}", Guest(pages=PAGES, width=w, seed=1, extended=False))
            for w in (32, 64)}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_abi_facts(name: str) -> None:
    abi = ABIS[name]
    word, align, order, record = FACTS[name]
    assert (abi.ulong_size, abi.u64_align, abi.byte_order) == (word, align, order)
    assert abi.physmap_record_size() == record
    assert abi.endian == ("<" if order == "little" else ">")


def test_native_layout_is_read_off_the_interpreter() -> None:
    native = Layout.native()
    assert native.ulong_size == struct.calcsize("@L")
    assert native.u64_align == struct.calcsize("@IQ") - 8
    if platform.machine() == "x86_64":
        assert native == AMD64 and native.name == "amd64"


def _restore(store: Store, data: bytes, own: Layout, **kw: object) -> DomainDir:
    name = "r"
    restore(store, io.BytesIO(data), name=name, host_id=2, own=own, **kw)  # type: ignore[arg-type]
    return store.get(name)


def _outcome(store: Store, data: bytes, own: Layout, ref: str, **kw: object) -> tuple[str, int]:
    try:
        domain = _restore(store, data, own, **kw)
    except XsmigError as e:
        with pytest.raises(XsmigError):
            store.get("r")  # nothing half-restored is left behind
        return "refused", e.exit_code
    same = digest(domain) == ref
    store.destroy("r")
    return ("identical" if same else "different"), 0


@pytest.mark.parametrize("encoding", [e.value for e in Encoding])
@pytest.mark.parametrize("width", [32, 64])
def test_every_pair_restores_as_the_abis_say(store: Store, guests: dict[int, DomainDir],
                                             encoding: str, width: int) -> None:
    ref = digest(guests[width])
    for (src, a), (dst, b) in itertools.product(ABIS.items(), repeat=2):
        data = save_bytes(guests[width], encoding, a)
        for profile in ("current", "legacy"):
            want, _retry = expect(src, dst, encoding, profile=profile)
            got, code = _outcome(store, data, b, ref, profile=profile)
            assert got == want.outcome.value, (src, dst, profile)
            if want.outcome is Outcome.REFUSED:
                assert code in want.exit_codes, (src, dst, profile)


def test_without_ext_info_every_pair_restores_as_the_abis_say(
        store: Store, bare: dict[int, DomainDir]) -> None:
    for (src, a), (dst, b) in itertools.product(ABIS.items(), repeat=2):
        domain = bare[a.bits]
        data = save_bytes(domain, "native", a, ext_info=False)
        want, retry = expect(src, dst, "native", no_ext_info=True)
        got, code = _outcome(store, data, b, digest(domain))
        assert got == want.outcome.value, (src, dst)
        if retry is not None:
            assert code in want.exit_codes
            again, _ = _outcome(store, data, b, digest(domain), source_width=retry.source_width)
            assert again == "identical", (src, dst)


def test_golden_streams_of_every_abi(guests: dict[int, DomainDir]) -> None:
    hashes = {
        f"{name}/{enc.value}/guest{w}": hashlib.sha256(save_bytes(guests[w], enc, abi)).hexdigest()
        for name, abi in ABIS.items() for enc in Encoding for w in (32, 64)
    }
    if os.environ.get("XSMIG_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    assert json.loads(GOLDEN.read_text()) == hashes
    # amd64 and arm64 are the same stream ABI: byte-identical streams (extended ones
    # differ only in the optional wrtr block, which names the writer's ABI).
    for enc, w in itertools.product((Encoding.NATIVE, Encoding.ESCAPED), (32, 64)):
        assert hashes[f"amd64/{enc.value}/guest{w}"] == hashes[f"arm64/{enc.value}/guest{w}"]


def test_s390x_native_and_escaped_streams_are_big_endian(guests: dict[int, DomainDir]) -> None:
    native = save_bytes(guests[64], "native", S390X)
    assert native[:8] == struct.pack(">Q", PAGES)  # p2m_size, zero top half first
    assert native[8:16] == b"\xff" * 8  # ext-info signature: the same in either order
    (size,) = struct.unpack_from(">I", native, 16)
    assert native[20:24] == b"vcpu" and struct.unpack_from(">I", native, 24)[0] == 0x1430
    assert size == 8 + 0x1430 + 8 + 8 + 4  # vcpu, extv, xcnt blocks
    escaped = save_bytes(guests[64], "escaped", S390X)
    assert escaped[:4] == b"\xff" * 4 and escaped[4:12] == struct.pack(">Q", PAGES)
    little = save_bytes(guests[64], "native", AMD64)
    assert little[:8] == struct.pack("<Q", PAGES) and len(little) == len(native)


def test_s390x_extended_declares_big_endian_in_a_little_endian_section(
        guests: dict[int, DomainDir]) -> None:
    data = save_bytes(guests[64], "extended", S390X)
    assert data[4:8] == b"sinf"
    _flags, _reserved, length = struct.unpack_from("<HHI", data, 8)
    word, order, version = struct.unpack_from("<BBH", data, 16)
    assert (length, word, order, version) == (16, 8, 1, 1)  # byte_order 1: big
    end = data.index(b"end ") + 12
    assert data[end:end + 8] == struct.pack(">Q", PAGES)


def test_armhf_physmap_records_are_32_bytes_plus_name(guests: dict[int, DomainDir]) -> None:
    names = [e.name for e in guests[32].read_meta().physmap]
    i386 = save_bytes(guests[32], "native", I386)
    armhf = save_bytes(guests[32], "native", ARMHF)
    assert len(armhf) - len(i386) == 4 * len(names)  # 4 more padding bytes per record
    assert len(names) >= 2


# -- Byte order of native streams: the B rules of docs/stream-format.md --

def _head_both_orders() -> bytes:
    """A 32-bit native head without ext-info that makes sense in both byte orders:
    p2m_size 0x1000 (big-endian reading: 0x100000), four frames 0x100.. (0x10000..),
    then a zero chunk id."""
    return struct.pack("<5Ii", 0x1000, 0x100, 0x200, 0x300, 0x400, 0)


def test_undecidable_byte_order_is_refused_naming_the_flag() -> None:
    with pytest.raises(StreamRefused, match="--source-byte-order"):
        detect(_head_both_orders(), profile="current", own=AMD64, source_width=None)


@pytest.mark.parametrize(("order", "rule"), [("little", "R5"), ("big", "B5")])
def test_source_byte_order_decides(order: str, rule: str) -> None:
    d = detect(_head_both_orders(), profile="current", own=AMD64, source_width=None,
               source_byte_order=order)
    assert (d.encoding, d.width, d.byte_order, d.rule[:2]) == (Encoding.NATIVE, 32, order, rule)


def test_big_endian_heads_are_detected() -> None:
    ff4, ff8 = b"\xff" * 4, b"\xff" * 8
    cases = {
        "B2": (ff4 + struct.pack(">Q", 64) + ff8 + b"\0" * 4, Encoding.ESCAPED, 64),
        "B4": (struct.pack(">Q", 64) + ff8 + struct.pack(">I", 5200) + b"vcpu",
               Encoding.NATIVE, 64),
        "B3": (struct.pack(">II", 64, 0xFFFFFFFF) + struct.pack(">I", 2808) + b"vcpu"
               + struct.pack(">I", 2800) + b"\0" * 4, Encoding.NATIVE, 32),
    }
    for rule, (head, encoding, width) in cases.items():
        d = detect(head, profile="current", own=AMD64, source_width=None)
        assert (d.rule[:2], d.encoding, d.width, d.byte_order) == (rule, encoding, width, "big")


def test_legacy_profile_takes_no_byte_order_flag() -> None:
    with pytest.raises(UsageError):
        detect(_head_both_orders(), profile="legacy", own=AMD64, source_width=None,
               source_byte_order="big")
