"""`--history DIR`: the last N runs' results, and each failing cell's streak and flake rate.

Each run's results.json is copied into DIR as `<UTC time>-<run id>.json`; the oldest
beyond `keep` are removed. The newest kept run is the next run's baseline unless
`--baseline` names another.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.cells.results import CellResult, ResultsError, read_results

DEFAULT_KEEP = 14


def runs(history: Path) -> list[Path]:
    """Kept runs, oldest first (the names sort by time)."""
    return sorted(history.glob("*.json")) if history.is_dir() else []


def latest(history: Path) -> Path | None:
    kept = runs(history)
    return kept[-1] if kept else None


def _cells(path: Path) -> dict[str, CellResult]:
    try:
        return {c.id: c for c in read_results(path)[1]}
    except ResultsError:
        return {}  # a damaged entry says nothing about any cell


def annotate(results: Sequence[CellResult], history: Path) -> int:
    """Each failed cell's streak (runs in a row it failed, this one included) and flake
    rate over the kept runs plus this one; returns how many past runs were read."""
    past = [_cells(p) for p in runs(history)]
    for r in results:
        if r.ok:
            continue
        streak = 1
        for run in reversed(past):
            before = run.get(r.id)
            if before is None or before.ok:
                break
            streak += 1
        seen = [run[r.id] for run in past if r.id in run] + [r]
        flaky = sum(1 for c in seen if c.flaky)
        r.streak = streak
        r.flake_rate = f"flaky in {flaky} of {len(seen)} runs"
    return len(past)


def record(results_json: Path, history: Path, run_id: str, keep: int = DEFAULT_KEEP) -> Path:
    history.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = history / f"{stamp}-{run_id}.json"
    shutil.copyfile(results_json, dest)
    for old in runs(history)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return dest
