"""Property tests (issue 7, item 8): mutated and truncated streams of every encoding
raise only XsmigError subclasses with an offset inside the input, and leave the store
as it was; whatever restore publishes, digest accepts; detection over any 24-byte head
never crashes. The invariants are fuzz/target.py's, shared with the atheris campaign."""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xsmig_helpers import assert_cli_error, cli

from fuzz.seeds import seeds
from fuzz.target import check_one
from xsmig import pagetypes as pt
from xsmig.canonical import CanonicalDomain
from xsmig.errors import XsmigError
from xsmig.layout import AMD64, I386
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.detect import HEAD_BYTES, detect
from xsmig.stream.reader import Batch, StreamHeader, StreamParser
from xsmig.vcpu import frame_values

SEEDS = seeds()
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def shared_store() -> Iterator[Path]:
    """One store for every example, holding a domain that must come through untouched."""
    root = Path(tempfile.mkdtemp(prefix="xsmig-prop-")) / "store"
    restore(Store(root), io.BytesIO(SEEDS["native-amd64-64"]), name="keep", host_id=3)
    before = CanonicalDomain(Store(root).get("keep")).digest()
    yield root
    assert Store(root).names() == ["keep"]
    assert CanonicalDomain(Store(root).get("keep")).digest() == before
    shutil.rmtree(root.parent, ignore_errors=True)


_ROOT: list[Path] = []


@pytest.fixture(autouse=True)
def _use(shared_store: Path) -> None:
    _ROOT[:] = [shared_store]


def _run(data: bytes) -> str:
    return check_one(data, _ROOT[0])


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_seeds_restore(kind: str) -> None:
    assert _run(SEEDS[kind]) == "restored"


@pytest.mark.parametrize("kind", sorted(SEEDS))
@FAST
@given(data=st.data())
def test_truncations(kind: str, data: st.DataObject) -> None:
    stream = SEEDS[kind]
    cut = data.draw(st.integers(0, len(stream) - 1))
    assert _run(stream[:cut]) != "restored"


@pytest.mark.parametrize("kind", sorted(SEEDS))
@settings(FAST, max_examples=100)
@given(data=st.data())
def test_mutations(kind: str, data: st.DataObject) -> None:
    stream = bytearray(SEEDS[kind])
    # Mostly the structured first and last few KiB (headers, ext-info, tail), some pages.
    where = st.one_of(st.integers(0, min(len(stream), 8192) - 1),
                      st.integers(max(len(stream) - 24576, 0), len(stream) - 1),
                      st.integers(0, len(stream) - 1))
    edits = data.draw(st.lists(st.tuples(where, st.sampled_from(["set", "flip", "word"]),
                                         st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=4))
    for at, how, value in edits:
        if how == "set":
            stream[at] = value & 0xFF
        elif how == "flip":
            stream[at] ^= 1 << (value % 8)
        else:
            stream[at:at + 4] = value.to_bytes(4, "little")
    _run(bytes(stream))


@pytest.mark.parametrize("kind", sorted(SEEDS))
@FAST
@given(data=st.data())
def test_splices(kind: str, data: st.DataObject) -> None:
    """Bytes removed or inserted: every later offset shifts."""
    stream = SEEDS[kind]
    at = data.draw(st.integers(0, len(stream)))
    cut = data.draw(st.integers(0, 64))
    insert = data.draw(st.binary(max_size=64))
    _run(stream[:at] + insert + stream[at + cut:])


@settings(max_examples=2000, deadline=None)
@given(head=st.binary(min_size=0, max_size=HEAD_BYTES),
       profile=st.sampled_from(["current", "legacy"]),
       own=st.sampled_from([I386, AMD64]),
       width=st.sampled_from([None, 32, 64]))
def test_detection_never_crashes(head: bytes, profile: str, own: object, width: int | None
                                 ) -> None:
    try:
        d = detect(head, profile=profile, own=own, source_width=width)  # type: ignore[arg-type]
    except XsmigError:
        return
    assert d.width in (None, 32, 64)


class _Map:
    """Where the frame-bearing fields of a stream are: present page-table entries, the
    unmapped list, vCPU frame fields (all as byte offsets, with their word size)."""

    def __init__(self, data: bytes) -> None:
        self.fields: list[tuple[int, int, str]] = []  # (offset, size, kind)
        self.p2m_size = 0
        StreamParser(io.BytesIO(data)).parse(self)  # type: ignore[arg-type]

    def on_header(self, header: StreamHeader) -> None:
        self.p2m_size = header.p2m_size
        self.header = header

    def on_batch(self, batch: Batch) -> None:
        i = 0
        for t in batch.types:
            if not pt.has_data(t):
                continue
            if pt.pt_level(t):
                base = batch.data_offset + i * 4096
                page = batch.data[i * 4096:(i + 1) * 4096]
                for e in range(512):
                    if page[e * 8] & 1:
                        self.fields.append((base + 8 * e, 8, "pte"))
            i += 1

    def on_chunk(self, offset: int, chunk_id: int, name: str, value: object) -> None:
        pass

    def on_unmapped(self, offset: int, pfns: list[int]) -> None:
        word = self.header.layout.ulong_size
        self.fields += [(offset + 4 + i * word, word, "unmapped") for i in range(len(pfns))]

    def on_vcpu(self, offset: int, vcpu_id: int, ctx: bytes, ext: bytes | None,
                xsave_mask: int, xsave: bytes) -> None:
        vl = self.header.guest
        for field, _frame in frame_values(vl, bytearray(ctx), vcpu_id):
            self.fields.append((offset + field.offset, vl.word_size, f"vcpu-{field.kind}"))

    def on_shared_info(self, offset: int, data: bytes) -> None:
        pass


MAPS = {kind: _Map(data) for kind, data in SEEDS.items()}


@pytest.mark.parametrize("kind", sorted(SEEDS))
@settings(FAST, max_examples=60)
@given(data=st.data())
def test_frame_fields_pointing_anywhere(kind: str, data: st.DataObject) -> None:
    """Page-table entries, vCPU frames and unmapped pfns re-aimed at any pfn of the
    guest (a hole, a page never sent, an allocate-only or broken page, a page table):
    whatever restore accepts, digest and save accept and it round-trips."""
    stream, where = bytearray(SEEDS[kind]), MAPS[kind]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(where.fields),
                                         st.integers(0, where.p2m_size + 2)),
                               min_size=1, max_size=3))
    vl = where.header.guest
    for (at, size, kind_of), pfn in edits:
        if kind_of == "pte":
            (old,) = struct.unpack_from("<Q", stream, at)
            value = (old & ~(0xFFFFFFFFFF << 12)) | (pfn << 12)
        elif kind_of == "vcpu-cr3":
            value = vl.encode_cr3(pfn)
        elif kind_of == "vcpu-cr1":
            value = (pfn << 12) | 1
        else:
            value = pfn
        stream[at:at + size] = value.to_bytes(8, "little")[:size]
    _run(bytes(stream))


@settings(FAST, max_examples=20)
@given(data=st.data())
def test_cli_maps_any_stream_content_to_exit_0_3_or_4(tmp_path_factory: pytest.TempPathFactory,
                                                      data: st.DataObject) -> None:
    """Through the real command line (stdin a pipe, the PolledInput path): stream content
    never yields exit 1 (internal error) or 5 (system), and errors are one line."""
    kind = data.draw(st.sampled_from(sorted(SEEDS)))
    stream = bytearray(SEEDS[kind])
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 255))
    stream = stream[:data.draw(st.integers(0, len(stream)))]
    st_dir = tmp_path_factory.mktemp("cli") / "store"
    for args in (["restore"], ["inspect", "-"]):
        proc = cli(st_dir, *args, stdin=bytes(stream))
        assert proc.returncode in (0, 3, 4), proc.stderr.decode()
        if proc.returncode:
            assert_cli_error(proc, proc.returncode)
    names = Store(st_dir).names() if st_dir.exists() else []
    assert len(names) <= 1
