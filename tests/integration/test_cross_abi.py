"""CI's cross-ABI selection: amd64 <-> s390x (word size equal, byte order crossed) on
real emulated hosts, through `python -m testbed matrix --arches amd64,s390x`.

Small on purpose (five cells, one foreign image): the nightly i386/amd64 matrix runs
in test_matrix.py; `--arches all` is for release qualification (docs/testbed.md).
Cost measured on the 2-core reference machine: docs/performance.md, "Architectures".
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
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


GUESTS = {"g64": ("64", "native"), "g32": ("32", "native"), "e64": ("64", "escaped")}
EMULATED = (
    "set -e; export XSMIG_STORE=/tmp/st; cd /opt/xsmig; "
    'for spec in "g64 64 native" "g32 32 native" "e64 64 escaped"; do set -- $spec; '
    "python3 -m xsmig create $1 --pages 64 --guest-width $2 --seed 1 >/dev/null; "
    "python3 -m xsmig save $1 --encoding $3 -o /tmp/$1 2>/dev/null; "
    "echo $1 $(sha256sum /tmp/$1 | cut -d' ' -f1); done; python3 -m xsmig host-info --json"
)


def _local_streams(abi: str) -> dict[str, str]:
    out = {}
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "XSMIG_STORE": store}
        for name, (width, encoding) in GUESTS.items():
            xsmig = [sys.executable, "-m", "xsmig"]
            subprocess.run([*xsmig, "create", name, "--pages", "64", "--guest-width", width,
                            "--seed", "1"], env=env, check=True, capture_output=True, cwd=REPO)
            data = subprocess.run([*xsmig, "save", name, "--encoding", encoding, "--toolstack",
                                   abi, "-o", "-"], env=env, check=True, capture_output=True,
                                  cwd=REPO).stdout
            out[name] = hashlib.sha256(data).hexdigest()
    return out


def test_s390x_interpreter_writes_the_streams_the_abi_model_predicts() -> None:
    """The ABI model is what the unit tests (and --toolstack) simulate in-process: a real
    big-endian interpreter must write byte-identical streams. The host is started by the
    matrix's own stack and used through the host facade, like every cell's."""
    from testbed.hosts.hosts import fleet

    with fleet(["s390x-a"], mounts={"s390x-a": REPO / "xsmig"}) as f:
        r = f.host("s390x-a").shell(EMULATED, timeout=900)
    assert r.ok, r.err[-2000:]
    hashes, brace, info_json = r.out.partition("{")
    info = json.loads(brace + info_json)
    assert (info["abi"], info["byteorder"], info["ulong_size"]) == ("s390x", "big", 8)
    emulated = dict(line.split() for line in hashes.splitlines())
    assert emulated == _local_streams("s390x")
