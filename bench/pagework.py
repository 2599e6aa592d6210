#!/usr/bin/env python3
"""xsmig's own per-page CPU work, this tree against a baseline tree, in one invocation.

For each guest shape, child processes (one per phase and tree, alternating A, B, A, B
so that load drifts hit both alike) create a guest, then measure the CPU time
(user + sys, getrusage) of one phase:

  save     in-process save of the guest to /dev/null
  restore  in-process restore of that stream from a file
  digest   canonical digest of the source
  start    a whole `python3 -S` process importing what `xsmig save` and `xsmig restore`
           import (the CLI, writer, restorer), minus a bare `python3 -S -c pass`
           measured beside it: the start-up cost every emulated command pays

Reported: the median CPU seconds per tree and the ratio baseline / this tree
(above 1: this tree does the same work in less CPU). CPU time, not wall time,
because the machines here are shared; the ratio is the figure to quote.

Stdlib only, so the same script runs in the emulated hosts' python3:
  python3 bench/pagework.py --baseline-tree /path/to/old/checkout
  python3 bench/pagework.py --baseline-ref c3439bd       # git archive of a ref
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
PHASES = ("save", "restore", "digest", "start")
IMPORTS = "import xsmig.cli, xsmig.stream.writer, xsmig.restore"

# Run in a child with PYTHONPATH=<tree>: prints the CPU seconds of one phase. Uses only
# APIs both trees have (store, synth.create, writer.save, restore.restore, canonical).
CHILD = r"""
import io, os, resource, sys
from pathlib import Path
from xsmig.canonical import CanonicalDomain
from xsmig.layout import Layout
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save
from xsmig.synth import GuestSpec, create

phase, pages, shape, work, encoding = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                       Path(sys.argv[4]), sys.argv[5])
store = Store(work / "store")
if not store.exists("src"):
    with store.writing("src") as d:
        create(GuestSpec("src", pages, 64, 2, None, 1, shape, True), d, 1)
src = store.get("src")
opts = SaveOptions(Encoding(encoding), Layout.native())
stream = work / "src.stream"
if not stream.exists():
    with open(stream, "wb") as f:
        save(src, f, opts)
if store.exists("dst"):
    store.destroy("dst")

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

t0 = cpu()
if phase == "save":
    with open(os.devnull, "wb") as null:
        save(src, io.BufferedWriter(null, 1 << 20), opts)
elif phase == "restore":
    with open(stream, "rb") as f:
        restore(store, f, name="dst", host_id=2)
else:
    CanonicalDomain(src).digest()
print(cpu() - t0)
assert Path(sys.modules["xsmig"].__file__).parent.parent == Path(os.environ["PYTHONPATH"])
"""


def _env(tree: Path, work: Path) -> dict[str, str]:
    # bytecode cached per tree and writable even for a read-only mounted tree, as the
    # hosts' xsmig wrapper does, so that no run pays for compiling
    return dict(os.environ, PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(work / "pycache"))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start_cost(python: str, tree: Path, work: Path) -> float:
    """CPU of a process importing xsmig's command modules, minus a bare start."""
    env = _env(tree, work)
    cost = []
    for code in (IMPORTS, "pass"):
        t0 = _children_cpu()
        subprocess.run([python, "-S", "-c", code], env=env, cwd=work, check=True)
        cost.append(_children_cpu() - t0)
    return cost[0] - cost[1]


def run_phase(python: str, tree: Path, phase: str, pages: int, shape: str, work: Path,
              encoding: str) -> float:
    if phase == "start":
        return start_cost(python, tree, work)
    env = _env(tree, work)
    # cwd: `python -c` puts the working directory ahead of PYTHONPATH on sys.path
    out = subprocess.run([python, "-c", CHILD, phase, str(pages), shape, str(work), encoding],
                         env=env, cwd=work, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def export_ref(ref: str, dest: Path) -> Path:
    """`git archive` of ref's xsmig/ into dest: a baseline tree without a worktree."""
    archive = subprocess.run(["git", "-C", str(HERE), "archive", ref, "xsmig"],
                             check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    tar = dest / "base.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def measure(python: str, trees: dict[str, Path], shapes: list[str], pages: int,
            repeat: int, tmp: Path, encoding: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape in shapes:
        out[shape] = {}
        works = {}
        for name, tree in trees.items():
            works[name] = tmp / f"{name}-{shape}"
            works[name].mkdir()
            run_phase(python, tree, "digest", pages, shape, works[name], encoding)  # warm up
        for phase in PHASES:
            samples: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(repeat):
                for name, tree in trees.items():  # alternate the trees
                    samples[name].append(run_phase(python, tree, phase, pages, shape,
                                                   works[name], encoding))
            med = {name: statistics.median(s) for name, s in samples.items()}
            out[shape][phase] = {"cpu_s": med, "ratio_baseline_over_this": med["baseline"]
                                 / med["this"]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--baseline-tree", type=Path, help="a checkout (its xsmig/ is used)")
    g.add_argument("--baseline-ref", help="a git ref of this repository")
    p.add_argument("--shapes", default="standard,pt-heavy")
    p.add_argument("--pages", type=int, default=16384, help="guest size (default 64 MiB)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--encoding", default="native", help="native, escaped, extended or v2")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="xsmig-pagework-") as t:
        tmp = Path(t)
        base = args.baseline_tree or export_ref(args.baseline_ref, tmp / "base-tree")
        trees = {"baseline": base.resolve(), "this": HERE}
        results = measure(args.python, trees, args.shapes.split(","), args.pages,
                          args.repeat, tmp, args.encoding)
    print(f"{'shape':10} {'phase':8} {'baseline cpu s':>15} {'this cpu s':>11} {'ratio':>6}")
    for shape, phases in results.items():
        for phase, r in phases.items():
            print(f"{shape:10} {phase:8} {r['cpu_s']['baseline']:15.3f} "
                  f"{r['cpu_s']['this']:11.3f} {r['ratio_baseline_over_this']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"pages": args.pages, "repeat": args.repeat,
                                         "encoding": args.encoding, "python": args.python,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
