"""Property tests (issue 7, item 8): mutated and truncated streams of every encoding
raise only XsmigError subclasses with an offset inside the input, and leave the store
as it was; whatever restore publishes, digest accepts; detection over any 24-byte head
never crashes. The invariants are fuzz/target.py's, shared with the atheris campaign."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.seeds import seeds
from fuzz.target import check_one
from xsmig.canonical import CanonicalDomain
from xsmig.errors import XsmigError
from xsmig.layout import AMD64, I386
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.detect import HEAD_BYTES, detect

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
