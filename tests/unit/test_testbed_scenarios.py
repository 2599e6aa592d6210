"""The declared cells and expectations, checked against the oracle as the brief words it."""

from __future__ import annotations

import itertools

import scenarios
from scenarios.hosts import BY_NAME, HOSTS, PAIRS
from scenarios.model import ENCODINGS, GUEST_WIDTHS, Outcome

CELLS = scenarios.all_cells()  # every selection's
NIGHTLY_CELLS = scenarios.on_arches(CELLS, ("i386", "amd64"))
BY_ID = {c.id: c for c in CELLS}
ARCH_PAIRS = [f"{a}-to-{b}" for a, b in itertools.product(("i386", "amd64"), repeat=2)]


def test_ids_are_unique_and_readable() -> None:
    assert len(BY_ID) == len(CELLS)
    assert "i386-to-amd64/escaped/guest64/cold" in BY_ID


def test_hosts_have_distinct_frame_identities_and_pairs_cross_hosts() -> None:
    assert len({h.host_id for h in HOSTS}) == len(HOSTS)
    assert set(ARCH_PAIRS) <= set(PAIRS)
    assert len(PAIRS) == 25  # every ordered pair of the five architectures
    for cell in CELLS:
        for src, dst in itertools.pairwise(cell.hops):
            assert src != dst, cell.id
            assert BY_NAME[src].host_id != BY_NAME[dst].host_id


def test_cold_covers_every_encoding_width_and_pair_and_expects_identical() -> None:
    for pair, enc, width in itertools.product(ARCH_PAIRS, ENCODINGS, GUEST_WIDTHS):
        cell = BY_ID[f"{pair}/{enc}/guest{width}/cold"]
        assert cell.expect.outcome is Outcome.IDENTICAL


def test_pingpong_goes_i386_amd64_i386_amd64_per_encoding() -> None:
    for enc in ENCODINGS:
        cell = BY_ID[f"i386-to-amd64-to-i386-to-amd64/{enc}/guest64/pingpong"]
        assert [BY_NAME[h].arch for h in cell.hops] == ["i386", "amd64", "i386", "amd64"]
        assert len(set(cell.hops)) == 4


def test_no_ext_info_follows_the_mails_rule() -> None:
    """Same width restores without flags (R5 proves i386; the mail's rule reads an amd64
    stream as 64-bit on amd64); an amd64 stream on i386 fails naming --source-width,
    and the retry with --source-width 64 restores."""
    for pair in ARCH_PAIRS:
        width = 32 if pair.startswith("i386") else 64  # the source toolstack's width
        cell = BY_ID[f"{pair}/native/guest{width}/no-ext-info"]
        assert cell.no_ext_info
        if pair != "amd64-to-i386":
            assert cell.expect.outcome is Outcome.IDENTICAL and cell.retry is None
        else:
            assert cell.expect.outcome is Outcome.REFUSED
            assert cell.expect.exit_codes == {3, 4}
            assert cell.expect.message_contains == "--source-width"
            assert cell.retry is not None and cell.retry.source_width == 64
            assert cell.retry.expect.outcome is Outcome.IDENTICAL


def test_legacy_profile_reads_only_native_of_its_own_width() -> None:
    for pair, enc, width in itertools.product(ARCH_PAIRS, ENCODINGS, GUEST_WIDTHS):
        cell = BY_ID[f"{pair}/{enc}/guest{width}/legacy"]
        assert cell.profile == "legacy"
        src, dst = pair.split("-to-")
        if enc == "native" and src == dst:
            assert cell.expect.outcome is Outcome.IDENTICAL
        else:
            assert cell.expect.outcome is Outcome.REFUSED
            assert cell.expect.exit_codes <= {3, 4}


def test_truncated_cells_expect_a_malformed_stream_refusal() -> None:
    cut = [c for c in CELLS if c.truncate_at is not None]
    assert cut
    for cell in cut:
        assert cell.expect.outcome is Outcome.REFUSED and cell.expect.exit_codes == {3}


def test_required_guest_shapes_are_present() -> None:
    large = [c for c in CELLS if c.scenario == "large"]
    assert large and all(c.domain.pages * 4096 >= 256 << 20 for c in large)
    nightly_large = {c.pair for c in NIGHTLY_CELLS if c.scenario == "large"}
    assert nightly_large == {"i386-to-amd64", "amd64-to-i386"}
    assert any(c.domain.shape == "sparse" for c in CELLS)
    assert any(c.domain.shape == "pt-heavy" for c in CELLS)
    assert any(c.domain.vcpus == 24 and c.domain.max_vcpu_id == 200 for c in CELLS)
    assert any(c.rounds == 3 for c in CELLS)


def test_seeds_and_domain_names_are_deterministic_and_distinct() -> None:
    again = {c.id: (c.seed, c.domain_name) for c in scenarios.all_cells()}
    assert again == {c.id: (c.seed, c.domain_name) for c in CELLS}
    assert len({c.domain_name for c in CELLS}) == len(CELLS)
    assert all(0 <= c.seed < 2**31 for c in CELLS)


def test_hostile_cells_patch_the_first_batch_count_or_record_length_and_expect_exit_3() -> None:
    hostile = [c for c in NIGHTLY_CELLS if c.scenario == "hostile"]
    assert {c.pair for c in hostile} == {"i386-to-amd64", "amd64-to-i386"}
    # Worked out by hand (docs/stream-format.md): escaped guest64 first batch count at
    # 5252; v2 guest64 (libxl framing: 16 + 8 before the libxc stream; version 2, no
    # STATIC_DATA_END) first PAGE_DATA header at 128, its body_length at 132.
    patches = {"escaped": (5252, b"\x00\x20\x00\x00"), "v2": (132, b"\xf0\xff\xff\xff")}
    assert {c.encoding for c in hostile} == set(patches)
    for cell in hostile:
        assert cell.patch == patches[cell.encoding]
        assert cell.expect.outcome is Outcome.REFUSED and cell.expect.exit_codes == {3}


ALL_ARCHES = ("i386", "amd64", "armhf", "arm64", "s390x")
# Stream ABIs written out: (word size, uint64 alignment, byte order).
STREAM_ABI = {"i386": (4, 4, "l"), "amd64": (8, 8, "l"), "armhf": (4, 8, "l"),
              "arm64": (8, 8, "l"), "s390x": (8, 8, "b")}


def test_v2_libxc_cells_and_the_framing_chain() -> None:
    """The bare libxc column: every pair, both guest widths, guests without a physmap
    (which that format cannot carry), identical; the convert chain through both
    framings back to native."""
    libxc = [c for c in CELLS if c.scenario == "v2-libxc"]
    assert {c.column for c in libxc} == {"v2-libxc/guest32", "v2-libxc/guest64"}
    assert {c.pair for c in libxc} >= {"i386-to-amd64", "amd64-to-i386", "i386-to-i386"}
    assert all(c.domain.physmap == 0 and c.expect.outcome is Outcome.IDENTICAL for c in libxc)
    chain = [c for c in CELLS if c.scenario == "convert-framings"]
    assert len(chain) == 8 and all(c.convert == ("v2-libxc", "v2", "native") for c in chain)


def test_every_pair_of_the_five_arches_has_derived_cells() -> None:
    for src, dst in itertools.product(ALL_ARCHES, repeat=2):
        pair = f"{src}-to-{dst}"
        for enc, width in itertools.product(ENCODINGS, GUEST_WIDTHS):
            assert BY_ID[f"{pair}/{enc}/guest{width}/cold"].expect.outcome is Outcome.IDENTICAL
            legacy = BY_ID[f"{pair}/{enc}/guest{width}/legacy"].expect
            same = enc == "native" and STREAM_ABI[src] == STREAM_ABI[dst]
            assert legacy.outcome is (Outcome.IDENTICAL if same else Outcome.REFUSED), pair
        no_ext = BY_ID[f"{pair}/native/guest{STREAM_ABI[src][0] * 8}/no-ext-info"]
        # zero bytes 4-7, read in a 32-bit restorer's own width (the mail's rule): misread
        ask = STREAM_ABI[src][0] == 8 and STREAM_ABI[src][2] == "l" and STREAM_ABI[dst][0] == 4
        assert (no_ext.retry is not None) is ask, pair
        assert no_ext.expect.outcome is (Outcome.REFUSED if ask else Outcome.IDENTICAL)


def test_arches_filter_keeps_whole_cells_only() -> None:
    nightly = scenarios.on_arches(CELLS, ("i386", "amd64"))
    assert len(nightly) > 83  # the nightly matrix before fault cells
    assert all({BY_NAME[h].arch for h in c.hops} <= {"i386", "amd64"} for c in nightly)
    s390x = scenarios.on_arches(CELLS, ("amd64", "s390x"))
    hop_pairs = {f"{BY_NAME[a].arch}-to-{BY_NAME[b].arch}"
                 for c in s390x for a, b in itertools.pairwise(c.hops)}
    assert hop_pairs == {"amd64-to-amd64", "amd64-to-s390x", "s390x-to-amd64", "s390x-to-s390x"}


def test_v2_column_where_it_means_something() -> None:
    v2 = {c.scenario for c in CELLS if c.encoding == "v2"}
    assert {"cold", "pingpong", "legacy", "sparse", "many-vcpus", "live", "truncated",
            "hostile"} <= v2
    for cell in CELLS:
        if cell.encoding == "v2" and cell.profile == "legacy":
            assert cell.expect.outcome is Outcome.REFUSED and cell.expect.exit_codes == {4}


def test_convert_cells_round_trip_on_the_source_then_migrate() -> None:
    for pair, width in itertools.product(ARCH_PAIRS, GUEST_WIDTHS):
        cell = BY_ID[f"{pair}/native/guest{width}/convert"]
        assert cell.convert == ("v2", "native")
        assert cell.expect.outcome is Outcome.IDENTICAL
    to_v2 = [c for c in CELLS if c.scenario == "convert-to-v2"]
    assert to_v2 and all(c.convert == ("v2",) for c in to_v2)
