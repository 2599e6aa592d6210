"""One matrix run: settings, hosts, cells on a thread pool with live progress, reports.

Cells share the run's hosts (two per architecture) and run `jobs` at a time;
each cell uses its own domain name, so concurrent cells never collide.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.model import Cell
from testbed.cells.domains import HostProvider
from testbed.cells.execute import run_cell
from testbed.cells.results import FAILED, CellResult
from testbed.errors import TestbedError
from testbed.hosts.backends import Backend, hosts
from testbed.hosts.hosts import Fleet, new_run_id
from testbed.hosts.sources import REPO, parse_refs, resolve_sources
from testbed.reports import report
from testbed.runs import nightly

DEFAULT_REPORT_DIR = REPO / "reports" / "matrix"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(cores: int | None = None) -> int:
    """Cells at once that this machine carries: one per usable core.

    A cell keeps about one core busy: its emulated save and restore overlap each other
    and the runner's SSH pump, while its bookkeeping runs in the hosts' agents. More
    jobs than cores only queue on the CPU (measured: docs/performance.md).
    """
    return max(1, cores if cores is not None else usable_cores())


def jobs_note(jobs: int) -> str:
    """How the run chose its jobs, for the run's first line."""
    cores = usable_cores()
    if jobs == default_jobs(cores):
        return f"jobs={jobs} (default: one per usable core, {cores})"
    return f"jobs={jobs} (set; the default here would be {default_jobs(cores)})"


@dataclass
class Settings:
    jobs: int = field(default_factory=default_jobs)
    report_dir: Path = DEFAULT_REPORT_DIR
    keep_hosts: bool = False
    ref_specs: list[str] = field(default_factory=list)
    select: str | None = None
    mode: str = "qemu"
    backend: Backend = field(default_factory=Backend)
    # The nightly workflow (testbed/runs/nightly.py, reports/baseline.py, reports/history.py)
    baseline: Path | None = None
    history: Path | None = None
    history_keep: int = 14
    rerun_failures: int = 0


def _cost(cell: Cell) -> int:
    """Rough run time, to start the longest cells first (shorter tail on 2 cores)."""
    return cell.domain.pages * (len(cell.hops) - 1) * (cell.rounds or 1) + cell.domain.vcpus * 64


def warm_agents(f: HostProvider, names: Sequence[str], jobs: int) -> None:
    """Start each host's bookkeeping agents at once, while nothing else runs: a cell
    then finds them warm. Best effort: a host that cannot is left to plain commands."""
    hosts = []
    for n in names:
        with contextlib.suppress(TestbedError):
            hosts.append(f.host(n))
    per_host = max(1, min(jobs, 2))
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for fut in [pool.submit(h.warm_agents, per_host) for h in hosts]:
            with contextlib.suppress(TestbedError, OSError):
                fut.result()


def run_cells(
    cells: Sequence[Cell],
    f: HostProvider,
    settings: Settings,
    refs: dict[str, str],
    console: Any,
    *,
    report_dir: Path | None = None,
    keep_artifacts: bool = False,
) -> list[CellResult]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[str, CellResult] = {}
    order = sorted(cells, key=_cost, reverse=True)
    with Progress(
        TextColumn("[bold]matrix"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=len(cells))
        pool = ThreadPoolExecutor(max_workers=settings.jobs, thread_name_prefix="cell")
        try:
            pending: dict[Future[CellResult], Cell] = {
                pool.submit(
                    run_cell,
                    c,
                    f,
                    report_dir or settings.report_dir,
                    refs=refs,
                    keep_artifacts=keep_artifacts,
                ): c
                for c in order
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    cell = pending.pop(fut)
                    r = fut.result()
                    results[cell.id] = r
                    style = {"passed": "green", "refused": "cyan"}.get(r.verdict, "bold red")
                    progress.console.print(
                        f"[{style}]{r.verdict:>7}[/] {r.id}  [dim]{r.seconds:.1f}s"
                        + (f" {r.mib_per_s:.2f} MiB/s" if r.bytes else "")
                        + "[/]",
                        highlight=False,
                    )
                    if r.verdict == FAILED:
                        progress.console.print(
                            f"        {r.message.splitlines()[0]}", markup=False, highlight=False
                        )
                    progress.advance(task)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return [results[c.id] for c in cells]


def run_matrix(cells: Sequence[Cell], settings: Settings, console: Any = None) -> list[CellResult]:
    """Start hosts, run the cells, write the four reports; returns results in matrix order."""
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs: no wrapping of ids and grid rows at 80 columns
            console = Console(width=200)
    start = time.monotonic()
    run_id = new_run_id()
    refs = parse_refs(settings.ref_specs)
    names = sorted({h for c in cells for h in c.hops})
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    before = nightly.load_baseline(settings)  # a bad --baseline fails before any host starts
    console.print(
        f"run {run_id}: {len(cells)} cells on {len(names)} hosts ({settings.backend.describe()}), "
        f"{jobs_note(settings.jobs)}, "
        f"reports in {settings.report_dir}",
        highlight=False,
    )
    results, labels, setup = run_on_fresh_hosts(
        cells, settings, refs, console, run_id=run_id, keep=settings.keep_hosts
    )
    if settings.rerun_failures:

        def run_fresh(again: list[Cell], where: Path) -> list[CellResult]:
            # the passing attempt's artifacts are half the evidence: keep them
            return run_on_fresh_hosts(
                again, settings, refs, console, report_dir=where, keep_artifacts=True
            )[0]

        nightly.rerun_failures(results, cells, settings, run_fresh, console)
    comparison = nightly.compare(results, before, settings)
    seconds = time.monotonic() - start
    meta = {
        "run_id": run_id,
        "jobs": settings.jobs,
        "usable_cores": usable_cores(),
        "mode": settings.mode,
        "backend": settings.backend.describe(),
        "hosts": {n: labels[n] for n in names},
        "host_setup_seconds": round(setup, 3),
        "select": settings.select,
        **nightly.meta(comparison, settings),
    }
    paths = report.write_all(results, settings.report_dir, seconds, meta)
    nightly.record(settings, run_id)
    report.print_grid(results, console)
    if comparison.baseline or comparison.counts:
        console.print(comparison.line(), highlight=False)
    console.print("reports: " + ", ".join(str(p) for p in paths), highlight=False)
    console.print(report.totals(results).line() + f" in {seconds:.1f}s", highlight=False)
    total = report.cost_model(results)[-1]
    console.print(
        f"cells' own time {total.seconds:.1f}s: "
        + ", ".join(f"{p} {total.phases[p]:.1f}s ({total.share(p):.0%})" for p in report.PHASES)
        + f"; {len(results) / seconds * 60:.1f} cells/min",
        highlight=False,
    )
    return results


def run_on_fresh_hosts(
    cells: Sequence[Cell],
    settings: Settings,
    refs: dict[str, str],
    console: Any,
    *,
    run_id: str | None = None,
    keep: bool = False,
    report_dir: Path | None = None,
    keep_artifacts: bool = False,
) -> tuple[list[CellResult], dict[str, str], float]:
    """Start the cells' hosts, run the cells, remove the hosts (unless kept):
    results in matrix order, each host's source label, and the set-up seconds."""
    start = time.monotonic()
    names = sorted({h for c in cells for h in c.hops})
    exports = Path(tempfile.mkdtemp(prefix="xsmig-refs-"))
    mounts, labels = resolve_sources(refs, names, exports)
    for n in names:
        if labels[n] != "worktree":
            console.print(f"  {n} runs xsmig from {labels[n]}", highlight=False)
    with hosts(
        names,
        settings.backend,
        run_id=run_id or new_run_id(),
        mounts=mounts,
        source_labels=labels,
        keep=keep,
        mode=settings.mode,
        progress=lambda m: console.print(m, markup=False, highlight=False),
    ) as f:
        warm_agents(f, names, settings.jobs)
        setup = time.monotonic() - start
        results = run_cells(
            cells, f, settings, refs, console, report_dir=report_dir, keep_artifacts=keep_artifacts
        )
        if keep and isinstance(f, Fleet):  # only containers are kept
            _print_kept(f, report_dir or settings.report_dir)
    if not keep:  # kept hosts still mount their exported sources
        shutil.rmtree(exports, ignore_errors=True)
    return results, labels, setup


def _print_kept(f: Fleet, report_dir: Path) -> None:
    from testbed.hosts.access import write_access

    for line in write_access(f, report_dir):
        print(line, flush=True)  # plain print: commands to copy must not be wrapped
