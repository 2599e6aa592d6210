"""Soak figures: mismatches and descriptor growth fail the soak; RSS is reported."""

from __future__ import annotations

from testbed.runs.soak import HopFigures, summarise, verdict


def hop(i: int, fds: int, identical: bool = True, rss: int = 50_000) -> HopFigures:
    return HopFigures(i, "i386-a", "amd64-a", identical, 1.0, 100, rss, fds, 3)


def test_flat_run_passes_and_reports_figures() -> None:
    figures = [hop(i, 20 if i == 1 else 24) for i in range(1, 101)]
    s = summarise(figures)
    assert s["hops"] == 100 and s["mismatches"] == 0
    assert (s["fds_first"], s["fds_after_warmup"], s["fds_last"]) == (20, 24, 24)
    assert verdict(s) == []


def test_a_mismatch_fails() -> None:
    s = summarise([hop(1, 20), hop(2, 20, identical=False)])
    assert verdict(s) == ["1 hop(s) did not restore identically"]


def test_descriptor_growth_after_warmup_fails() -> None:
    figures = [hop(i, 20 + i) for i in range(1, 101)]
    problems = verdict(summarise(figures))
    assert len(problems) == 1 and "descriptors" in problems[0]
