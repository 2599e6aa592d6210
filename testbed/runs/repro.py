"""`python -m testbed repro CELL_ID`: re-run one cell with its seed and keep everything.

Starts only the hosts the cell uses, keeps them up afterwards (they are
labelled "keep", so no later run reaps them), writes all the artifacts even when
the cell passes (stream, both stderrs, `xsmig inspect`, `xsmig diff`), and
prints the ssh commands to enter the hosts.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.hosts import backends

HELP = "re-run one matrix cell with its seed, keep its hosts up, write its artifacts"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cell_id", metavar="CELL_ID", help="e.g. i386-to-amd64/escaped/guest64/cold"
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the artifacts go (default reports/repro/<cell>)",
    )
    parser.add_argument(
        "--xsmig-ref",
        action="append",
        default=[],
        metavar="HOSTSPEC=GITREF",
        help="run xsmig from a git ref on some hosts, as in `matrix`",
    )
    parser.add_argument("--mode", choices=("qemu", "native"), default="qemu")
    parser.add_argument(
        "--no-keep",
        action="store_true",
        help="remove the hosts at the end after all (for scripted use)",
    )
    backends.configure(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    import scenarios
    from testbed.cells.execute import run_cell, slug
    from testbed.hosts.access import write_access
    from testbed.hosts.hosts import Fleet, new_run_id
    from testbed.hosts.sources import check_refs, parse_refs, resolve_sources
    from testbed.runs.selection import by_id
    from testbed.runs.session import DEFAULT_REPORT_DIR, warm_agents

    console = Console()
    cell = by_id(scenarios.all_cells(), args.cell_id)
    refs = parse_refs(args.xsmig_ref)
    check_refs(refs)
    report_dir = (args.report_dir or DEFAULT_REPORT_DIR.parent / "repro" / slug(cell.id)).resolve()
    names = list(dict.fromkeys(cell.hops))
    mounts, labels = resolve_sources(refs, names)
    console.print(
        f"repro {cell.id}: seed {cell.seed}, domain {cell.domain_name}, "
        f"hosts {' -> '.join(cell.hops)}",
        highlight=False,
    )
    console.print(f"expect: {cell.expect.describe()}", highlight=False)
    start = time.monotonic()
    backend = backends.Backend.from_args(args)
    keep = not args.no_keep and backend.inventory is None  # machines are always cleaned up
    with backends.hosts(
        names,
        backend,
        run_id=new_run_id(),
        mounts=mounts,
        source_labels=labels,
        keep=keep,
        mode=args.mode,
        progress=lambda m: console.print(m, markup=False),
    ) as f:
        # The destinations' bookkeeping agents (their digests come after the stream)
        # start beside the source's set-up instead of after the stream.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm") as pool:
            later = [h for h in dict.fromkeys(cell.hops) if h != cell.hops[0]]
            pool.submit(warm_agents, f, later, 1)
            result = run_cell(cell, f, report_dir, refs=refs, keep_artifacts=True)
        access = write_access(f, report_dir) if keep and isinstance(f, Fleet) else []
    seconds = time.monotonic() - start
    style = {"passed": "green", "refused": "cyan"}.get(result.verdict, "bold red")
    console.print(
        f"[{style}]{result.verdict}[/] {cell.id} in {seconds:.1f}s (cell {result.seconds:.1f}s)",
        highlight=False,
    )
    for hop in result.hops:
        console.print(
            f"  {hop.src} -> {hop.dst}: {hop.actual}  [{hop.bytes} bytes, "
            f"{hop.seconds:.2f}s, {hop.mib_per_s:.2f} MiB/s]",
            markup=False,
        )
    if result.message:
        console.print(result.message, markup=False, highlight=False)
    where = report_dir / "artifacts" / slug(cell.id)
    print(f"artifacts in {where}:", flush=True)
    for a in result.artifacts:
        console.print(f"  {Path(a).name}", markup=False, highlight=False)
    for line in access:
        print(line, flush=True)  # plain print: commands to copy must not be wrapped
    return 0 if result.ok else 1
