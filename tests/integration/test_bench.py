"""The benchmarks run once, in their quick mode, so they cannot rot.

No timing is asserted (speed is for docs/performance.md): each bench must finish,
print its report and write its JSON with the figures the docs quote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, out: Path, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *extra, "--json", str(out)],
        capture_output=True, text=True, check=False, timeout=1100,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def test_cellcost_quick(tmp_path: Path) -> None:
    doc = run_bench("cellcost.py", tmp_path / "c.json", "--quick")
    ratio = doc["ratio"]
    assert isinstance(ratio, dict) and ratio["cell/bare"] > 0
    cells = doc["cells"]
    assert isinstance(cells, list) and len(cells) == 1
    assert set(cells[0]["phases"]) == {"setup", "transfer", "checks"}


def test_stream_quick(tmp_path: Path) -> None:
    doc = run_bench("stream.py", tmp_path / "s.json", "--quick")
    ratio = doc["ratio"]
    assert isinstance(ratio, dict)
    assert {"e2e/openssh", "host_pipe/host_copy", "native_pipe/native_copy"} <= set(ratio)


def test_matrix_and_repro_quick(tmp_path: Path) -> None:
    doc = run_bench("matrix.py", tmp_path / "m.json", "--quick")
    matrix, repro = doc["matrix"], doc["repro"]
    assert isinstance(matrix, dict) and matrix["cells"] == 1 and matrix["cells_per_minute"] > 0
    assert isinstance(repro, dict) and len(repro) == 1


def test_throughput_quick(tmp_path: Path) -> None:
    doc = run_bench("throughput.py", tmp_path / "t.json", "--sizes", "256", "--repeat", "1")
    results = doc["results"]
    assert isinstance(results, list) and results[0]["pages"] == 256


def test_pagework_quick(tmp_path: Path) -> None:
    # against the checkout's own HEAD: both trees must run every phase
    doc = run_bench("pagework.py", tmp_path / "p.json", "--baseline-ref", "HEAD",
                    "--pages", "256", "--repeat", "1", "--shapes", "pt-heavy")
    results = doc["results"]
    assert isinstance(results, dict)
    assert set(results["pt-heavy"]) == {"save", "restore", "digest", "start"}
    phases = results["pt-heavy"]
    assert all(phases[p]["cpu_s"]["this"] > 0 for p in ("save", "restore", "digest"))


def test_live_quick(tmp_path: Path) -> None:
    # bench/live.py checks every row itself (digest at the pause, guest-check) and exits
    # non-zero otherwise: two rows, a guest far above the 2 MB/s link must hit the limit
    doc = run_bench("live.py", tmp_path / "l.json", "--pages", "512", "--rates", "0,20000",
                    "--link", "2", "--max-rounds", "2", "--max-downtime", "0",
                    "--dirty-threshold", "0")
    assert isinstance(doc, list) and [r["rate"] for r in doc] == [0, 20000]
    assert doc[0]["stop"] == "no-guest", doc
    assert doc[1]["stop"] == "round-limit" and doc[1]["rounds"] == 3, doc
    assert doc[1]["downtime"] > 0 and doc[1]["total"] > doc[1]["downtime"], doc
