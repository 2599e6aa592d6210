"""`xsmig verify`: every stream restore accepts is valid, every stream restore rejects is
invalid with the same message and byte offset (same parser, same checks), and the CLI
exits 0 only for a valid stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stream_parts import Stream
from test_xsmig_badinput import HOSTILE
from test_xsmig_v2 import ACCEPTED, REJECTED, as_v3
from v2_spec import VCPU_MSRS, split
from xsmig_helpers import ENCODINGS, Guest, cli, make, restore_bytes, save_bytes

from xsmig import pagetypes as pt
from xsmig.domain import DomainDir
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import AMD64, I386
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.reader import StreamParser
from xsmig.verify import VerifySink, verify_stream

LAYOUTS = {"i386": I386, "amd64": AMD64}


@pytest.mark.parametrize("saver", LAYOUTS)
@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
@pytest.mark.parametrize("shape", ["standard", "sparse"])
def test_saved_streams_are_valid(store: Store, encoding: Encoding, saver: str,
                                 shape: str) -> None:
    g = make(store, "g", Guest(pages=300, width=32, vcpus=3, max_vcpu_id=9, shape=shape))
    data = save_bytes(g, encoding, LAYOUTS[saver], rounds=2)
    verdict = verify_stream(io.BytesIO(data))
    assert verdict["valid"], verdict.get("error")
    assert verdict["encoding"] == encoding.value and verdict["vcpus"] == g.read_meta().vcpu_ids
    assert verdict["bytes"] == len(data) and verdict["p2m_size"] == 300


@pytest.mark.parametrize("case", HOSTILE)
def test_legacy_rejections_match_restore(streams: dict[str, Stream], case: str) -> None:
    kind, breaker, exc, words = HOSTILE[case]
    data, at = breaker(streams[kind])
    verdict = verify_stream(io.BytesIO(data))
    assert not verdict["valid"]
    error = verdict["error"]
    assert error["offset"] == at and error["exit_code"] == exc.exit_code  # type: ignore[attr-defined]
    assert all(word in error["message"] for word in words)


@pytest.fixture
def v2data(source: DomainDir) -> bytes:
    return as_v3(save_bytes(source, Encoding.V2, AMD64)).to_bytes()


@pytest.mark.parametrize("case", REJECTED)
def test_v2_rejections(v2data: bytes, case: str) -> None:
    """Every v2 rejection of restore, including what the spec allows and xsmig's domains
    cannot hold (xcr0_accum != xcr0, extended state for one vCPU only): verify refuses
    it too, with restore's kind and offset (verify == restore, issue 16)."""
    edit, error, where = REJECTED[case]
    s = split(v2data)
    edit(s)
    verdict = verify_stream(io.BytesIO(s.to_bytes()))
    assert not verdict["valid"]
    assert verdict["error"]["offset"] == where(s)
    assert verdict["error"]["kind"] == ("malformed" if error is StreamError else "refused")


@pytest.mark.parametrize("case", ACCEPTED)
def test_v2_accepted(v2data: bytes, case: str) -> None:
    s = split(v2data)
    ACCEPTED[case](s)
    assert verify_stream(io.BytesIO(s.to_bytes()))["valid"]


def test_msrs_are_refused_as_restore_refuses_them(v2data: bytes, tmp_path: Path) -> None:
    s = split(v2data)
    s.records.insert(-2, (VCPU_MSRS, bytes(8) + bytes(16)))
    verdict = verify_stream(io.BytesIO(s.to_bytes()))
    with pytest.raises(StreamRefused) as e:
        restore_bytes(Store(tmp_path), s.to_bytes(), "r")
    assert not verdict["valid"] and verdict["error"]["exit_code"] == 4
    assert (verdict["error"]["message"], verdict["error"]["offset"]) == (str(e.value),
                                                                       e.value.offset)


@pytest.mark.parametrize("cut", [0, 5, 24, 40, 100, 5000, -1])
def test_truncated_is_invalid(v2data: bytes, cut: int) -> None:
    verdict = verify_stream(io.BytesIO(v2data[:cut]))
    assert not verdict["valid"] and verdict["error"]["exit_code"] == 3


def test_cli(tmp_path: Path, source: DomainDir, v2data: bytes,
             streams: dict[str, Stream]) -> None:
    st = tmp_path / "store"
    good = tmp_path / "good.v2"
    good.write_bytes(v2data)
    ok = cli(st, "verify", str(good))
    assert ok.returncode == 0 and ok.stdout.decode().startswith("valid v2 stream")
    as_json = cli(st, "verify", "--json", "-", stdin=v2data)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["valid"] is True
    data, at = HOSTILE["trailing bytes"][1](streams["native-amd64"])
    bad = cli(st, "verify", "-", stdin=data)
    err = bad.stderr.decode().splitlines()
    assert bad.returncode == 3 and bad.stdout == b"" and len(err) == 1
    assert err[0].startswith("xsmig: error: invalid stream:") and f"at byte {at}" in err[0]
    bad_json = cli(st, "verify", "--json", "-", stdin=data)
    verdict = json.loads(bad_json.stdout)
    assert bad_json.returncode == 3 and verdict["valid"] is False
    assert verdict["error"]["offset"] == at
    refused = cli(st, "verify", "-", stdin=v2data[:36] + b"\0\0\0\x09" + v2data[40:])
    assert refused.returncode == 4 and "version 9" in refused.stderr.decode()


@pytest.fixture(scope="module")
def small_streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    store = Store(tmp_path_factory.mktemp("small"))
    g = make(store, "g", Guest(pages=64, width=32, vcpus=2, max_vcpu_id=3, seed=8,
                               shape="standard"))
    return {f"{e.value}-{s}": save_bytes(g, e, LAYOUTS[s]) for e in ENCODINGS for s in LAYOUTS}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_agrees_with_restore_on_corrupted_streams(
        tmp_path_factory: pytest.TempPathFactory, small_streams: dict[str, bytes],
        data: st.DataObject) -> None:
    """One byte changed anywhere (or the stream cut): verify says valid exactly when
    restore succeeds, and otherwise reports restore's very error and offset."""
    kind = data.draw(st.sampled_from(sorted(small_streams)))
    stream = bytearray(small_streams[kind])
    at = data.draw(st.integers(0, len(stream) - 1))
    if data.draw(st.booleans()):
        stream[at] ^= data.draw(st.integers(1, 255))
    else:
        del stream[at:]
    verdict = verify_stream(io.BytesIO(bytes(stream)))
    store = Store(tmp_path_factory.mktemp("r"))
    try:
        restore_bytes(store, bytes(stream), "r")
    except (StreamError, StreamRefused) as e:
        if isinstance(e, StreamRefused) and "(--max-pages)" in str(e):
            return  # this host's cap, checked first: not a property of the stream
        assert (verdict["error"]["message"], verdict["error"]["offset"]) == (str(e), e.offset)
    else:
        assert verdict["valid"], verdict["error"]


def test_a_page_table_entry_mapping_a_hole_is_refused_by_verify_as_by_restore(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Found by the property above: an entry naming a pfn below p2m_size that the stream
    never fills passes every per-batch check; restore refuses the domain it built, and
    verify must say so too, in the same words and at the same byte."""
    store = Store(tmp_path_factory.mktemp("sparse"))
    g = make(store, "g", Guest(pages=512, shape="sparse"))
    streams = {f"{e.value}-{s}": save_bytes(g, e, LAYOUTS[s]) for e in ENCODINGS for s in LAYOUTS}
    for kind, data in sorted(streams.items()):
        sink = VerifySink(DomainDir(tmp_path_factory.mktemp("v") / "d"))
        StreamParser(io.BytesIO(data)).parse(sink)
        sink.close()
        hole = sink.types.find(pt.XTAB)
        assert hole > 0, kind
        pfn, at = min(sink.pt_offsets.items())
        page = data[at:at + 4096]
        entry = next(i for i in range(512) if page[8 * i] & 1)
        word = int.from_bytes(page[8 * entry:8 * entry + 8], "little")
        word = (word & ~(0xFFFFFFFFFF << 12)) | (hole << 12)
        bad = bytearray(data)
        bad[at + 8 * entry:at + 8 * entry + 8] = word.to_bytes(8, "little")
        verdict = verify_stream(io.BytesIO(bytes(bad)))
        with pytest.raises(StreamError) as e:
            restore_bytes(Store(tmp_path_factory.mktemp("r")), bytes(bad), "r")
        assert not verdict["valid"], kind
        assert (verdict["error"]["message"], verdict["error"]["offset"]) == (str(e.value),
                                                                           e.value.offset)
        assert f"page table at pfn {pfn:#x}: entry {entry} maps pfn {hole:#x}" in str(e.value)


def test_libxl_layer(source: DomainDir) -> None:
    """The libxl layer's rejections are verify's too, a xenstore key the simulated device
    model cannot hold included (restore refuses it, exit 4: verify == restore)."""
    from test_xsmig_v2 import LIBXL_REJECTED, _libxl_join, _libxl_records

    for case, (edit, _error, words) in LIBXL_REJECTED.items():
        head, records = _libxl_records(save_bytes(source, Encoding.V2, AMD64))
        verdict = verify_stream(io.BytesIO(_libxl_join(*edit(head, records))))
        assert not verdict["valid"] and words in verdict["error"]["message"], case
        if case == "a key that is not the physmap's":
            assert verdict["error"]["exit_code"] == 4, verdict
