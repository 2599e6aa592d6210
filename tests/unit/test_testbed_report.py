"""Grid rendering and the four report files, from hand-made results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console

from testbed.cells.results import FAILED, PASSED, REFUSED, CellResult, HopRecord
from testbed.reports import report


def result(cell_id: str, verdict: str, **kw: object) -> CellResult:
    pair, enc, guest, scenario = cell_id.split("/")
    base: dict[str, object] = dict(
        id=cell_id,
        scenario=scenario,
        pair=pair,
        column=f"{enc}/{guest}",
        hosts=["a", "b"],
        seed=7,
        expected="identical",
        actual="identical",
        verdict=verdict,
        repro=f"python3 -m testbed repro {cell_id}",
    )
    base.update(kw)
    return CellResult(**base)  # type: ignore[arg-type]


RESULTS = [
    result(
        "i386-to-amd64/escaped/guest64/cold",
        PASSED,
        bytes=8 << 20,
        seconds=3.0,
        mib_per_s=4.0,
        hops=[HopRecord("i386-a", "amd64-b", "identical", "identical", 8 << 20, 2.0, 4.0, 0, 0)],
    ),
    result(
        "i386-to-amd64/native/guest32/cold",
        FAILED,
        expected="identical",
        actual="different: digest",
        message="hop 1 i386-a->amd64-b: expected identical",
        artifacts=["artifacts/x/hop1-try1.stream", "artifacts/x/diff.txt"],
    ),
    result("amd64-to-i386/extended/guest64/legacy", REFUSED, expected="refused (exit 4)"),
]


def test_grid_rows_are_scenario_and_pair_columns_encoding_by_width() -> None:
    grid = report.build_grid(RESULTS)
    assert grid.rows == [("cold", "i386-to-amd64"), ("legacy", "amd64-to-i386")]
    assert grid.columns == ["native/guest32", "escaped/guest64", "extended/guest64"]
    assert grid.at(("cold", "i386-to-amd64"), "native/guest32") is RESULTS[1]
    assert grid.at(("legacy", "amd64-to-i386"), "native/guest32") is None


def test_totals_count_expected_refusals_as_passing() -> None:
    t = report.totals(RESULTS)
    assert (t.passed, t.refused, t.failed) == (1, 1, 1)
    assert t.line() == "2 passed, 1 failed"


def test_terminal_grid_shows_each_verdict_and_the_failure() -> None:
    console = Console(record=True, width=160, force_terminal=False)
    report.print_grid(RESULTS, console)
    text = console.export_text()
    assert "✓" in text and "⊘ ref" in text and "✗ FAIL" in text
    assert "FAILED i386-to-amd64/native/guest32/cold" in text
    assert "repro: python3 -m testbed repro i386-to-amd64/native/guest32/cold" in text


def test_report_files(tmp_path: Path) -> None:
    paths = report.write_all(RESULTS, tmp_path, 12.5, {"run_id": "r1"})
    assert [p.name for p in paths] == ["junit.xml", "results.json", "report.html", "summary.md"]

    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["i386-to-amd64/native/guest32/cold"]

    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["totals"] == {"cells": 3, "passed": 1, "refused": 1, "failed": 1}
    assert doc["meta"]["run_id"] == "r1"
    assert report.read_json(tmp_path / "results.json") == RESULTS

    page = (tmp_path / "report.html").read_text()
    assert "class=fail" in page and "class=pass" in page and "class=refused" in page
    assert "href='artifacts/x/diff.txt'" in page

    summary = (tmp_path / "summary.md").read_text()
    assert "❌ 1 cell(s) failed" in summary
    assert "| cold | i386-to-amd64 | ❌ **FAIL** | ✅ pass | · |" in summary
    assert "python3 -m testbed repro i386-to-amd64/native/guest32/cold" in summary


def test_all_passing_summary(tmp_path: Path) -> None:
    ok = [r for r in RESULTS if r.verdict != FAILED]
    report.write_summary(ok, tmp_path / "s.md", 1.0)
    assert "every cell as expected" in (tmp_path / "s.md").read_text()
