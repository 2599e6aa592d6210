"""The result of one cell, as every report reads it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scenarios.model import Cell, Outcome
from testbed.errors import TestbedError

PASSED = "passed"  # restored identically, as expected
REFUSED = "refused"  # refused cleanly, as expected
FAILED = "failed"  # anything else, including a cell that could not run


@dataclass
class HopRecord:
    src: str
    dst: str
    expected: str
    actual: str
    bytes: int = 0
    seconds: float = 0.0
    mib_per_s: float = 0.0
    save_status: int | None = None
    restore_status: int | None = None
    retried_with: str | None = None


@dataclass
class Attempt:
    """One rerun of a failed cell: its verdict, first message line and artifacts."""

    verdict: str
    message: str = ""
    seconds: float = 0.0
    artifacts: list[str] = field(default_factory=list)  # relative to the report dir


@dataclass
class CellResult:
    id: str
    scenario: str
    pair: str
    column: str
    hosts: list[str]
    seed: int
    expected: str
    actual: str
    verdict: str
    message: str = ""
    seconds: float = 0.0
    bytes: int = 0
    mib_per_s: float = 0.0
    hops: list[HopRecord] = field(default_factory=list)
    # Cost model: where the cell's seconds went. setup: creating the source domain and
    # its digest; transfer: the save | restore streams (all hops, all tries); checks:
    # the rest (digests and lists that judge each hop, destroying the source).
    setup_seconds: float = 0.0
    transfer_seconds: float = 0.0
    check_seconds: float = 0.0
    artifacts: list[str] = field(default_factory=list)  # relative to the report dir
    # Live cells (testbed/cells/live.py): dirty_rate, rounds, pages_per_round, stop, downtime,
    # total_seconds, guest (its counter at the pause).
    live: dict[str, Any] | None = None
    repro: str = ""
    # Against a baseline (testbed/reports/baseline.py): regression, fixed, still-failing, new,
    # flaky or passing; "" when the run had no baseline and the cell is no flake.
    change: str = ""
    baseline_verdict: str | None = None
    # Reruns on fresh hosts with the same seed (--rerun-failures), each kept whole:
    # the verdict above is the first attempt's.
    reruns: list[Attempt] = field(default_factory=list)
    streak: int = 0  # with --history: runs in a row (this one included) the cell failed in
    flake_rate: str = ""  # with --history: "flaky in K of N runs"

    @property
    def phases(self) -> dict[str, float]:
        return {
            "setup": self.setup_seconds,
            "transfer": self.transfer_seconds,
            "checks": self.check_seconds,
        }

    @property
    def ok(self) -> bool:
        return self.verdict in (PASSED, REFUSED)

    @property
    def flaky(self) -> bool:
        """Failed, then as expected on a rerun with the same seed."""
        return not self.ok and any(a.verdict in (PASSED, REFUSED) for a in self.reruns)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        hops = [HopRecord(**h) for h in data.get("hops", [])]
        reruns = [Attempt(**a) for a in data.get("reruns", [])]
        return cls(**{**data, "hops": hops, "reruns": reruns})


def verdict_for(cell: Cell, failure: str | None) -> str:
    if failure is not None:
        return FAILED
    return REFUSED if cell.expect.outcome is Outcome.REFUSED else PASSED


def repro_command(cell_id: str, seed: int, refs: dict[str, str] | None = None) -> str:
    """The command that re-runs a cell; the seed follows from the id and is shown for reference."""
    import shlex

    argv = ["python3", "-m", "testbed", "repro", cell_id]
    for host, ref in sorted((refs or {}).items()):
        argv += ["--xsmig-ref", f"{host}={ref}"]
    return f"{shlex.join(argv)}  # seed {seed}"


class ResultsError(TestbedError):
    pass


def read_results(file: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """A matrix run's results.json as (meta, cells): the one reader of another run's
    results (merge, baseline, history); one clear error for anything else."""
    try:
        doc = json.loads(file.read_text())
        cells = [CellResult.from_json(c) for c in doc["cells"]]
        meta = dict(doc.get("meta") or {})
    except OSError as e:
        raise ResultsError(f"cannot read {file}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultsError(f"{file} is not a matrix results.json ({e})") from None
    return meta, cells
