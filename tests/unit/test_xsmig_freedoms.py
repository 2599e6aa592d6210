"""convert is a function on domains, verify == restore (issue 16), over the freedoms the
formats allow: fuzz/freedoms.py rewrites each seed (every legacy encoding and ABI, and
v2) into another legal stream of the same domain (record orders, pages sent again,
holes then data and data then holes, optional records wherever they may stand). Each
rewrite must restore to the seed's digest, verify must accept it, and convert to every
encoding must write a stream verify accepts that restores to the same digest (or
refuse, exit 4). The checks are fuzz/target.py's, shared with the campaign.
XSMIG_FREEDOMS_EXAMPLES=N runs N examples instead of CI's 30."""

from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import freedoms
from fuzz.seeds import seeds
from fuzz.target import MAX_PAGES, TARGETS, check_one
from xsmig.canonical import CanonicalDomain
from xsmig.layout import AMD64
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save

SEEDS = seeds()


def _v2_seeds() -> dict[str, bytes]:
    """The legacy seeds' domains, saved as v2 too (restored once, then saved)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="xsmig-v2seeds-") as tmp:
        store = Store(Path(tmp))
        for name, data in SEEDS.items():
            restore(store, io.BytesIO(data), name=name, host_id=1)
            buf = io.BytesIO()
            save(store.get(name), buf, SaveOptions(Encoding.V2, AMD64))
            out[f"v2-from-{name}"] = buf.getvalue()
    return out


ALL = {**SEEDS, **_v2_seeds()}


@pytest.fixture(scope="module")
def scratch() -> Iterator[tuple[Path, dict[str, str]]]:
    root = Path(tempfile.mkdtemp(prefix="xsmig-freedoms-"))
    store = Store(root / "digests")
    digests = {}
    for name, data in ALL.items():
        restore(store, io.BytesIO(data), name="d", host_id=5, max_pages=MAX_PAGES)
        digests[name] = CanonicalDomain(store.get("d")).digest()
        store.destroy("d")
    yield root / "store", digests
    shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=int(os.environ.get("XSMIG_FREEDOMS_EXAMPLES", "30")), deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(ALL)), seed=st.integers(0, 2**64 - 1))
def test_legal_rewrites_convert_to_the_same_domain(
        scratch: tuple[Path, dict[str, str]], kind: str, seed: int) -> None:
    root, digests = scratch
    data = freedoms.rewrite(ALL[kind], random.Random(seed))  # every choice from the seed
    store = Store(root)
    restore(store, io.BytesIO(data), name="fuzzed", host_id=2, max_pages=MAX_PAGES)
    assert CanonicalDomain(store.get("fuzzed")).digest() == digests[kind], (
        "the rewrite is not the same domain (generator or restore bug)")
    store.destroy("fuzzed")
    # restore accepts it: verify must, and convert to every target must keep the guest
    assert check_one(data, root, targets=TARGETS) == "restored"


def test_the_freedoms_are_used() -> None:
    """The rewrites really differ from the seeds: reordered, resent, holes moved."""
    rnd = random.Random(16)
    for name, data in ALL.items():
        assert any(freedoms.rewrite(data, rnd) != data for _ in range(3)), name
