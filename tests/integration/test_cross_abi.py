"""CI's cross-ABI selection: amd64 <-> s390x (word size equal, byte order crossed) on
real emulated hosts, through `python -m testbed matrix --arches amd64,s390x`.

Small on purpose (five cells, one foreign image): the nightly i386/amd64 matrix runs
in test_matrix.py; `--arches all` is for release qualification (docs/testbed.md).
Cost measured on the 2-core reference machine: docs/performance.md, "Architectures".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
# cell id -> verdict the ABIs predict (scenarios.abi), written out here.
CELLS = {
    "amd64-to-s390x/extended/guest64/cold": "passed",
    "s390x-to-amd64/extended/guest32/cold": "passed",
    "s390x-to-amd64/native/guest64/cold": "passed",  # byte order told from the first bytes
    "s390x-to-amd64/native/guest64/no-ext-info": "passed",  # big-endian: width decidable
    "amd64-to-s390x/native/guest64/legacy": "refused",  # the bug class the fix closes
}


def test_amd64_s390x_cross_byte_order_cells(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "matrix", "--arches", "amd64,s390x",
         "--select", ",".join(CELLS), "--report-dir", str(tmp_path), "--jobs", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=2300,
    )
    doc = json.loads((tmp_path / "results.json").read_text())
    got = {c["id"]: c["verdict"] for c in doc["cells"]}
    assert got == CELLS, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0
