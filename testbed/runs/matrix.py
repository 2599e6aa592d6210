"""`python -m testbed matrix`: run the migration matrix, print the grid, write the reports.

The runner owns the session: it selects the cells, starts the hosts (after building
or reusing the images: a build that cannot work ends the run with one error before
any cell is scheduled), runs the cells `--jobs` at a time and writes the reports.
pytest is a consumer of the same session (tests/integration/test_matrix.py runs it
in-process and turns each cell's result into a test), not its driver. Exit status:
0 when every selected cell is as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.errors import TestbedError
from testbed.hosts import backends
from testbed.images.arch import ARCHES, NIGHTLY, parse_arches

HELP = "run the cross-bitness migration matrix (grid, junit.xml, results.json, report.html)"


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
    nightly = parser.add_argument_group("nightly (docs/testbed.md, 'Nightly against a baseline')")
    nightly.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="PATH",
        help="a previous run's results.json or report directory: sort the cells into "
        "regression, fixed, still failing, new and flaky (default with --history: its last run)",
    )
    nightly.add_argument(
        "--fail-on",
        choices=("regression", "any"),
        default=None,
        help="what fails the run: regressions only (default with a baseline) or any cell "
        "not as expected, flakes included (default without one)",
    )
    nightly.add_argument(
        "--rerun-failures",
        type=int,
        default=0,
        metavar="N",
        help="rerun each failed cell up to N times on fresh hosts, same seed; one that "
        "then passes is flaky (both attempts and their artifacts kept)",
    )
    nightly.add_argument(
        "--history",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep this run's results in DIR (the last --history-keep runs) and show each "
        "failing cell's streak and flake rate",
    )
    nightly.add_argument(
        "--history-keep", type=int, default=14, metavar="N", help="runs kept in --history"
    )


def run(args: argparse.Namespace) -> int:
    import scenarios
    from testbed.hosts.sources import check_refs, parse_refs
    from testbed.reports import baseline, report
    from testbed.runs import nightly
    from testbed.runs.selection import select
    from testbed.runs.session import DEFAULT_REPORT_DIR, Settings, default_jobs, run_matrix
    from testbed.runs.shard import parse_shard, shard

    arches = parse_arches(args.arches)
    cells = select(scenarios.on_arches(scenarios.all_cells(), arches), args.select)
    if args.shard:
        cells = shard(cells, *parse_shard(args.shard))
    if args.list:
        for c in cells:
            print(f"{c.id}  seed={c.seed}  expect: {c.expect.describe()}")
        print(f"{len(cells)} cells")
        return 0
    if not cells:
        raise TestbedError(f"--select {args.select!r} matches no cell (see --list)")
    if args.jobs is not None and args.jobs < 1:
        raise TestbedError("--jobs must be at least 1")
    check_refs(parse_refs(args.xsmig_ref))  # fail early on a bad spec or ref
    nightly.check_counts(args.rerun_failures, args.history_keep)
    settings = Settings(
        jobs=args.jobs or default_jobs(),
        report_dir=(args.report_dir or DEFAULT_REPORT_DIR).resolve(),
        keep_hosts=args.keep_hosts,
        ref_specs=list(args.xsmig_ref),
        select=args.select,
        mode=args.mode,
        backend=backends.Backend.from_args(args),
        baseline=args.baseline.resolve() if args.baseline else None,
        history=args.history.resolve() if args.history else None,
        history_keep=args.history_keep,
        rerun_failures=args.rerun_failures,
    )
    fail_on = nightly.fail_on(settings, args.fail_on)  # a bad --baseline fails here
    results = run_matrix(cells, settings)
    blocking = baseline.failing(results, fail_on)
    if blocking:
        print(f"{len(blocking)} cell(s) fail the run (--fail-on {fail_on})", file=sys.stderr)
    elif report.totals(results).failed:
        print(f"no cell fails the run under --fail-on {fail_on}", file=sys.stderr)
    return 1 if blocking else 0
