"""The nightly workflow's rules: baseline classes, exit policy, history, and how every
report form shows them (from hand-made results)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

import scenarios
from testbed.cells.results import FAILED, PASSED, REFUSED, Attempt, CellResult
from testbed.reports import baseline, history, report


def cell(cell_id: str, verdict: str, reruns: list[str] = ()) -> CellResult:  # type: ignore[assignment]
    pair, enc, guest, scenario = cell_id.split("/")
    return CellResult(
        cell_id, scenario, pair, f"{enc}/{guest}", ["a", "b"], 7, "identical", "", verdict,
        message="" if verdict != FAILED else "hop 1: expected identical, got refused",
        repro=f"python3 -m testbed repro {cell_id}",
        reruns=[Attempt(v, "", 1.0, [f"reruns/1/artifacts/{v}.txt"]) for v in reruns],
    )


IDS = [f"i386-to-amd64/{e}/guest64/cold" for e in ("native", "escaped", "extended", "v2")]


def test_each_cell_is_sorted_against_the_baseline() -> None:
    before = {IDS[0]: cell(IDS[0], PASSED), IDS[1]: cell(IDS[1], PASSED),
              IDS[2]: cell(IDS[2], FAILED), IDS[3]: cell(IDS[3], FAILED)}
    now = [cell(IDS[0], FAILED, ["failed"]), cell(IDS[1], FAILED, ["passed"]),
           cell(IDS[2], REFUSED), cell(IDS[3], FAILED),
           cell("amd64-to-i386/v2/guest64/cold", FAILED)]
    baseline.compare(now, before)
    assert [r.change for r in now] == [
        baseline.REGRESSION, baseline.FLAKY, baseline.FIXED, baseline.STILL_FAILING, baseline.NEW]
    assert now[0].baseline_verdict == PASSED and now[4].baseline_verdict is None
    # a flake stays a failed first attempt: never counted as a pass
    assert now[1].verdict == FAILED and not now[1].ok and now[1].flaky


def test_only_regressions_fail_by_default_any_fails_on_every_unexpected_cell() -> None:
    now = [cell(IDS[0], FAILED), cell(IDS[1], FAILED, ["passed"]), cell(IDS[2], PASSED)]
    baseline.compare(now, {IDS[1]: cell(IDS[1], PASSED), IDS[2]: cell(IDS[2], PASSED)})
    assert [r.change for r in now] == [baseline.NEW, baseline.FLAKY, baseline.PASSING]
    assert baseline.failing(now, "regression") == []
    assert baseline.failing(now, "any") == now[:2]
    baseline.compare(now, {r.id: cell(r.id, PASSED) for r in now})
    assert baseline.failing(now, "regression") == [now[0]]
    assert baseline.default_fail_on(True) == "regression"
    assert baseline.default_fail_on(False) == "any"


def test_a_baseline_is_a_results_json_or_its_directory(tmp_path: Path) -> None:
    report.write_all([cell(IDS[0], PASSED)], tmp_path, 1.0, {})
    assert list(baseline.load(tmp_path)) == [IDS[0]]
    assert list(baseline.load(tmp_path / "results.json")) == [IDS[0]]
    with pytest.raises(baseline.BaselineError, match="cannot read"):
        baseline.load(tmp_path / "nothing")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(baseline.BaselineError, match=r"not a matrix results\.json"):
        baseline.load(tmp_path / "bad.json")


def test_history_keeps_n_runs_and_counts_streaks_and_flakes(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    outcomes = [  # oldest first: (escaped verdict, its reruns)
        (PASSED, []), (FAILED, ["passed"]), (FAILED, []), (FAILED, []),
    ]
    for i, (verdict, reruns) in enumerate(outcomes):
        d = tmp_path / f"run{i}"
        report.write_all([cell(IDS[1], verdict, reruns)], d, 1.0, {})
        history.record(d / "results.json", hist, f"r{i}", keep=3)
        # names sort by time; runs within one second need distinct names
        newest = history.latest(hist)
        assert newest is not None
        newest.rename(hist / f"{i:04d}.json")
    assert [p.name for p in history.runs(hist)] == ["0001.json", "0002.json", "0003.json"]
    now = [cell(IDS[1], FAILED), cell(IDS[0], PASSED)]
    assert history.annotate(now, hist) == 3
    # failed in all three kept runs and now; flaky once in those four
    assert now[0].streak == 4 and now[0].flake_rate == "flaky in 1 of 4 runs"
    assert now[1].streak == 0 and now[1].flake_rate == ""


def test_every_report_form_shows_the_classes(tmp_path: Path) -> None:
    now = [cell(IDS[0], FAILED, ["failed"]), cell(IDS[1], FAILED, ["passed"]),
           cell(IDS[2], PASSED)]
    baseline.compare(now, {r.id: cell(r.id, PASSED) for r in now})
    meta = {"comparison": baseline.summarize(now, "base/results.json").to_json()}
    report.write_all(now, tmp_path, 2.0, meta)

    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["totals"]["regression"] == 1 and doc["totals"]["flaky"] == 1
    assert doc["meta"]["comparison"]["baseline"] == "base/results.json"
    assert [c["change"] for c in doc["cells"]] == ["regression", "flaky", "passing"]
    assert doc["cells"][1]["reruns"][0]["verdict"] == "passed"
    assert report.read_json(tmp_path / "results.json")[1].flaky

    cases = ET.parse(tmp_path / "junit.xml").getroot().findall(".//testcase")
    props = [{p.get("name"): p.get("value") for p in c.iter("property")} for c in cases]
    assert [p["change"] for p in props] == ["regression", "flaky", "passing"]
    assert cases[0].find("failure") is not None
    assert cases[1].find("failure") is None and cases[1].find("flakyFailure") is not None

    summary = (tmp_path / "summary.md").read_text()
    assert "against base/results.json: 1 regression, 1 flaky, 1 passing" in summary
    assert f"- **regression** `{IDS[0]}`" in summary and "(flaky)" in summary
    page = (tmp_path / "report.html").read_text()
    assert "class='fail regression'" in page and "class='fail flaky'" in page
    assert "rerun 1: passed" in page

    console = Console(record=True, width=200)
    report.print_grid(now, console)
    text = console.export_text()
    assert "✗ REGR" in text and "≈ flaky" in text
    assert f"REGRESSION {IDS[0]}" in text and f"FLAKY {IDS[1]}" in text


def test_old_results_without_the_new_fields_still_load(tmp_path: Path) -> None:
    r = cell(IDS[0], PASSED).to_json()
    for k in ("change", "baseline_verdict", "reruns", "streak", "flake_rate"):
        del r[k]
    (tmp_path / "results.json").write_text(json.dumps({"cells": [r]}))
    assert baseline.load(tmp_path)[IDS[0]].change == ""


def test_the_pytest_consumer_fails_what_fails_the_run_and_xfails_the_rest() -> None:
    """tests/integration/test_matrix.py::test_cell under --matrix-fail-on: a regression
    fails its test, a flake or a still-failing cell is xfailed with its class (never a
    pass), and with `any` every cell not as expected fails."""
    from tests.integration.test_matrix import test_cell as consume

    before = {IDS[0]: cell(IDS[0], PASSED), IDS[1]: cell(IDS[1], PASSED),
              IDS[2]: cell(IDS[2], FAILED), IDS[3]: cell(IDS[3], PASSED)}
    now = [cell(IDS[0], FAILED, ["failed"]), cell(IDS[1], FAILED, ["passed"]),
           cell(IDS[2], FAILED), cell(IDS[3], PASSED)]
    baseline.compare(now, before)
    results = {r.id: r for r in now}
    from testbed.runs.session import Settings

    def outcome(cell_id: str, fail_on: str) -> str:
        chosen = next(c for c in scenarios.all_cells() if c.id == cell_id)
        try:
            consume(chosen, results, Settings(jobs=1), fail_on)
        except pytest.xfail.Exception as exc:  # a subclass of fail's: asked first
            return f"xfailed: {exc}"
        except pytest.fail.Exception as exc:
            return f"failed: {str(exc).splitlines()[0]}"
        return "passed"

    assert outcome(IDS[0], "regression").startswith("failed: regression: hop 1")
    assert outcome(IDS[1], "regression").startswith("xfailed: flaky (--matrix-fail-on regr")
    assert outcome(IDS[2], "regression").startswith("xfailed: still-failing")
    assert outcome(IDS[3], "regression") == "passed"
    assert [outcome(i, "any").split(":")[0] for i in IDS] == ["failed"] * 3 + ["passed"]


def test_the_nightly_counts_are_checked_once_for_both_entry_points() -> None:
    from testbed.errors import TestbedError
    from testbed.runs import nightly

    nightly.check_counts(0, 1)
    with pytest.raises(TestbedError, match=r"^--rerun-failures must be at least 0"):
        nightly.check_counts(-1, 14)
    with pytest.raises(TestbedError, match="--matrix-history-keep at least 1"):
        nightly.check_counts(0, 0, prefix="--matrix-")
