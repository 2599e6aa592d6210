#!/usr/bin/env python3
"""Per-architecture costs under QEMU user emulation, as ratios against in-run baselines.

For each architecture whose host image is built (`python -m testbed build-images`):

  start       `python3 -c pass` on a host of that architecture (QEMU-emulated
              interpreter), median of N, against the build machine's own
              `python3 -c pass` (native baseline)
  throughput  bench/throughput.py on that host (xsmig mounted read-only as in every run,
              the script put beside it; the children run through the emulating wrapper):
              save, restore, pipeline MB/s and their ratios to the in-host pipe baselines

The hosts are started by the testbed's own stack and used through the host facade
(testbed/hosts/facade.py), like every cell's.

Run on the build machine (Docker, images built):
  python3 bench/arches.py [--arch A]... [--pages 4096] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.hosts.facade import HostQueries  # noqa: E402
from testbed.hosts.hosts import fleet  # noqa: E402
from testbed.images.arch import ARCHES  # noqa: E402

START_LOOP = (
    "for i in $(seq {n}); do s=$(date +%s%N); /usr/local/bin/python3 -c pass; "
    "e=$(date +%s%N); echo $(( (e - s) / 1000 )); done"
)


def _sh(host: HostQueries, script: str) -> str:
    r = host.shell(script, timeout=3600)
    if not r.ok:
        raise SystemExit(f"{host.name}: exit {r.exit_status}: {r.err.strip()[-500:]}")
    return r.out


def native_start(n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["python3", "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(arch: str, host: HostQueries, pages: int, repeat: int) -> dict[str, Any]:
    start_us = [int(x) for x in _sh(host, START_LOOP.format(n=repeat)).split()]
    host.run(["mkdir", "-p", "/opt/xsmig/bench"])
    host.put("/opt/xsmig/bench/throughput.py", (REPO / "bench" / "throughput.py").read_bytes())
    bench = (
        "cd /tmp && XSMIG_BENCH_PYTHON=/usr/local/bin/python3 /usr/local/bin/python3 "
        f"/opt/xsmig/bench/throughput.py --sizes {pages} --repeat 1 --json /tmp/b.json "
        ">/dev/null && cat /tmp/b.json"
    )
    t = time.perf_counter()
    report = json.loads(_sh(host, bench))
    wall = time.perf_counter() - t
    r = report["results"][0]["mb_per_s"]
    return {
        "arch": arch,
        "machine": report["machine"],
        "start_s": statistics.median(start_us) / 1e6,
        "mb_per_s": {k: r[k] for k in ("save", "restore", "pipeline", "pipe_copy",
                                       "pipe_to_file")},
        "bench_wall_s": round(wall, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", help="default: every architecture")
    p.add_argument("--pages", type=int, default=4096, help="domain size (default 16 MiB)")
    p.add_argument("--repeat", type=int, default=3, help="interpreter starts to time")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    base = native_start(args.repeat)
    arches = args.arch or list(ARCHES)
    names = {a: f"{a}-a" for a in arches}
    with fleet(list(names.values()), mounts=dict.fromkeys(names.values(), REPO / "xsmig"),
               progress=print) as f:
        rows = [measure(a, f.host(names[a]), args.pages, args.repeat) for a in arches]
    print(f"native python3 -c pass: {base:.3f}s (baseline)")
    print(f"{'arch':<6} {'start s':>8} {'x native':>9} {'save MB/s':>10} {'restore':>8} "
          f"{'pipeline':>9} {'save/pipe':>10} {'pipeline/file':>14}")
    for r in rows:
        m = r["mb_per_s"]
        print(f"{r['arch']:<6} {r['start_s']:>8.3f} {r['start_s'] / base:>9.1f} "
              f"{m['save']:>10.1f} {m['restore']:>8.1f} {m['pipeline']:>9.1f} "
              f"{m['save'] / m['pipe_copy']:>10.3f} {m['pipeline'] / m['pipe_to_file']:>14.3f}")
    if args.json:
        args.json.write_text(json.dumps({"native_start_s": base, "arches": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
