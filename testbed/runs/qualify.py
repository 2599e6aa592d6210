"""`python -m testbed qualify --previous REL`: can a fleet upgrade host by host?

A rolling upgrade has old and new hosts side by side, migrating both ways, so the
roll-out matrix (scenarios `cold` and `no-ext-info`: every pair x encoding x guest
width) runs on every pair of sides: old->new, new->old, old->old and new->new (the
saver on the `a` hosts, the restorer on the `b` hosts, as `--xsmig-ref` mounts them).

Expectations come from each side's declared capabilities, not from hand-picked
selections: `xsmig --version --json` of each side's tree, or, for a release that
predates it, the `json` block of its CHANGELOG.md entry (testbed/hosts/releases.py):
- an encoding the saver lacks: the saver must refuse to write it cleanly (exit 2,
  one error line, source untouched);
- an encoding the restorer lacks: the restorer must refuse the stream cleanly
  (exit 3 or 4, one error line, nothing left, source untouched);
- a v2 stream in a framing the restorer lacks (the saver's default, `v2_writes`), or a
  legacy stream with xsave state whose buffer layout (`legacy_xsave`) the restorer does
  not read: the restorer must refuse it cleanly (exit 3 or 4);
- a restorer without detection row R6 (the mail's rule) refuses a native stream
  without extended info whose width it cannot tell (exit 4, naming --source-width),
  then restores it with --source-width 64;
- otherwise the scenario's own expectation.
Any other outcome fails the cell. The report's first line answers the question; then
what breaks, per pair of sides and encoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenarios.model import Cell, Retry, refused
from testbed.errors import TestbedError
from testbed.hosts.releases import Capabilities

HELP = "qualify a release against the previous one: the roll-out matrix on old/new host pairs"
ROLLOUT = ("cold", "no-ext-info")
SIDE_PAIRS = (("old", "new"), ("new", "old"), ("old", "old"), ("new", "new"))
WRITE_REFUSAL = 2  # a usage error: `--encoding X` is no choice of that release
READ_REFUSAL = (3, 4)  # malformed or refused stream


class QualifyError(TestbedError):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--previous", default=None, metavar="REL",
                        help="the release to qualify against: a CHANGELOG.md name or git ref "
                        "(default: the newest release in CHANGELOG.md)")
    parser.add_argument("--new", default=None, metavar="REF",
                        help="the new side: a release name or git ref (default: the working tree)")
    parser.add_argument("--select", default=None, metavar="EXPR",
                        help="only these cells of the roll-out matrix (as matrix --select)")
    parser.add_argument("--arches", default=None, metavar="A,B,...",
                        help="architectures (default: the nightly set)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N")
    parser.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                        help="default reports/qualify")
    parser.add_argument("--mode", choices=("qemu", "native"), default="qemu")


@dataclass(frozen=True)
class Side:
    role: str  # old | new
    label: str  # what the user named: a release, a ref, or "worktree"
    ref: str | None  # None: the working tree
    caps: Capabilities


def probe(package_root: Path) -> Capabilities | None:
    """`xsmig --version --json` of the xsmig under package_root (run on the runner: the
    answer is the tree's tables, the same on every host); None if it has no such answer."""
    env = {**os.environ, "PYTHONPATH": str(package_root), "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-S", "-m", "xsmig", "--version", "--json"],
                       capture_output=True, text=True, cwd=package_root, env=env, timeout=60)
    if r.returncode != 0:
        return None
    from testbed.hosts.releases import parse_version_json

    return parse_version_json(r.stdout)


def side(role: str, name: str | None, exports: Path) -> Side:
    from testbed.hosts.releases import declared_for, lookup
    from testbed.hosts.sources import REPO, export_ref, resolve_ref

    if name is None:
        caps = probe(REPO)
        if caps is None:
            raise QualifyError("the working tree's xsmig does not answer --version --json")
        return Side(role, "worktree", None, caps)
    commit = resolve_ref(name, REPO)
    caps = probe(export_ref(name, exports).parent)
    if caps is None:
        caps = declared_for(commit)
        if caps is None:
            raise QualifyError(
                f"{name} ({commit[:10]}) predates `xsmig --version --json` and CHANGELOG.md "
                "declares no capabilities for it: add a json block to its entry")
    release = lookup(name)
    return Side(role, release.name if release else name, name, caps)


def expectation(cell: Cell, saver: Capabilities, restorer: Capabilities) -> tuple[Cell, str]:
    """The cell as these two sides should meet it, and why (empty: the scenario's own)."""
    if cell.encoding not in saver.encodings:
        return (dataclasses.replace(cell, expect=refused(WRITE_REFUSAL, by_saver=True), retry=None),
                f"saver {saver.version} lacks {cell.encoding}")
    if cell.encoding not in restorer.encodings:
        return (dataclasses.replace(cell, expect=refused(*READ_REFUSAL), retry=None),
                f"restorer {restorer.version} lacks {cell.encoding}")
    if cell.encoding == "v2" and saver.v2_writes and saver.v2_writes not in restorer.framings:
        return (dataclasses.replace(cell, expect=refused(*READ_REFUSAL), retry=None),
                f"restorer {restorer.version} lacks the {saver.v2_writes} framing")
    if (cell.encoding != "v2" and cell.domain.extended_state and saver.legacy_xsave
            and restorer.legacy_xsave and saver.legacy_xsave != restorer.legacy_xsave):
        # The legacy xsave buffer changed (issue 15): a restorer must refuse the other
        # layout, never read one as the other.
        return (dataclasses.replace(cell, expect=refused(*READ_REFUSAL), retry=None),
                f"restorer {restorer.version} lacks the {saver.legacy_xsave} xsave buffer")
    if cell.no_ext_info and "R6" not in restorer.rules and _unprovable_width(cell):
        # Without the mail's rule an unescaped 64-bit stream without ext-info is refused,
        # whatever the restorer's own width: it asks for the width, then restores.
        return (dataclasses.replace(cell, expect=refused(4, naming="--source-width"),
                                    retry=Retry(source_width=64)),
                f"restorer {restorer.version} lacks R6 (the mail's rule)")
    return cell, ""


def _unprovable_width(cell: Cell) -> bool:
    """A native stream without ext-info from a 64-bit little-endian saver: bytes 4-7 are
    zero, so only R6 (or --source-width) gives it a width (docs/stream-format.md 7)."""
    from scenarios.abi import abi_of
    from scenarios.hosts import arch_of

    a = abi_of(arch_of(cell.hops[0]))
    return cell.encoding == "native" and a.ulong_size == 8 and a.byte_order == "little"


def rollout_cells(select: str | None, arches: list[str]) -> list[Cell]:
    import scenarios
    from testbed.runs.selection import select as choose

    cells = [c for c in scenarios.on_arches(scenarios.all_cells(), arches)
             if c.scenario in ROLLOUT]
    return choose(cells, select) if select else cells


def ref_specs(cells: list[Cell], saver: Side, restorer: Side) -> list[str]:
    specs = []
    for host in sorted({h for c in cells for h in c.hops}):
        s = saver if host.endswith("-a") else restorer
        if s.ref is not None:
            specs.append(f"{host}={s.ref}")
    return specs


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from testbed.hosts.releases import previous
    from testbed.images.arch import NIGHTLY, parse_arches
    from testbed.runs.session import DEFAULT_REPORT_DIR, Settings, default_jobs, run_matrix

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    arches = parse_arches(args.arches or ",".join(NIGHTLY))
    cells = rollout_cells(args.select, arches)
    if not cells:
        raise QualifyError(f"--select {args.select!r} leaves no cell of the roll-out matrix")
    report_dir = (args.report_dir or DEFAULT_REPORT_DIR.parent / "qualify").resolve()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xsmig-qualify-") as tmp:
        old = side("old", args.previous or previous().name, Path(tmp))
        new = side("new", args.new, Path(tmp))
    sides = {"old": old, "new": new}
    for s in (old, new):
        console.print(f"{s.role}: {s.label} = xsmig {s.caps.version}, encodings "
                      f"{', '.join(sorted(s.caps.encodings))}; rules "
                      f"{' '.join(sorted(s.caps.rules))} (from {s.caps.source})", highlight=False)
    pairs: list[dict[str, Any]] = []
    for a, b in SIDE_PAIRS:
        saver, restorer = sides[a], sides[b]
        judged = [expectation(c, saver.caps, restorer.caps) for c in cells]
        name = f"{a}-to-{b}"
        console.rule(f"{name}: saver {saver.label}, restorer {restorer.label}")
        settings = Settings(jobs=args.jobs or default_jobs(), report_dir=report_dir / name,
                            ref_specs=ref_specs(cells, saver, restorer), mode=args.mode)
        results = run_matrix([c for c, _ in judged], settings, console)
        pairs.append(_pair_summary(name, saver, restorer, judged, results))
    doc = summarize(old, new, pairs, time.monotonic() - start)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "qualify.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (report_dir / "qualify.md").write_text(text)
    print(text, flush=True)
    print(f"report: {report_dir / 'qualify.md'}", flush=True)
    return 0 if doc["upgrade"] else 1


def _pair_summary(name: str, saver: Side, restorer: Side, judged: list[tuple[Cell, str]],
                  results: list[Any]) -> dict[str, Any]:
    why = {c.id: reason for c, reason in judged}
    # refused by design: a side lacks what the cell needs (a retry after it is no refusal)
    lacking = {c.id for c, reason in judged if reason and c.retry is None}
    by_enc: dict[str, dict[str, Any]] = {}
    for r in results:
        enc = r.id.split("/")[1]
        e = by_enc.setdefault(enc, {"cells": 0, "failed": [], "expected": set(), "refused": 0})
        e["cells"] += 1
        e["refused"] += r.id in lacking
        if why[r.id]:
            e["expected"].add(why[r.id])
        if not r.ok:
            e["failed"].append({"cell": r.id, "message": (r.message.splitlines() or [""])[0],
                                "repro": r.repro})
    for e in by_enc.values():
        e["expected"] = sorted(e["expected"])
        # usable for a rolling upgrade: every cell as expected and none only a refusal
        e["status"] = ("FAIL" if e["failed"] else
                       "refused cleanly" if e["refused"] == e["cells"] else
                       "partly refused cleanly" if e["refused"] else "ok")
    return {"pair": name, "saver": saver.label, "restorer": restorer.label,
            "cells": len(results), "failed": sum(len(e["failed"]) for e in by_enc.values()),
            "encodings": by_enc}


def summarize(old: Side, new: Side, pairs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    encodings = sorted({e for p in pairs for e in p["encodings"]})
    usable = [e for e in encodings
              if all(p["encodings"].get(e, {}).get("status") == "ok" for p in pairs)]
    broken = [p for p in pairs if p["failed"]]
    upgrade = not broken and bool(usable)
    return {"old": {"label": old.label, **old.caps.to_json()},
            "new": {"label": new.label, **new.caps.to_json()},
            "upgrade": upgrade, "rollout_encodings": usable,
            "new_only_encodings": sorted(new.caps.encodings - old.caps.encodings),
            "pairs": pairs, "seconds": round(seconds, 1)}


def answer(doc: dict[str, Any]) -> str:
    old, new = doc["old"]["label"], doc["new"]["label"]
    head = f"Can a fleet upgrade host by host from {old} to {new}? "
    if doc["upgrade"]:
        later = doc["new_only_encodings"]
        tail = (f"; {', '.join(later)} only once no {old} host is left" if later else "")
        saving = ", ".join(doc["rollout_encodings"])
        return head + f"YES, saving {saving} during the roll-out" + tail
    broken = [f"{p['pair']} ({p['failed']} cells)" for p in doc["pairs"] if p["failed"]]
    if broken:
        return head + "NO: " + ", ".join(broken) + " fail"
    return head + "NO: no encoding works in all four pairs"


def markdown(doc: dict[str, Any]) -> str:
    lines = [answer(doc), ""]
    lines.append(f"old: {doc['old']['label']} (xsmig {doc['old']['version']}, capabilities from "
                 f"{doc['old']['source']}); new: {doc['new']['label']} (xsmig "
                 f"{doc['new']['version']}, from {doc['new']['source']}); {doc['seconds']} s")
    lines += ["", "| pair (saver-to-restorer) | cells | failed | "
              + " | ".join(sorted({e for p in doc["pairs"] for e in p["encodings"]})) + " |"]
    encs = sorted({e for p in doc["pairs"] for e in p["encodings"]})
    lines.append("|---|--:|--:|" + "---|" * len(encs))
    for p in doc["pairs"]:
        row = []
        for e in encs:
            info = p["encodings"].get(e)
            if info is None:
                row.append("·")
                continue
            note = "; ".join(info["expected"])
            row.append(info["status"] + (f" ({note})" if note else ""))
        lines.append(f"| {p['pair']}: {p['saver']} -> {p['restorer']} | {p['cells']} | "
                     f"{p['failed']} | " + " | ".join(row) + " |")
    failures = [(p, f) for p in doc["pairs"] for e in p["encodings"].values() for f in e["failed"]]
    if failures:
        lines += ["", "What breaks:"]
        lines += [f"- {p['pair']} `{f['cell']}`: {f['message']}\n  repro: `{f['repro']}`"
                  for p, f in failures]
    return "\n".join(lines) + "\n"
