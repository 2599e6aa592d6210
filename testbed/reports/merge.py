"""``python -m testbed merge REPORT_DIR... [--report-dir DIR]``: one report from the shards.

Each runner of a fanned-out matrix (``--shard K/N``) writes its own report directory;
this reads their results.json, checks that no cell appears twice, orders the cells
as the matrix lists them, copies each shard's artifacts, and writes junit.xml,
results.json, report.html and summary.md for the whole run. Exit status as the
matrix's: 0 when every cell is as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from testbed.cells.results import CellResult, ResultsError, read_results
from testbed.errors import TestbedError

HELP = "merge the reports of matrix shards (--shard K/N) into one"


class MergeError(TestbedError):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report_dirs", nargs="+", type=Path, metavar="REPORT_DIR",
                        help="report directories of the shards (each with results.json)")
    parser.add_argument("-o", "--output", "--report-dir", dest="output", type=Path,
                        default=Path("reports/merged"), metavar="DIR",
                        help="where the merged reports go (default reports/merged); "
                        "--report-dir as matrix spells it")


def read_shard(report_dir: Path) -> tuple[dict[str, Any], list[CellResult]]:
    try:
        return read_results(report_dir / "results.json")
    except ResultsError as e:
        raise MergeError(f"{e} (did that shard finish?)") from None


def matrix_order() -> dict[str, int]:
    import scenarios

    return {c.id: i for i, c in enumerate(scenarios.all_cells())}


def merge(report_dirs: list[Path]) -> tuple[list[CellResult], dict[str, Any], dict[str, Path]]:
    """The cells of every shard in matrix order, the merged meta, and each cell's shard."""
    seen: dict[str, Path] = {}
    results: list[CellResult] = []
    metas = []
    for d in report_dirs:
        meta, cells = read_shard(d)
        metas.append({"dir": str(d), **meta})
        for r in cells:
            if r.id in seen:
                raise MergeError(f"cell {r.id} is in both {seen[r.id]} and {d}: the shards "
                                 "overlap (same --shard twice, or different selections?)")
            seen[r.id] = d
            results.append(r)
    order = matrix_order()
    results.sort(key=lambda r: (order.get(r.id, len(order)), r.id))
    seconds = [float(m.get("seconds", 0.0)) for m in metas]
    meta = {
        "merged_from": [str(d) for d in report_dirs],
        "shards": metas,
        "shard_seconds_total": round(sum(seconds), 3),
        "seconds": max(seconds, default=0.0),  # wall time when the shards ran in parallel
    }
    return results, meta, seen


def copy_artifacts(results: list[CellResult], sources: dict[str, Path], out: Path) -> None:
    for r in results:
        for rel in r.artifacts:
            src = sources[r.id] / rel
            dst = out / rel
            if src.is_file() and src.resolve() != dst.resolve():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def run(args: argparse.Namespace) -> int:
    from testbed.reports import report

    out: Path = args.output
    results, meta, sources = merge(args.report_dirs)
    copy_artifacts(results, sources, out)
    paths = report.write_all(results, out, meta["seconds"], meta)
    print(f"merged {len(args.report_dirs)} reports: {report.totals(results).line()}")
    print("reports: " + ", ".join(str(p) for p in paths))
    return 0 if report.totals(results).failed == 0 else 1
