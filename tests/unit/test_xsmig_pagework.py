"""The batch helpers behind per-page work agree with the entry-by-entry definitions."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from xsmig import lanes, p2mtable, pagetable, validate
from xsmig import pagetypes as pt
from xsmig.frames import FrameMap
from xsmig.layout import Layout
from xsmig.stream import format as fmt
from xsmig.stream.emit import batch_words
from xsmig.stream.reader import Batch, record_types
from xsmig.stream.v2reader import split_pfn_words
from xsmig.stream.v2writer import page_data_words

ENTRY = st.integers(min_value=0, max_value=2**64 - 1)
# Tables as guests have them: mostly absent entries, or mostly present ones.
PAGE = st.one_of(
    st.lists(ENTRY, min_size=512, max_size=512),
    st.dictionaries(st.integers(0, 511), ENTRY, max_size=40).map(
        lambda d: [d.get(i, 0) for i in range(512)]),
)


def _page(entries: list[int]) -> bytearray:
    return bytearray(struct.pack("<512Q", *entries))


def _rewrite_one_by_one(entries: list[int], levels: int, translate: dict[int, int]) -> list[int]:
    mask = pagetable.frame_mask(levels)
    out = []
    for e in entries:
        if e & 1:
            e = (e & ~(mask << 12) & 2**64 - 1) | (translate[(e >> 12) & mask] << 12)
        out.append(e)
    return out


@given(PAGE, st.sampled_from([3, 4]), st.integers(0, 2**20))
def test_rewrite_matches_the_entry_by_entry_definition(entries: list[int], levels: int,
                                                       shift: int) -> None:
    mask = pagetable.frame_mask(levels)
    table = {(e >> 12) & mask: (((e >> 12) & mask) + shift) & mask for e in entries}
    page = _page(entries)
    pagetable.rewrite(memoryview(page), levels, lambda fs: [table[f] for f in fs])
    assert list(struct.unpack("<512Q", page)) == _rewrite_one_by_one(entries, levels, table)


@given(PAGE)
def test_present_entries_are_those_with_bit_0(entries: list[int]) -> None:
    index, values = pagetable.present_entries(_page(entries))
    assert index == [i for i, e in enumerate(entries) if e & 1]
    assert values == [e for e in entries if e & 1]


def test_rewrite_names_the_first_refused_entry_and_changes_nothing() -> None:
    entries = [0] * 512
    entries[7] = (5 << 12) | 1
    entries[300] = (9 << 12) | 1
    entries[400] = (11 << 12) | 1
    page = _page(entries)
    before = bytes(page)
    with pytest.raises(pagetable.EntryError) as e:
        pagetable.rewrite(memoryview(page), 4, lambda fs: [-1 if f == 9 else f for f in fs])
    assert (e.value.index, e.value.frame) == (300, 9)
    assert bytes(page) == before


@given(st.lists(st.integers(0, 60), max_size=80))
def test_pfn_runs_cover_the_list_in_consecutive_runs(pfns: list[int]) -> None:
    runs = list(pt.pfn_runs(pfns))
    assert [p for i, j in runs for p in pfns[i:j]] == pfns
    for i, j in runs:
        assert pfns[i:j] == list(range(pfns[i], pfns[i] + j - i))
    for (_, j), (k, _) in itertools.pairwise(runs):
        assert pfns[k] != pfns[j - 1] + 1  # runs are maximal
    assert pt.is_run(pfns) == (len(runs) == 1)


@given(st.lists(st.tuples(st.integers(0, 63), st.sampled_from(sorted(pt.VALID_TYPES))),
                max_size=100))
def test_record_types_matches_the_entry_by_entry_definition(
        entries: list[tuple[int, int]]) -> None:
    pfns = [p for p, _ in entries]
    types = bytes(t for _, t in entries)
    got = bytearray([pt.XTAB]) * 64
    data = record_types(Batch(0, pfns, types, memoryview(b""), 0), got)
    want = bytearray([pt.XTAB]) * 64
    for p, t in entries:
        if t != pt.XTAB:
            want[p] = t
    assert got == want
    assert data == [p for p, t in entries if pt.has_data(t)]


@given(st.integers(1, 5000), st.integers(0, 2**31), st.lists(st.integers(0, 6000)))
def test_frame_maps_batch_calls_match_the_single_ones(size: int, salt: int,
                                                      pfns: list[int]) -> None:
    fm = FrameMap(3, salt, size)
    assert fm.mfns(pfns) == [fm.mfn(p) if p < size else -1 for p in pfns]
    mfns = [fm.mfn(p) for p in pfns if p < size] + pfns
    assert fm.pfns(mfns) == [-1 if (p := fm.pfn(m)) is None else p for m in mfns]


@given(st.lists(ENTRY, min_size=1, max_size=300))
def test_v2_pfn_words_split_as_the_spec_defines(values: list[int]) -> None:
    types, pfns, bad = split_pfn_words(struct.pack(f"<{len(values)}Q", *values))
    assert types == bytes(w >> fmt.V2_TYPE_SHIFT for w in values)
    assert pfns == [w & fmt.V2_PFN_MASK for w in values]
    assert bad == next((i for i, w in enumerate(values) if w & fmt.V2_PFN_RESERVED), None)


# -- whole pages as lanes of one int (xsmig/lanes.py) --

def _lanes(values: list[int]) -> int:
    return lanes.from_bytes(struct.pack(f"<{len(values)}Q", *values))


@given(st.integers(1, 2**28 - 1), st.integers(0, 2**31), st.integers(0, 9),
       st.lists(st.integers(0, 2**40 - 1), min_size=1, max_size=512), st.data())
def test_frame_maps_lane_calls_match_the_single_ones(size: int, salt: int, host: int,
                                                      noise: list[int], data: st.DataObject
                                                      ) -> None:
    fm = FrameMap(host, salt, size)
    n = len(noise)
    pfns = data.draw(st.lists(st.integers(0, size - 1), min_size=n, max_size=n))
    # mostly in range, sometimes not: a pfn at or past p2m_size, any 40-bit frame
    if data.draw(st.booleans()):
        pfns[data.draw(st.integers(0, n - 1))] = data.draw(
            st.one_of(st.just(size), st.integers(size, 2**40 - 1)))
    got = fm.mfn_lanes(_lanes(pfns), n)
    want = fm.mfns(pfns)
    assert (None if -1 in want else want) == (None if got is None else lanes.to_list(got, n))
    mfns = [fm.mfn(p) for p in pfns if p < size]
    mfns += noise[:n - len(mfns)] if data.draw(st.booleans()) else [fm.mfn(0)] * (n - len(mfns))
    got = fm.pfn_lanes(_lanes(mfns), n)
    want = fm.pfns(mfns)
    assert (None if -1 in want else want) == (None if got is None else lanes.to_list(got, n))


@given(st.integers(1, 2**28 - 1), st.integers(0, 2**31), st.data())
def test_frame_maps_range_call_matches_the_single_ones(size: int, salt: int,
                                                       data: st.DataObject) -> None:
    fm = FrameMap(1, salt, size)
    first = data.draw(st.integers(0, size - 1))
    n = data.draw(st.integers(1, min(1100, size - first)))
    pfns = range(first, first + n)
    assert lanes.to_list(fm.mfn_range(pfns), n) == fm.mfns(list(pfns))
    assert lanes.to_list(p2mtable.identity(pfns), n) == list(pfns)


DENSE = st.lists(ENTRY.map(lambda e: e | 1), min_size=512, max_size=512)


@given(DENSE, st.sampled_from([3, 4]), st.integers(1, 2**28 - 1), st.integers(0, 2**31),
       st.booleans())
def test_dense_rewrite_by_lanes_matches_the_per_entry_one(
        entries: list[int], levels: int, size: int, salt: int, in_range: bool) -> None:
    """A dense table through rewrite's lane path, to mfns and back to pfns, gives what the
    per-entry path gives; a refused frame falls back to it (same error, page untouched)."""
    fm = FrameMap(2, salt, size)
    mask = pagetable.frame_mask(levels)
    if in_range:  # frames a table of this domain would hold
        entries = [(e & ~(mask << 12) & 2**64 - 1) | ((((e >> 12) & mask) % size) << 12)
                   for e in entries]
    results = []
    for lane_path in (fm.mfn_lanes, None):
        page = _page(entries)
        try:
            pagetable.rewrite(memoryview(page), levels, fm.mfns, lane_path)
        except pagetable.EntryError as e:
            results.append((e.index, e.frame, bytes(page)))
            continue
        back = bytearray(page)
        pagetable.rewrite(memoryview(back), levels, fm.pfns, lane_path and fm.pfn_lanes)
        results.append((bytes(page), bytes(back)))
    assert results[0] == results[1]
    if in_range:
        assert results[0][1] == _page(entries)  # the round trip is exact


@given(st.lists(st.tuples(st.integers(0, 2**28 - 1), st.sampled_from(sorted(pt.VALID_TYPES))),
                min_size=1, max_size=300),
       st.sampled_from([4, 8]), st.sampled_from(["little", "big"]), st.booleans())
def test_legacy_batch_words_match_the_entry_by_entry_definition(
        entries: list[tuple[int, int]], width: int, order: str, as_range: bool) -> None:
    types = bytes(t for _, t in entries)
    pfns: range | list[int] = [p for p, _ in entries]
    if as_range:  # what all_pages() passes
        pfns = range(entries[0][0], min(entries[0][0] + len(entries), 2**28))
        types = types[:len(pfns)]
    code = {4: "I", 8: "Q"}[width]
    want = struct.pack(("<" if order == "little" else ">") + code * len(types),
                       *((t << 28) | (0 if t == pt.XTAB else p)
                         for p, t in zip(pfns, types, strict=True)))
    assert batch_words(pfns, types, Layout.clean(width, order)) == want


@given(st.lists(st.tuples(st.integers(0, 2**52 - 1), st.integers(0, 15)), min_size=1,
                max_size=300), st.booleans())
def test_v2_page_data_words_match_the_spec(entries: list[tuple[int, int]],
                                           as_range: bool) -> None:
    types = bytes(t for _, t in entries)
    pfns: range | list[int] = [p for p, _ in entries]
    if as_range:
        pfns = range(entries[0][0], min(entries[0][0] + len(entries), 2**52))
        types = types[:len(pfns)]
    assert page_data_words(pfns, types) == struct.pack(
        f"<{len(types)}Q", *((t << fmt.V2_TYPE_SHIFT) | p for p, t in zip(pfns, types,
                                                                          strict=True)))


@given(st.integers(1, 3000), st.integers(0, 2**31), st.sampled_from([3, 4]), st.data())
def test_first_hole_by_lanes_agrees_with_the_per_entry_walk(size: int, salt: int, levels: int,
                                                             data: st.DataObject) -> None:
    """A dense table's verdict (validate.first_hole) is the same with the lane path: none,
    or the first entry naming a hole, a frame not the domain's, or a pfn past p2m_size."""
    fm = FrameMap(4, salt, size)
    holes = data.draw(st.sampled_from([0, 1, 64]))  # in 256: none, a few, a quarter
    types = bytearray(data.draw(st.binary(min_size=size, max_size=size)).translate(
        bytes(pt.XTAB if b < holes else pt.NOTAB for b in range(256))))
    frames = [fm.mfn(p) for p in data.draw(st.lists(st.integers(0, size - 1), min_size=512,
                                                    max_size=512))]
    for _ in range(data.draw(st.integers(0, 2))):  # now and then a frame not the domain's
        frames[data.draw(st.integers(0, 511))] = data.draw(st.integers(0, 2**32 - 1))
    flags = 0x63 if levels == 4 else 0x1
    entries = [(f << 12) | flags for f in frames]
    if levels == 3:
        entries[:4] = [e & ~pagetable.PAE_L3_CLEARED for e in entries[:4]]
    got = [validate.first_hole(memoryview(_page(entries)), 1, levels, fm.pfns, types, lanes_of)
           for lanes_of in (validate.pt_targets_lanes(fm, types), None)]
    assert got[0] == got[1]
    event("no hole" if got[0] is None else "a hole")


def test_a_map_too_wide_for_lanes_takes_the_per_frame_paths() -> None:
    fm = FrameMap(1, 2, 2**29)  # beyond MAX_P2M_SIZE: lanes could carry, so none are used
    pfns = range(2**29 - 600, 2**29 - 88)
    assert fm.mfn_lanes(lanes.iota(pfns.start, 512)) is None
    assert fm.pfn_lanes(_lanes(fm.mfns(list(pfns)))) is None
    assert lanes.to_list(fm.mfn_range(pfns), 512) == fm.mfns(list(pfns))
