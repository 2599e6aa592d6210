"""The nightly workflow around one matrix run: reruns of failed cells (flakes), the
comparison with a baseline, and the history of runs. session.run_matrix calls these
hooks; the rules themselves are in baseline.py, history.py and here."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from scenarios.model import Cell
from testbed.cells.results import Attempt, CellResult
from testbed.errors import TestbedError
from testbed.reports import baseline, history


class Settings(Protocol):
    """What of session.Settings the hooks read (the session imports this module)."""

    report_dir: Path
    baseline: Path | None
    history: Path | None
    history_keep: int
    rerun_failures: int

RERUNS = "reruns"  # report_dir/reruns/<k>/artifacts/<cell>/: attempt k's artifacts


def baseline_path(settings: Settings) -> Path | None:
    if settings.baseline is not None:
        return settings.baseline
    if settings.history is not None:
        return history.latest(settings.history)
    return None


def load_baseline(settings: Settings) -> tuple[str, dict[str, CellResult]] | None:
    path = baseline_path(settings)
    if path is None:
        return None
    return str(path), baseline.load(path)


def check_counts(rerun_failures: int, history_keep: int, prefix: str = "--") -> None:
    """The nightly counts, for the CLI (`--`) and the pytest consumer (`--matrix-`)."""
    if rerun_failures < 0 or history_keep < 1:
        raise TestbedError(f"{prefix}rerun-failures must be at least 0, {prefix}history-keep "
                           "at least 1")


def fail_on(settings: Settings, chosen: str | None) -> str:
    """The policy asked for, or the default: regressions only when there is a baseline.
    Loading it here also fails a bad --baseline before any host starts."""
    return chosen or baseline.default_fail_on(load_baseline(settings) is not None)


def rerun_failures(
    results: list[CellResult],
    cells: Sequence[Cell],
    settings: Settings,
    run_fresh: Callable[[list[Cell], Path], list[CellResult]],
    console: Any,
) -> None:
    """Rerun each failed cell alone on fresh hosts with the same seed, up to N times,
    until it passes. Every attempt is kept (verdict, message, artifacts) in the cell's `reruns`;
    the cell's own verdict stays the first attempt's, so a flake is never a pass.
    run_fresh(cells, report_dir): the cells on freshly started hosts, artifacts kept."""
    by_id = {c.id: c for c in cells}
    for k in range(1, settings.rerun_failures + 1):
        todo = [r for r in results if not r.ok and not r.flaky]
        if not todo:
            return
        console.print(
            f"rerun {k}/{settings.rerun_failures}: {len(todo)} failed cell(s) on fresh hosts, "
            "same seeds",
            highlight=False,
        )
        where = settings.report_dir / RERUNS / str(k)
        shutil.rmtree(where, ignore_errors=True)
        # Each cell alone on its own fresh hosts: a cell that failed because of what ran
        # beside it (host state, load) must get the chance to pass.
        again = [run_fresh([by_id[r.id]], where)[0] for r in todo]
        prefix = where.relative_to(settings.report_dir).as_posix()
        for r, a in zip(todo, again, strict=True):
            r.reruns.append(
                Attempt(
                    a.verdict,
                    (a.message.splitlines() or [""])[0],
                    a.seconds,
                    [f"{prefix}/{p}" for p in a.artifacts],
                )
            )


def compare(
    results: Sequence[CellResult],
    before: tuple[str, dict[str, CellResult]] | None,
    settings: Settings,
) -> baseline.Comparison:
    if before is None:
        baseline.mark_flakes(results)
    else:
        baseline.compare(results, before[1])
    if settings.history is not None:
        history.annotate(results, settings.history)
    return baseline.summarize(results, before[0] if before else None)


def meta(comparison: baseline.Comparison, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"comparison": comparison.to_json()}
    if settings.rerun_failures:
        out["rerun_failures"] = settings.rerun_failures
    if settings.history is not None:
        out["history"] = str(settings.history)
    return out


def record(settings: Settings, run_id: str) -> None:
    if settings.history is not None:
        history.record(
            settings.report_dir / "results.json", settings.history, run_id, settings.history_keep
        )


def exit_status(results: Sequence[CellResult], fail_on: str) -> int:
    return 1 if baseline.failing(results, fail_on) else 0
