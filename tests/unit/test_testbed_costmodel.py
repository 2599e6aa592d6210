"""The cost model: each cell's seconds split into set-up, transfer and checks, in the reports."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.cells.results import PASSED, CellResult
from testbed.reports import report


def cell(cell_id: str, setup: float, transfer: float, checks: float) -> CellResult:
    pair, enc, guest, scenario = cell_id.split("/")
    return CellResult(
        cell_id, scenario, pair, f"{enc}/{guest}", ["a", "b"], 1, "identical", "identical",
        PASSED, seconds=setup + transfer + checks, setup_seconds=setup,
        transfer_seconds=transfer, check_seconds=checks,
    )


CELLS = [
    cell("i386-to-amd64/native/guest32/cold", 1.0, 2.0, 1.0),
    cell("i386-to-amd64/native/guest64/cold", 1.0, 4.0, 1.0),
    cell("amd64-to-amd64/extended/guest64/large", 2.0, 20.0, 2.0),
]


def test_cost_model_sums_phases_per_scenario_and_overall() -> None:
    costs = {c.label: c for c in report.cost_model(CELLS)}
    assert costs["cold"].cells == 2
    assert costs["cold"].phases == {"setup": 2.0, "transfer": 6.0, "checks": 2.0}
    assert costs["all cells"].seconds == 34.0
    assert round(costs["all cells"].share("transfer"), 3) == round(26 / 34, 3)
    assert [c.label for c in report.cost_model(CELLS)] == ["large", "cold", "all cells"]


def test_summary_html_json_and_junit_carry_the_split(tmp_path: Path) -> None:
    report.write_all(CELLS, tmp_path, 30.0, {})
    summary = (tmp_path / "summary.md").read_text()
    assert "## Where the time went" in summary
    assert "| cold | 2 | 10.0 | 5.00 | 2.0 (20%) | 6.0 (60%) | 2.0 (20%) |" in summary
    page = (tmp_path / "report.html").read_text()
    assert "Where the time went" in page and "transfer 20.0 s" in page
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["cells"][2]["transfer_seconds"] == 20.0
    assert report.read_json(tmp_path / "results.json")[0].phases["setup"] == 1.0
    assert 'name="transfer_seconds" value="4.0"' in (tmp_path / "junit.xml").read_text()
