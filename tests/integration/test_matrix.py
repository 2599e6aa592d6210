"""The cross-bitness migration matrix as pytest tests: one test per cell.

pytest consumes the runner's session, it does not drive it: the session-scoped
fixture runs `testbed.session.run_matrix` once, in this process, over the collected
cells (the same function `python -m testbed matrix` calls), and each test asserts
its own cell's result. Settings come from the `--matrix-*` options
(tests/integration/conftest.py); `-k` narrows the cells further. A session that
cannot run at all (an image that cannot be built, no engine) ends pytest with one
message, not one error per cell. See docs/testbed.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import scenarios
from scenarios.model import Cell
from testbed.cells.results import CellResult
from testbed.errors import TestbedError
from testbed.hosts.backends import Backend
from testbed.images.arch import NIGHTLY, parse_arches
from testbed.reports import baseline
from testbed.runs import nightly
from testbed.runs.selection import select
from testbed.runs.session import DEFAULT_REPORT_DIR, Settings, default_jobs, run_matrix

pytestmark = [pytest.mark.integration, pytest.mark.matrix]
if importlib.util.find_spec("pytest_timeout") is not None:
    # The first test's setup runs the whole matrix; every wait inside has its own deadline.
    pytestmark.append(pytest.mark.timeout(0))


def _path(config: pytest.Config, option: str) -> Path | None:
    value = config.getoption(option)
    return Path(value).resolve() if value else None


def _settings(config: pytest.Config) -> Settings:
    rerun, keep = config.getoption("--matrix-rerun-failures"), config.getoption(
        "--matrix-history-keep")
    try:
        nightly.check_counts(rerun, keep, prefix="--matrix-")
    except TestbedError as exc:
        raise pytest.UsageError(str(exc)) from None
    return Settings(
        jobs=config.getoption("--matrix-jobs") or default_jobs(),
        report_dir=_path(config, "--matrix-report-dir") or DEFAULT_REPORT_DIR,
        select=config.getoption("--matrix-select"),
        mode=config.getoption("--matrix-mode"),
        backend=Backend(tuple(config.getoption("--matrix-engine")),
                        _path(config, "--matrix-inventory")),
        baseline=_path(config, "--matrix-baseline"),
        history=_path(config, "--matrix-history"),
        history_keep=keep,
        rerun_failures=rerun,
    )


def _cells(config: pytest.Config) -> list[Cell]:
    arches = parse_arches(config.getoption("--matrix-arches") or ",".join(NIGHTLY))
    return select(scenarios.on_arches(scenarios.all_cells(), arches),
                  config.getoption("--matrix-select"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        try:
            cells = _cells(metafunc.config)
        except TestbedError as exc:  # a bad --matrix-select or --matrix-arches
            raise pytest.UsageError(str(exc)) from None
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


def _collected(request: pytest.FixtureRequest) -> list[Cell]:
    """The cells left after collection and -k: the session runs exactly these."""
    chosen: list[Cell] = []
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if spec is not None and isinstance(spec.params.get("cell"), Cell):
            chosen.append(spec.params["cell"])
    return chosen


@pytest.fixture(scope="session")
def matrix_settings(request: pytest.FixtureRequest) -> Settings:
    return _settings(request.config)


@pytest.fixture(scope="session")
def matrix_fail_on(request: pytest.FixtureRequest, matrix_settings: Settings) -> str:
    """--matrix-fail-on, or the runner's default: regressions only against a baseline."""
    try:
        return nightly.fail_on(matrix_settings, request.config.getoption("--matrix-fail-on"))
    except TestbedError as exc:
        pytest.exit(f"the matrix could not run: {exc}", returncode=1)


@pytest.fixture(scope="session")
def matrix_results(
    request: pytest.FixtureRequest, matrix_settings: Settings
) -> dict[str, CellResult]:
    if hasattr(request.config, "workerinput"):
        # Every xdist worker would run the whole matrix: concurrency is --matrix-jobs, inside.
        pytest.fail("run the matrix without pytest-xdist; use --matrix-jobs", pytrace=False)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # Live progress and the grid go straight to the terminal, not into a captured test.
    with capture.global_and_fixture_disabled():
        print()
        try:
            results = run_matrix(_collected(request), matrix_settings)
        except TestbedError as exc:
            pytest.exit(f"the matrix could not run: {exc}", returncode=1)
    return {r.id: r for r in results}


def _artifact_dir(r: CellResult, settings: Settings) -> str:
    return str(settings.report_dir / Path(r.artifacts[0]).parent) if r.artifacts else "(none)"


def test_cell(
    cell: Cell, matrix_results: dict[str, CellResult], matrix_settings: Settings,
    matrix_fail_on: str,
) -> None:
    r = matrix_results[cell.id]
    if r.ok and not r.flaky:
        return
    text = (f"{r.message}\nexpected: {r.expected}\nactual: {r.actual}\n"
            f"artifacts: {_artifact_dir(r, matrix_settings)}\nrepro: {r.repro}")
    if r in baseline.failing([r], matrix_fail_on):
        pytest.fail(f"{r.change + ': ' if r.change else ''}{text}", pytrace=False)
    # Not as expected, but not what fails the run under this policy (a flake, a cell that
    # failed in the baseline too, a new one): shown as xfailed with its class, never passed.
    pytest.xfail(f"{r.change or 'not as expected'} (--matrix-fail-on {matrix_fail_on}): "
                 f"{r.message}")
