"""Malformed, truncated and hostile streams: one clear line naming what and where, the
documented exit status, no half-restored domain, and the source domain untouched."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from stream_parts import KINDS, Stream
from xsmig_helpers import (
    ENCODINGS,
    assert_cli_error,
    cli,
    digest,
    expect_error,
    snapshot,
)
from xsmig_helpers import save_bytes as save_stream

from xsmig.domain import DomainDir
from xsmig.errors import StreamError, StreamRefused
from xsmig.layout import AMD64, I386
from xsmig.store import Store


def boundaries(s: Stream) -> set[int]:
    """Every section boundary the report knows, and a step into each."""
    r = s.report
    marks = {0, 4, 8, s.p2m_at, s.p2m_at + s.word, s.batch_data, len(s.data) - 1}
    marks |= {b["offset"] for b in r["ext_blocks"] + r["extended_info_section"]}
    marks |= {b["offset"] + 8 for b in r["ext_blocks"]}
    marks |= {c["offset"] for c in r["chunks"]} | {c["offset"] + 4 for c in r["chunks"]}
    marks |= {r["tail"]["offset"], r["tail"]["offset"] + 4, r["tail"]["shared_info_offset"]}
    marks |= {v["offset"] for v in r["tail"]["vcpus"]}
    marks |= {v["offset"] + v["context"] for v in r["tail"]["vcpus"]}
    marks |= {v["offset"] + v["context"] + v["extended"] for v in r["tail"]["vcpus"]}
    return {m for m in marks if 0 <= m < len(s.data)}


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_anywhere(store: Store, streams: dict[str, Stream], kind: str) -> None:
    s = streams[kind]
    rng = random.Random(kind)
    cuts = sorted(boundaries(s) | set(range(0, 30)) |
                  {rng.randrange(len(s.data)) for _ in range(25)})
    for cut in cuts:
        e = expect_error(StreamError, store, s.data[:cut])
        assert isinstance(e, StreamError) and e.exit_code == 3
        assert "truncated" in str(e), (cut, str(e))
        assert e.offset is not None and e.offset <= cut and f"at byte {e.offset}" in str(e)


def test_max_pages_refused_before_allocating(store: Store, streams: dict[str, Stream],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_alloc(self: DomainDir, p2m_size: int) -> None:
        raise AssertionError(f"allocated {p2m_size} pages")

    monkeypatch.setattr(DomainDir, "create_empty", no_alloc)
    for kind, s in streams.items():
        huge = s.patched(s.p2m_at, "<I", 0x0FFFFFFF)
        e = expect_error(StreamRefused, store, huge, max_pages=1000)
        assert "--max-pages" in str(e) and f"at byte {s.p2m_at}" in str(e), kind
        assert e.exit_code == 4


# name -> (stream kind, how to break it, exception type, words in the message, offset)
Hostile = Callable[[Stream], tuple[bytes, int]]


def _batch_count(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("batch")
    return s.patched(at, "<i", 1025), at


def _unknown_chunk(value: int) -> Hostile:
    def f(s: Stream) -> tuple[bytes, int]:
        at = s.chunk("last_checkpoint")
        return s.patched(at, "<i", value), at
    return f


def _ext_total(s: Stream) -> tuple[bytes, int]:
    at = s.p2m_at + 2 * s.word
    return s.patched(at, "<I", 0xFFFFFFF0), at


def _vcpu_block_size(s: Stream) -> tuple[bytes, int]:
    at = s.report["ext_blocks"][0]["offset"]
    return s.patched(at + 4, "<I", 5169), at


def _max_vcpu_id(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("vcpu_info") + 4
    return s.patched(at, "<i", 4096), at


def _xsave_size(s: Stream) -> tuple[bytes, int]:
    at = s.vcpu0() + 5168 + 128 + 8
    return s.patched(at, "<Q", 16 + 833), at  # xcnt - 16 is 16 + the 832-byte area


def _toolstack_length(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("toolstack") + 4
    return s.patched(at, "<I", 0x7FFFFFFF), at


def _batch_pfn(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("batch") + 4 + 5 * s.word
    return s.patched(at, "<I", 0x0FFFFFF0), at


def _batch_type(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("batch") + 4 + 5 * s.word
    return s.patched(at, "<I", 0x50000005), at


def _unmapped_count(s: Stream) -> tuple[bytes, int]:
    at = s.report["tail"]["offset"]
    return s.patched(at, "<I", 0xFFFFFFFF), at


def _vcpu0_missing(s: Stream) -> tuple[bytes, int]:
    at = s.chunk("vcpu_info") + 8
    return s.patched(at, "<Q", 0b10), at


def _pt_entry_beyond(s: Stream) -> tuple[bytes, int]:
    """The first present entry of the first page table, pointing at pfn 0x12345."""
    types = s.report["chunks"][0]["types"]
    assert "l1" in types
    index = 0
    for i in range(96):  # entry i of the batch; all 96 pfns carry data in this guest
        entry = int.from_bytes(s.data[s.chunk("batch") + 4 + i * s.word:][:4], "little")
        if 1 <= entry >> 28 <= 4:
            index = i
            break
    page_at = s.batch_data + index * 4096
    for slot in range(512):
        entry = int.from_bytes(s.data[page_at + 8 * slot:page_at + 8 * slot + 8], "little")
        if entry & 1:
            bad = (entry & ~(0xFFFFFFFFFF << 12)) | (0x12345 << 12)
            return s.patched(page_at + 8 * slot, "<Q", bad), page_at + 8 * slot
    raise AssertionError("no present entry")


def _cr3_at_plain(s: Stream) -> tuple[bytes, int]:
    return s.patched(s.vcpu0() + 5008, "<Q", 1 << 12), s.vcpu0()  # pfn 1: start info


def _start_info_at_table(s: Stream) -> tuple[bytes, int]:
    cr3 = int.from_bytes(s.data[s.vcpu0() + 5008:s.vcpu0() + 5016], "little")
    return s.patched(s.vcpu0() + 616, "<Q", cr3 >> 12), s.vcpu0()


def _gdt_ents(s: Stream) -> tuple[bytes, int]:
    return s.patched(s.vcpu0() + 4960, "<Q", 8193), s.vcpu0()


def _trailing(s: Stream) -> tuple[bytes, int]:
    return s.data + b"\0", len(s.data)


def _sinf_word(s: Stream) -> tuple[bytes, int]:
    return s.patched(16, "<B", 3), 4


def _sinf_required(s: Stream) -> tuple[bytes, int]:
    return s.patched(20, "<I", 1), 4


def _unknown_mandatory_block(s: Stream) -> tuple[bytes, int]:
    at = s.report["extended_info_section"][1]["offset"]  # the optional wrtr block
    out = bytearray(s.patched(at + 4, "<H", 0))
    out[at:at + 4] = b"wrtX"
    return bytes(out), at


HOSTILE: dict[str, tuple[str, Hostile, type[Exception], tuple[str, ...]]] = {
    "batch count 1025": ("native-amd64", _batch_count, StreamError, ("batch of 1025",)),
    "unknown chunk -21": ("native-i386", _unknown_chunk(-21), StreamError,
                          ("unknown chunk id -21",)),
    "unknown chunk INT_MIN": ("escaped", _unknown_chunk(-2**31), StreamError,
                              ("unknown chunk id",)),
    "ext-info total huge": ("native-amd64", _ext_total, StreamError, ("ext-info", "exceeds")),
    "vcpu block of 5169 bytes": ("native-i386", _vcpu_block_size, StreamError,
                                 ("vcpu block of 5169 bytes",)),
    "max_vcpu_id 4096": ("extended-amd64", _max_vcpu_id, StreamError, ("max_vcpu_id 4096",)),
    "vcpu map without vCPU 0": ("native-amd64", _vcpu0_missing, StreamError, ("vCPU 0",)),
    "xsave size above xcnt": ("native-amd64", _xsave_size, StreamError, ("xsave", "xcnt")),
    "toolstack length huge": ("native-i386", _toolstack_length, StreamError,
                              ("toolstack", "exceeds")),
    "batch pfn beyond p2m_size": ("native-amd64", _batch_pfn, StreamError,
                                  ("pfn 0xffffff0", "beyond p2m_size")),
    "batch type nibble 5": ("native-i386", _batch_type, StreamError, ("page type 0x5",)),
    "unmapped count huge": ("escaped", _unmapped_count, StreamError, ("unmapped",)),
    "page-table entry beyond p2m_size": ("native-amd64", _pt_entry_beyond, StreamError,
                                         ("page table", "0x12345", "beyond p2m_size")),
    "cr3 at a plain page": ("native-i386", _cr3_at_plain, StreamError,
                            ("vCPU 0 cr3", "pfn 0x1", "not an L4 page table")),
    "start info at a page table": ("native-amd64", _start_info_at_table, StreamError,
                                   ("start_info", "not a plain page")),
    "gdt_ents 8193": ("extended-i386", _gdt_ents, StreamError, ("gdt_ents 8193",)),
    "trailing bytes": ("native-amd64", _trailing, StreamError, ("trailing",)),
    "sinf word size 3": ("extended-amd64", _sinf_word, StreamError, ("word size 3",)),
    "sinf required feature": ("extended-i386", _sinf_required, StreamRefused,
                              ("unknown features",)),
    "unknown mandatory block": ("extended-amd64", _unknown_mandatory_block, StreamRefused,
                                ("mandatory", "wrtX")),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile(store: Store, streams: dict[str, Stream], case: str) -> None:
    kind, breaker, exc, words = HOSTILE[case]
    data, at = breaker(streams[kind])
    e = expect_error(exc, store, data)  # type: ignore[arg-type]
    message = str(e)
    for word in words:
        assert word in message, message
    assert f"at byte {at}" in message, message


def test_hostile_streams_through_the_cli(tmp_path: Path, streams: dict[str, Stream]) -> None:
    st = tmp_path / "store"
    for case in ("batch count 1025", "page-table entry beyond p2m_size", "trailing bytes"):
        kind, breaker, _exc, words = HOSTILE[case]
        data, at = breaker(streams[kind])
        path = tmp_path / "bad.bin"
        path.write_bytes(data)
        line = assert_cli_error(cli(st, "restore", "-i", str(path), "--name", "bad"), 3)
        assert f"at byte {at}" in line and words[0] in line
        line = assert_cli_error(cli(st, "restore", "--name", "bad", stdin=data[:1000]), 3)
        assert "truncated" in line
    assert cli(st, "list").stdout == b""
    assert list((st / "incoming").iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "/abs", "", ".", "..", "a/b", "-x", "x" * 65,
                                  "a\nb", "é"])
def test_bad_domain_names(tmp_path: Path, name: str) -> None:
    st = tmp_path / "store"
    assert_cli_error(cli(st, "create", name, "--pages", "64"), 2)
    assert_cli_error(cli(st, "restore", "--name", name, stdin=b""), 2)
    for command in ("save", "digest", "destroy"):
        extra = ["--encoding", "native"] if command == "save" else []
        assert_cli_error(cli(st, command, name, *extra), 2)
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


def test_failed_save_to_file_leaves_no_file(tmp_path: Path) -> None:
    st = tmp_path / "store"
    assert cli(st, "create", "g", "--pages", "64", "--vcpus", "1").returncode == 0
    domain = Store(st).get("g")
    types = domain.read_types()
    table = next(p for p, t in enumerate(types) if t == 1)
    with domain.open_memory("r+b") as mem:  # a page-table entry naming a foreign frame
        mem.seek(table * 4096)
        mem.write(struct.pack("<Q", (0x7FFFFFF << 12) | 1))
    out = tmp_path / "out" / "g.bin"
    out.parent.mkdir()
    for encoding in ENCODINGS:
        line = assert_cli_error(cli(st, "save", "g", "--encoding", encoding.value, "-o",
                                    str(out)), 5)
        assert "page table" in line and "corrupt" in line
        assert list(out.parent.iterdir()) == []


def test_save_leaves_the_source_untouched(source: DomainDir) -> None:
    before, before_digest = snapshot(source), digest(source)
    for encoding in ENCODINGS:
        for layout in (I386, AMD64):
            save_stream(source, encoding, layout, rounds=3)
    assert snapshot(source) == before
    assert digest(source) == before_digest


def test_failed_restore_leaves_the_source_untouched(store: Store, source: DomainDir,
                                                    streams: dict[str, Stream]) -> None:
    before = snapshot(source)
    for case in HOSTILE.values():
        data, _ = case[1](streams[case[0]])
        expect_error(case[2], store, data)  # type: ignore[arg-type]
    assert snapshot(source) == before
