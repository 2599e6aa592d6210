"""The cross-bitness migration matrix, one pytest test per cell.

Cells run concurrently on shared hosts: the session fixture runs every
collected cell on a thread pool (XSMIG_MATRIX_JOBS, default 2) and writes the
reports; each test then asserts its own cell's verdict. `python -m testbed
matrix` drives this module; plain pytest works too, with -k or
XSMIG_MATRIX_SELECT to choose cells. See docs/testbed.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import scenarios
from scenarios.model import Cell
from testbed.cells.results import CellResult
from testbed.runs.selection import select
from testbed.runs.session import Settings, run_matrix

CELLS = scenarios.on_arches(scenarios.all_cells(), scenarios.arches_from_env())

pytestmark = [pytest.mark.integration, pytest.mark.matrix]
if importlib.util.find_spec("pytest_timeout") is not None:
    # The first test's setup runs the whole matrix; every wait inside has its own deadline.
    pytestmark.append(pytest.mark.timeout(0))


def _wanted(request: pytest.FixtureRequest, settings: Settings) -> list[Cell]:
    chosen: list[Cell] = []
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if spec is not None and isinstance(spec.params.get("cell"), Cell):
            chosen.append(spec.params["cell"])
    if not settings.select:
        return chosen
    # Terms are matched against the whole matrix: `python -m testbed matrix` has already
    # deselected the other cells, and an exclusion like `!v2` matches none of those left.
    wanted = {c.id for c in select(scenarios.all_cells(), settings.select)}
    return [c for c in chosen if c.id in wanted]


@pytest.fixture(scope="session")
def matrix_results(request: pytest.FixtureRequest) -> dict[str, CellResult]:
    if hasattr(request.config, "workerinput"):
        # Every xdist worker would run the whole matrix: concurrency is --jobs, inside.
        pytest.fail("run the matrix without pytest-xdist; use XSMIG_MATRIX_JOBS", pytrace=False)
    settings = Settings.from_env()
    cells = _wanted(request, settings)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # Live progress and the grid go straight to the terminal, not into a captured test.
    with capture.global_and_fixture_disabled():
        print()
        results = run_matrix(cells, settings)
    return {r.id: r for r in results}


def _artifact_dir(r: CellResult) -> str:
    report_dir = Settings.from_env().report_dir
    return str(report_dir / Path(r.artifacts[0]).parent) if r.artifacts else "(none)"


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(cell: Cell, matrix_results: dict[str, CellResult]) -> None:
    if cell.id not in matrix_results:
        pytest.skip(f"not selected by {Settings.from_env().select!r}")
    r = matrix_results[cell.id]
    if not r.ok:
        pytest.fail(
            f"{r.message}\nexpected: {r.expected}\nactual: {r.actual}\n"
            f"artifacts: {_artifact_dir(r)}\nrepro: {r.repro}",
            pytrace=False,
        )
