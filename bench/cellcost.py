#!/usr/bin/env python3
"""Fixed cost of a matrix cell, as a ratio against the emulated bare interpreter start.

Starts two hosts (i386-a, amd64-b, as the matrix starts them), then, in one run:

  bare      `python3 -c pass` on a host over SSH (the QEMU-emulated interpreter's
            start-up plus one exec channel): the floor every remote command pays
  exec      `true` over SSH: the transport's own share
  xsmig     `xsmig list --json` as its own command (an emulated start plus imports)
  cell      the cold cells of the i386-to-amd64 pair, one at a time (create, digest with
            dump, save | restore over SSH, digest, destroy), each split into set-up,
            transfer and checks by the runner's own cost model

and prints medians and the ratio median cell / median bare (issue 9 target: <= 8).

  python bench/cellcost.py                 # 6 cells, 5 samples of each start-up
  python bench/cellcost.py --quick         # 1 cell, 1 sample: proves the bench runs (CI)
  python bench/cellcost.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios
from testbed.cells.execute import run_cell
from testbed.hosts.hosts import fleet, new_run_id
from testbed.hosts.sources import resolve_sources
from testbed.hosts.ssh import Host

HOSTS = ["i386-a", "amd64-b"]
PAIR = "i386-to-amd64"


def timed_runs(host: Host, argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = host.run(argv, timeout=120)
        out.append(time.perf_counter() - t0)
        if not r.ok:
            raise SystemExit(f"{' '.join(argv)} on {host.name}: exit {r.exit_status}: {r.err}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one cell, one sample of each")
    p.add_argument("--cells", type=int, default=6, help="cold cells to run (default 6)")
    p.add_argument("--samples", type=int, default=5, help="samples of each start-up (default 5)")
    p.add_argument("--mode", choices=("qemu", "native"), default="qemu")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    n_cells, samples = (1, 1) if args.quick else (args.cells, args.samples)
    cells = [c for c in scenarios.all_cells() if c.scenario == "cold" and c.pair == PAIR]
    cells = cells[:n_cells]
    mounts, labels = resolve_sources({}, HOSTS)
    t0 = time.perf_counter()
    with fleet(HOSTS, run_id=new_run_id(), mounts=mounts, source_labels=labels,
               mode=args.mode) as f:
        setup = time.perf_counter() - t0
        src = f.host(HOSTS[0])
        for h in HOSTS:  # warm: first logins, page cache, bytecode cache, agents (as a run)
            f.host(h).run(["xsmig", "list"], timeout=120)
            warm = getattr(f.host(h), "warm_agents", None)  # absent in older checkouts
            if warm is not None:
                warm(1)
        bare = timed_runs(src, ["python3", "-c", "pass"], samples)
        exec_true = timed_runs(src, ["true"], samples)
        xsmig = timed_runs(src, ["xsmig", "list", "--json"], samples)
        rows = []
        with tempfile.TemporaryDirectory(prefix="xsmig-cellcost-") as tmp:
            for c in cells:
                # A bare start beside every cell too: the baseline sees the same load.
                bare += timed_runs(src, ["python3", "-c", "pass"], 1)
                r = run_cell(c, f, Path(tmp))
                if not r.ok:
                    raise SystemExit(f"{c.id}: {r.verdict}: {r.message}")
                rows.append({"id": c.id, "seconds": r.seconds,
                             "phases": getattr(r, "phases", {}), "bytes": r.bytes})
    med = {"bare": statistics.median(bare), "exec_true": statistics.median(exec_true),
           "xsmig_list": statistics.median(xsmig),
           "cell": statistics.median(r["seconds"] for r in rows)}
    report: dict[str, Any] = {
        "command": " ".join(sys.argv), "mode": args.mode, "host_setup_seconds": setup,
        "samples": {"bare": bare, "exec_true": exec_true, "xsmig_list": xsmig},
        "cells": rows, "median": med,
        "ratio": {"cell/bare": med["cell"] / med["bare"],
                  "xsmig_list/bare": med["xsmig_list"] / med["bare"],
                  "exec_true/bare": med["exec_true"] / med["bare"]},
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"hosts up in {setup:.1f}s ({args.mode}); medians over {samples} samples "
          f"({len(bare)} of the bare start, one beside each cell):")
    print(f"  ssh exec `true`          {med['exec_true']:.3f}s")
    print(f"  bare `python3 -c pass`   {med['bare']:.3f}s")
    print(f"  `xsmig list --json`      {med['xsmig_list']:.3f}s "
          f"({report['ratio']['xsmig_list/bare']:.2f} x bare)")
    for r in rows:
        ph = " ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items())
        print(f"  cell {r['id']:<40} {r['seconds']:.2f}s {ph}")
    print(f"median cell {med['cell']:.2f}s = {report['ratio']['cell/bare']:.1f} x bare "
          f"(target <= 8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
