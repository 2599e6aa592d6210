"""xsmig fixtures: a fresh store per test, and one source domain (with its saved
streams) per module for the tests that break streams and must leave it untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from stream_parts import KINDS, Stream
from xsmig_helpers import Guest, make, save_bytes

from xsmig.domain import DomainDir
from xsmig.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> DomainDir:
    """A 2-vCPU 64-bit guest, created once per module (tests must not change it)."""
    store = Store(tmp_path_factory.mktemp("src"))
    return make(store, "src", Guest(pages=96, width=64, vcpus=2, seed=3))


@pytest.fixture(scope="module")
def streams(source: DomainDir) -> dict[str, Stream]:
    """`source` saved in each legacy kind of KINDS."""
    return {k: Stream(save_bytes(source, enc, lay)) for k, (enc, lay) in KINDS.items()}
