"""`python -m testbed matrix`: run the migration matrix, print the grid, write the reports.

It drives pytest programmatically over tests/integration/test_matrix.py, so
the runner and a plain `pytest` run are the same code path: the selection is
applied at collection (deselected cells do not appear at all), the cells run
concurrently inside the session (--jobs threads over shared hosts), and each
cell is one pytest test that fails when its outcome differs from the
expectation. Exit status: 0 when every selected cell is as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from testbed.errors import TestbedError
from testbed.hosts import backends
from testbed.images.arch import ARCHES, NIGHTLY, parse_arches

HELP = "run the cross-bitness migration matrix (grid, junit.xml, results.json, report.html)"
TEST_FILE = Path(__file__).resolve().parents[2] / "tests" / "integration" / "test_matrix.py"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--select",
        metavar="EXPR",
        help="cells to run: comma-separated globs or id segments, '!' excludes "
        "(e.g. 'cold,!native', 'i386-to-amd64/escaped', '*/guest32/*')",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="cells run at once over the shared hosts (default: one per usable core, "
        "as the run's first line says)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the reports and artifacts go (default reports/matrix)",
    )
    parser.add_argument(
        "--keep-hosts",
        action="store_true",
        help="leave the hosts running and print how to enter them",
    )
    parser.add_argument(
        "--xsmig-ref",
        action="append",
        default=[],
        metavar="HOSTSPEC=GITREF",
        help="run xsmig from a git ref on some hosts (HOSTSPEC: host, arch or "
        "'all'; e.g. i386=v0.1.0): release qualification; repeatable",
    )
    parser.add_argument(
        "--mode",
        choices=("qemu", "native"),
        default="qemu",
        help="run the hosts' Python under QEMU (default) or natively",
    )
    parser.add_argument(
        "--arches",
        default=",".join(NIGHTLY),
        metavar="A,B,...",
        help=f"architectures whose pairs run (default {','.join(NIGHTLY)}, the nightly set; "
        f"'all' = {','.join(ARCHES)})",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only shard K of N (1-based) of the selected cells: deterministic and "
        "balanced, the same slices on every machine; merge with `python -m testbed merge`",
    )
    backends.configure(parser)
    parser.add_argument("--list", action="store_true", help="list the selected cells and exit")


class _Select:
    """A pytest plugin object: keeps only the selected cells."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def pytest_collection_modifyitems(self, config: object, items: list[object]) -> None:
        keep: list[object] = []
        drop: list[object] = []
        for item in items:
            spec = getattr(item, "callspec", None)
            cell = spec.params.get("cell") if spec is not None else None
            (keep if cell is not None and cell.id in self.ids else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)  # type: ignore[attr-defined]
        items[:] = keep


def run(args: argparse.Namespace) -> int:
    import pytest

    import scenarios
    from testbed.hosts.sources import check_refs, parse_refs
    from testbed.reports import report
    from testbed.runs.selection import select
    from testbed.runs.session import DEFAULT_REPORT_DIR, Settings, default_jobs
    from testbed.runs.shard import parse_shard, shard

    arches = parse_arches(args.arches)
    cells = select(scenarios.on_arches(scenarios.all_cells(), arches), args.select)
    if args.shard:
        cells = shard(cells, *parse_shard(args.shard))
    os.environ[scenarios.ENV_ARCHES] = ",".join(arches)
    if args.list:
        for c in cells:
            print(f"{c.id}  seed={c.seed}  expect: {c.expect.describe()}")
        print(f"{len(cells)} cells")
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise TestbedError("--jobs must be at least 1")
    check_refs(parse_refs(args.xsmig_ref))  # fail early on a bad spec or ref
    settings = Settings(
        jobs=args.jobs or default_jobs(),
        report_dir=(args.report_dir or DEFAULT_REPORT_DIR).resolve(),
        keep_hosts=args.keep_hosts,
        ref_specs=list(args.xsmig_ref),
        # Already applied at collection; recorded in results.json. Not with --shard: the
        # session would re-apply it to the slice, where a term may match no cell.
        select=None if args.shard else args.select,
        mode=args.mode,
        backend=backends.Backend.from_args(args),
    )
    results_file = settings.report_dir / "results.json"
    results_file.unlink(missing_ok=True)
    os.environ.update(settings.to_env())
    code = pytest.main(
        [
            str(TEST_FILE),
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "console_output_style=classic",
            "--rootdir",
            str(TEST_FILE.parents[2]),
        ],
        plugins=[_Select({c.id for c in cells})],
    )
    if not results_file.exists():
        print(
            f"error: the matrix did not run to the end (pytest exit {int(code)})", file=sys.stderr
        )
        return 1
    failed = report.totals(report.read_json(results_file)).failed
    return 0 if failed == 0 and int(code) == 0 else 1
