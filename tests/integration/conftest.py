"""Options of the matrix's pytest consumer (tests/integration/test_matrix.py).

The session's settings come from these options, in this process: nothing travels
through the environment. `python -m testbed matrix` is the runner; these options
exist for a plain `pytest tests/integration` (tox's integration env, CI).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("matrix", "the cross-bitness migration matrix")
    group.addoption("--matrix-select", default=None, metavar="EXPR",
                    help="cells to run (python -m testbed matrix --select syntax)")
    group.addoption("--matrix-arches", default=None, metavar="A,B|all",
                    help="architectures whose pairs run (default: the nightly set)")
    group.addoption("--matrix-jobs", type=int, default=None, metavar="N",
                    help="cells at once (default: one per usable core)")
    group.addoption("--matrix-report-dir", default=None, metavar="DIR",
                    help="where the reports and artifacts go (default reports/matrix)")
    group.addoption("--matrix-mode", default="qemu", choices=("qemu", "native"),
                    help="run the hosts' Python under QEMU (default) or natively")
    group.addoption("--matrix-engine", action="append", default=[], metavar="NAME=URL",
                    help="hosts on this Docker engine (python -m testbed matrix --engine)")
    group.addoption("--matrix-inventory", default=None, metavar="HOSTS.TOML",
                    help="hosts on these machines (python -m testbed matrix --inventory)")
    # The nightly workflow, as `python -m testbed matrix` takes it (docs/testbed.md)
    group.addoption("--matrix-baseline", default=None, metavar="PATH",
                    help="a previous run's results.json or report directory (--baseline)")
    group.addoption("--matrix-history", default=None, metavar="DIR",
                    help="keep this run's results in DIR; its last run is the baseline "
                         "(--history)")
    group.addoption("--matrix-history-keep", type=int, default=14, metavar="N",
                    help="runs kept in --matrix-history")
    group.addoption("--matrix-rerun-failures", type=int, default=0, metavar="N",
                    help="rerun each failed cell up to N times on fresh hosts (flakes)")
    group.addoption("--matrix-fail-on", default=None, choices=("regression", "any"),
                    help="which cells fail their test: regressions only (default with a "
                         "baseline; the others are xfailed with their class) or any cell not "
                         "as expected, flakes included (default without one)")
