#!/usr/bin/env python3
"""Matrix cells per minute and repro times, from the runner's own commands and reports.

  matrix    `python -m testbed matrix --select SEL`: wall time of the whole command
            (host start-up included) and cells per minute over every cell but the
            fault cells (scenario names containing "fault": they restart containers
            and are reported on their own line), plus the cost model's split
  repro     `python -m testbed repro CELL --no-keep` for a small cell and the 256 MiB
            cell: wall time of the command, hosts and artifacts included

  python bench/matrix.py                          # whole matrix, both repros
  python bench/matrix.py --select cold            # a selection
  python bench/matrix.py --quick                  # one cell, one small repro (CI)
  python bench/matrix.py --repo DIR               # time another checkout's runner
  python bench/matrix.py --no-matrix --quick --compare DIR --repeat 3
                                    # repro before (DIR) / after (--repo), interleaved
  python bench/matrix.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMALL = "i386-to-amd64/escaped/guest64/cold"
LARGE = "i386-to-amd64/extended/guest64/large"


def timed(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}")
    return seconds


def matrix(repo: Path, select: str | None, jobs: int | None, tmp: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "testbed", "matrix", "--report-dir", str(tmp / "matrix")]
    if select:
        argv += ["--select", select]
    if jobs:
        argv += ["--jobs", str(jobs)]
    seconds = timed(argv, repo)
    doc = json.loads((tmp / "matrix" / "results.json").read_text())
    cells = doc["cells"]
    plain = [c for c in cells if "fault" not in c["scenario"]]
    faults = [c for c in cells if "fault" in c["scenario"]]
    phases = {p: sum(c.get(f"{p}_seconds", 0.0) for c in plain)
              for p in ("setup", "transfer", "check")}
    return {
        "select": select, "jobs": doc["meta"].get("jobs"), "seconds": seconds,
        "runner_seconds": doc["meta"].get("seconds"),
        "host_setup_seconds": doc["meta"].get("host_setup_seconds"),
        "cells": len(plain), "fault_cells": len(faults),
        "cells_per_minute": len(plain) / seconds * 60,
        "cell_seconds_sum": sum(c["seconds"] for c in plain),
        "fault_cell_seconds_sum": sum(c["seconds"] for c in faults),
        "phases": phases,
    }


def repro(repo: Path, cell: str, tmp: Path) -> float:
    return timed([sys.executable, "-m", "testbed", "repro", cell, "--no-keep",
                  "--report-dir", str(tmp / "repro")], repo)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--select", default=None, help="matrix selection (default: every cell)")
    p.add_argument("--jobs", type=int, default=None, help="--jobs for the matrix (default: its)")
    p.add_argument("--quick", action="store_true", help="one cell, one small repro")
    p.add_argument("--no-matrix", action="store_true", help="repros only")
    p.add_argument("--no-repro", action="store_true", help="matrix only")
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose runner is timed")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--compare", type=Path, default=None, metavar="DIR",
                   help="time each repro in this checkout too (before), alternating with --repo")
    p.add_argument("--repeat", type=int, default=1, help="repros per cell (and per checkout)")
    args = p.parse_args()
    select = SMALL if args.quick else args.select
    report: dict[str, Any] = {"command": " ".join(sys.argv), "repo": str(args.repo)}
    with tempfile.TemporaryDirectory(prefix="xsmig-bench-matrix-") as tmp:
        if not args.no_matrix:
            report["matrix"] = m = matrix(args.repo, select, args.jobs, Path(tmp))
            split = ", ".join(f"{k} {v:.1f}s" for k, v in m["phases"].items())
            print(f"matrix ({select or 'all cells'}, jobs={m['jobs']}): {m['cells']} cells in "
                  f"{m['seconds']:.1f}s = {m['cells_per_minute']:.1f} cells/min (target >= 40); "
                  f"hosts {m['host_setup_seconds']:.1f}s; cells' own time "
                  f"{m['cell_seconds_sum']:.1f}s: {split}", flush=True)
            if m["fault_cells"]:
                print(f"  fault cells: {m['fault_cells']}, own time "
                      f"{m['fault_cell_seconds_sum']:.1f}s (not counted above)")
        if not args.no_repro:
            report["repro"] = r = {}
            report["repro_runs"] = runs = {}
            for cell in (SMALL,) if args.quick else (SMALL, LARGE):
                target = "10 s" if cell == SMALL else "120 s"
                for _ in range(args.repeat):
                    for tag, repo in (("before", args.compare), ("after", args.repo)):
                        if repo is None:
                            continue
                        seconds = repro(repo, cell, Path(tmp))
                        runs.setdefault(f"{tag} {cell}", []).append(seconds)
                        print(f"repro {cell} ({tag if args.compare else repo}): {seconds:.1f}s "
                              f"(target < {target}), load {os.getloadavg()[0]:.1f}", flush=True)
                r[cell] = statistics.median(runs[f"after {cell}"])
                if args.compare is not None:
                    before = statistics.median(runs[f"before {cell}"])
                    print(f"repro {cell}: median before {before:.1f}s, after {r[cell]:.1f}s, "
                          f"after/before {r[cell] / before:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
