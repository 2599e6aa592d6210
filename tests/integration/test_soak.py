"""The soak command in quick mode (5 hops): the full 100-hop soak is `python -m testbed soak`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def test_quick_soak_ping_pongs_identically_and_the_runner_stays_flat(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed",
            "soak",
            "--hops",
            "5",
            "--pages",
            "512",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "soak.json").read_text())
    hops = data["hops"]
    assert len(hops) == 5 and all(h["identical"] for h in hops)
    assert [h["src"] for h in hops] == ["i386-a", "amd64-a", "i386-a", "amd64-a", "i386-a"]
    assert data["summary"]["mismatches"] == 0 and data["summary"]["problems"] == []
