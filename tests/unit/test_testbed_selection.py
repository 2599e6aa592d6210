"""Cell selection: globs, id segments, exclusion, and errors that name close matches."""

from __future__ import annotations

import pytest

import scenarios
from testbed.runs.selection import SelectionError, by_id, select, term_matches

CELLS = scenarios.on_arches(scenarios.all_cells(), ("i386", "amd64"))  # the nightly set


def ids(expr: str) -> set[str]:
    return {c.id for c in select(CELLS, expr)}


def test_no_expression_selects_everything() -> None:
    assert len(select(CELLS, None)) == len(CELLS)
    assert len(select(CELLS, "  ")) == len(CELLS)


def test_segment_terms_match_whole_segments_in_order() -> None:
    assert term_matches("escaped/guest64", "i386-to-amd64/escaped/guest64/cold")
    assert not term_matches("guest64/escaped", "i386-to-amd64/escaped/guest64/cold")
    assert not term_matches("escape", "i386-to-amd64/escaped/guest64/cold")
    # "i386-to-i386" must not match "amd64-to-i386" by substring.
    assert not term_matches("i386-to-i386", "amd64-to-i386/native/guest32/cold")


def test_glob_terms_match_the_whole_id() -> None:
    chosen = ids("i386-to-*/escaped/*/cold")
    assert chosen == {
        "i386-to-i386/escaped/guest32/cold",
        "i386-to-i386/escaped/guest64/cold",
        "i386-to-amd64/escaped/guest32/cold",
        "i386-to-amd64/escaped/guest64/cold",
    }


def test_terms_are_or_and_bang_excludes() -> None:
    cold = ids("cold")
    assert len(cold) == 32  # 4 pairs x 4 encodings x 2 guest widths
    assert ids("cold,!native") == {i for i in cold if "/native/" not in i}
    assert ids("truncated,large") == {c.id for c in CELLS if c.scenario in ("truncated", "large")}


def test_selection_keeps_matrix_order() -> None:
    chosen = select(CELLS, "legacy")
    assert chosen == [c for c in CELLS if c.scenario == "legacy"]


def test_unknown_term_lists_close_matches() -> None:
    with pytest.raises(SelectionError, match="close matches: legacy"):
        select(CELLS, "legcy")


def test_selection_that_leaves_nothing_is_an_error() -> None:
    with pytest.raises(SelectionError, match="leaves no cell"):
        select(CELLS, "cold,!cold")


def test_by_id_finds_a_cell_or_names_close_ids() -> None:
    cell = by_id(CELLS, "i386-to-amd64/escaped/guest64/cold")
    assert cell.hops == ("i386-a", "amd64-b")
    with pytest.raises(SelectionError, match=r"i386-to-amd64/escaped/guest64/cold"):
        by_id(CELLS, "i386-to-amd64/escaped/guest64/cod")
