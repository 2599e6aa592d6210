"""The hand-computed scenarios (hostile, truncated, pingpong, shapes) for any selection:
pairs chosen from the ABIs, offsets derived from the format tables. Every derived
offset is checked against a stream xsmig writes in-process for the cell's own guest,
as its source ABI (xsmig.layout.ABIS, the same simulation the golden tests use), and
the patched or cut stream is restored as the destination's ABI: exit 3, nothing left."""

from __future__ import annotations

import io
import itertools
import struct

import pytest
from xsmig_helpers import expect_error, save_bytes

import scenarios
from scenarios.abi import abi_of, chain, differences, relation, ring, ring_pairs
from scenarios.hostile import HUGE_BATCH, HUGE_LENGTH
from scenarios.hosts import arch_of
from scenarios.model import Cell, Outcome
from scenarios.truncated import CUTS, guest_width
from testbed.images.arch import ARCHES, NIGHTLY
from xsmig.domain import DomainDir
from xsmig.errors import StreamError
from xsmig.inspect import inspect_stream
from xsmig.layout import ABIS
from xsmig.store import Store
from xsmig.stream import format as fmt
from xsmig.synth import GuestSpec, create

ALL = scenarios.all_cells()
EVERY = scenarios.on_arches(ALL, ARCHES)
NIGHTLY_CELLS = scenarios.on_arches(ALL, NIGHTLY)
DERIVED = ("hostile", "truncated", "pingpong", "large", "sparse", "pt-heavy", "many-vcpus",
           "live")


def _src_dst(cell: Cell) -> tuple[str, str]:
    return arch_of(cell.hops[0]), arch_of(cell.hops[1])


# -- The nightly cells, written out as CI has run them (ids, cuts, patches) --

NIGHTLY_HOSTILE = {
    "i386-to-amd64/escaped/guest64/hostile": (5252, b"\x00\x20\x00\x00"),
    "amd64-to-i386/escaped/guest64/hostile": (5252, b"\x00\x20\x00\x00"),
    "i386-to-amd64/v2/guest64/hostile": (132, b"\xf0\xff\xff\xff"),
    "amd64-to-i386/v2/guest64/hostile": (132, b"\xf0\xff\xff\xff"),
}
NIGHTLY_TRUNCATED = {
    "i386-to-amd64/escaped/guest64/truncated": 6,
    "amd64-to-i386/extended/guest64/truncated": 70_000,
    "i386-to-i386/native/guest32/truncated": 4_000_000,
    "amd64-to-amd64/native/guest32/truncated": 6_000,
    "i386-to-amd64/v2/guest32/truncated": 54,
    "amd64-to-i386/v2/guest64/truncated": 3_000_000,
    "amd64-to-amd64/v2/guest64/truncated": 8_407_000,
}
NIGHTLY_SHAPES = [
    f"{pair}/{column}/{scenario}"
    for pair in ("i386-to-amd64", "amd64-to-i386")
    for column, scenario in [
        ("extended/guest64", "large"), ("escaped/guest64", "sparse"),
        ("native/guest64", "sparse"), ("v2/guest64", "sparse"),
        ("extended/guest32", "pt-heavy"), ("extended/guest64", "pt-heavy"),
        ("v2/guest32", "pt-heavy"), ("extended/guest64", "many-vcpus"),
        ("native/guest64", "many-vcpus"), ("v2/guest64", "many-vcpus"),
    ]
] + [
    "i386-to-i386/native/guest64/live", "i386-to-amd64/escaped/guest64/live",
    "amd64-to-i386/escaped/guest64/live", "amd64-to-amd64/native/guest64/live",
    "i386-to-amd64/extended/guest32/live", "i386-to-amd64/v2/guest32/live",
    "amd64-to-i386/v2/guest32/live",
]


def test_the_nightly_cells_are_those_ci_always_ran() -> None:
    by_scenario = {s: [c for c in NIGHTLY_CELLS if c.scenario == s] for s in DERIVED}
    assert {c.id: c.patch for c in by_scenario["hostile"]} == NIGHTLY_HOSTILE
    assert {c.id: c.truncate_at for c in by_scenario["truncated"]} == NIGHTLY_TRUNCATED
    assert [c.id for c in NIGHTLY_CELLS if c.scenario in DERIVED[2:] and c.scenario != "pingpong"
            ] == NIGHTLY_SHAPES
    pingpong = by_scenario["pingpong"]
    assert len(pingpong) == 8
    assert {c.hops for c in pingpong} == {("i386-a", "amd64-a", "i386-b", "amd64-b")}
    for cell in pingpong:
        assert cell.expect.outcome is Outcome.IDENTICAL
    for cell in by_scenario["hostile"] + by_scenario["truncated"]:
        assert cell.expect.outcome is Outcome.REFUSED and cell.expect.exit_codes == {3}


def test_a_larger_selection_keeps_the_nightly_cells() -> None:
    every = {c.id for c in EVERY}
    assert {c.id for c in NIGHTLY_CELLS} <= every


# -- Rings and chains --


@pytest.mark.parametrize("size", range(2, len(ARCHES) + 1))
def test_every_ring_visits_each_selected_arch_once_changing_abi_where_it_can(size: int
                                                                             ) -> None:
    for arches in itertools.combinations(ARCHES, size):
        cycle = ring(arches)
        assert sorted(cycle) == sorted(arches) and cycle[0] == arches[0]
        steps = ring_pairs(arches)
        assert [s for s, _ in steps] == list(cycle) and sorted(d for _, d in steps) == sorted(
            arches)
        changing = sum(differences(a, b) > 0 for a, b in steps)
        best = max(sum(differences(a, b) > 0 for a, b in zip(p, p[1:] + p[:1], strict=True))
                   for p in itertools.permutations(arches))
        assert changing == best
        hops = chain(arches)
        assert len(hops) == 2 * size and len(set(hops)) == 2 * size
        assert [arch_of(h) for h in hops] == list(cycle) * 2


def test_the_five_arch_ring_changes_abi_at_every_step() -> None:
    steps = ring_pairs(ARCHES)
    assert len(steps) == 5 and all(differences(a, b) for a, b in steps)
    assert ring(NIGHTLY) == ("i386", "amd64")


def test_each_selection_gets_one_chain_through_exactly_its_arches() -> None:
    for size in range(1, len(ARCHES) + 1):
        for arches in itertools.combinations(ARCHES, size):
            cells = scenarios.on_arches(ALL, arches)
            chains = {c.hops for c in cells if c.scenario == "pingpong"}
            own = {chain(arches)} if size > 1 else set()
            if set(NIGHTLY) < set(arches):
                own.add(chain(NIGHTLY))
            assert chains == own, arches
            ring_steps = set(ring_pairs(arches))
            if set(NIGHTLY) < set(arches):
                ring_steps |= set(ring_pairs(NIGHTLY))
            shaped = {_src_dst(c) for c in cells if c.scenario in ("large", "sparse")}
            assert shaped == ring_steps, arches


def test_shapes_and_chains_expect_what_the_abis_say() -> None:
    for cell in ALL:
        if cell.scenario in DERIVED[2:]:
            assert cell.expect.outcome is Outcome.IDENTICAL and cell.retry is None, cell.id


def test_selected_cells_do_not_explode_with_all_five() -> None:
    counts = {s: sum(c.scenario == s for c in EVERY) for s in DERIVED}
    assert counts["hostile"] <= 2 * len(ARCHES) ** 2 // 3
    assert counts["truncated"] <= len(ARCHES) ** 2
    assert counts["pingpong"] == 16  # the five-arch chain, and the nightly one
    assert counts["large"] == 6  # the five ring steps, and amd64-to-i386 of the nightly ring


# -- Offsets land on the fields they name --


def _stream(cell: Cell, store: Store) -> bytes:
    """The cell's own guest (same seed and parameters as `xsmig create` on its host),
    saved as its source's ABI."""
    d = cell.domain
    name = cell.domain_name
    with store.writing(name) as domain:
        create(GuestSpec(name, d.pages, d.guest_width, d.vcpus, d.max_vcpu_id, cell.seed,
                         d.shape, d.extended_state, d.physmap), domain, 1)
    src: DomainDir = store.get(name)
    return save_bytes(src, cell.encoding, ABIS[arch_of(cell.hops[0])],
                      ext_info=not cell.no_ext_info, rounds=cell.rounds or 1)


LIBXL_PREFIX = 24  # libxl's header (16) and its empty LIBXC_CONTEXT record (8)


def _v2_records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, body_length) of every libxc record of a libxl-framed v2 stream,
    walked from byte 24 + 40, up to the libxc END."""
    assert data[:8] == b"LibxlFmt" and data[16:24] == struct.pack("<II", 1, 0)
    out, at = [], LIBXL_PREFIX + fmt.V2_IHDR.size + fmt.V2_DHDR.size
    while at < len(data):
        rtype, length = fmt.V2_RHDR.unpack_from(data, at)
        out.append((at, rtype, length))
        at += fmt.V2_RHDR.size + -(-length // 8) * 8
        if rtype == fmt.REC_END:
            break
    return out


def _legacy_chunks(data: bytes, src: str) -> list[dict[str, object]]:
    report = inspect_stream(io.BytesIO(data), own=ABIS[src])
    return list(report["chunks"])


def _restore_fails_cleanly(store: Store, data: bytes, dst: str, at: int) -> str:
    """Restored as the destination's ABI: exit 3 at the patched or cut byte."""
    err = expect_error(StreamError, store, data, own=ABIS[dst])
    assert isinstance(err, StreamError) and err.exit_code == 3 and err.offset == at, err
    return str(err)


HOSTILE = [c for c in ALL if c.scenario == "hostile"]
TRUNCATED = [c for c in ALL if c.scenario == "truncated"]


@pytest.mark.parametrize("cell", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_patch_lands_on_the_field_it_names(cell: Cell, store: Store) -> None:
    src, dst = _src_dst(cell)
    data = _stream(cell, store)
    assert cell.patch is not None
    at, value = cell.patch
    order = "<" if abi_of(src).byte_order == "little" or cell.encoding == "v2" else ">"
    if cell.encoding == "escaped":
        first = _legacy_chunks(data, src)[0]
        assert first["kind"] == "batch" and first["offset"] == at
        assert struct.unpack_from(f"{order}i", data, at)[0] == first["count"]
        assert struct.unpack(f"{order}i", value)[0] > fmt.MAX_BATCH
    else:
        page_data = next(r for r in _v2_records(data) if r[1] == fmt.REC_PAGE_DATA)
        assert page_data[0] + 4 == at
        assert struct.unpack_from("<I", data, at)[0] == page_data[2]
        assert struct.unpack("<I", value)[0] == 0xFFFFFFF0
    patched = data[:at] + value + data[at + len(value):]
    error = _restore_fails_cleanly(store, patched, dst, at)
    # The reader saw the value the patch meant: written in the stream's byte order.
    named = f"batch of {HUGE_BATCH} pages" if cell.encoding == "escaped" else str(HUGE_LENGTH)
    assert named in error, error


@pytest.mark.parametrize("cell", TRUNCATED, ids=[c.id for c in TRUNCATED])
def test_truncation_lands_in_the_region_it_names(cell: Cell, store: Store) -> None:
    src, dst = _src_dst(cell)
    cut = next(k for k in CUTS if k.relation == relation(src, dst)
               and k.encoding == cell.encoding and guest_width(k, src) == cell.domain.guest_width)
    data = _stream(cell, store)
    assert cell.truncate_at is not None
    at = cell.truncate_at
    assert 0 < at < len(data)
    if cell.encoding == "v2":
        if cut.region == "v2 domain header":
            start = LIBXL_PREFIX + fmt.V2_IHDR.size
            assert start <= at < start + fmt.V2_DHDR.size
        else:
            kinds = {"PAGE_DATA": {fmt.REC_PAGE_DATA},
                     "vCPU records": {fmt.REC_X86_PV_VCPU_BASIC, fmt.REC_X86_PV_VCPU_EXTENDED,
                                      fmt.REC_X86_PV_VCPU_XSAVE}}[cut.region]
            inside = [r for r in _v2_records(data)
                      if r[0] <= at < r[0] + fmt.V2_RHDR.size + r[2]]
            assert inside and inside[0][1] in kinds, (cut.region, inside)
    else:
        chunks = _legacy_chunks(data, src)
        first = int(chunks[0]["offset"])  # type: ignore[call-overload]
        assert chunks[0]["kind"] == "batch"
        after_first = int(chunks[1]["offset"])  # type: ignore[call-overload]
        body_end = next(int(c["offset"]) for c in chunks  # type: ignore[call-overload]
                        if c["kind"] != "batch")
        region = {"header": (0, first), "first batch": (first, after_first),
                  "batches": (first, body_end), "first batch count": (first, first + 4)}
        low, high = region[cut.region]
        assert low < at < high, (cut.region, low, at, high)
    assert "truncated" in _restore_fails_cleanly(store, data[:at], dst, at)
