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
