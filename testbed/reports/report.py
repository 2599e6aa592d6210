"""Reports of a matrix run: the terminal grid, junit.xml, results.json, report.html, summary.md.

The grid: one row per (scenario, host pair), one column per encoding x guest
width; each cell passed (restored identically as expected), refused (refused
cleanly as expected) or FAILED (outcome differs from the expectation, either way,
or the cell could not run).
"""

from __future__ import annotations

import html
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.model import ENCODINGS, GUEST_WIDTHS
from testbed.cells.results import FAILED, PASSED, REFUSED, CellResult, read_results
from testbed.reports import baseline

COLUMNS = [f"{e}/guest{w}" for e in ENCODINGS for w in GUEST_WIDTHS]
SYMBOL = {PASSED: "✓ pass", REFUSED: "⊘ refused", FAILED: "✗ FAIL"}
TERM_SYMBOL = {PASSED: "✓", REFUSED: "⊘ ref", FAILED: "✗ FAIL"}
MD_SYMBOL = {PASSED: "✅ pass", REFUSED: "🛑 refused", FAILED: "❌ **FAIL**"}
RICH_STYLE = {PASSED: "green", REFUSED: "cyan", FAILED: "bold red"}
HTML_CLASS = {PASSED: "pass", REFUSED: "refused", FAILED: "fail"}


@dataclass
class Grid:
    columns: list[str]
    rows: list[tuple[str, str]]  # (scenario, pair)
    cells: dict[tuple[str, str, str], CellResult] = field(default_factory=dict)

    def at(self, row: tuple[str, str], column: str) -> CellResult | None:
        return self.cells.get((row[0], row[1], column))


def build_grid(results: Sequence[CellResult]) -> Grid:
    # Rows grouped by scenario (in order of first appearance), then pairs in order.
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    seen = list(dict.fromkeys((r.scenario, r.pair) for r in results))
    rows = sorted(seen, key=lambda row: (scenarios.index(row[0]), seen.index(row)))
    used = {r.column for r in results}
    cols = [c for c in COLUMNS if c in used] + sorted(used - set(COLUMNS))
    grid = Grid(cols, rows)
    for r in results:
        grid.cells[(r.scenario, r.pair, r.column)] = r
    return grid


@dataclass(frozen=True)
class Totals:
    passed: int
    refused: int
    failed: int

    @property
    def total(self) -> int:
        return self.passed + self.refused + self.failed

    def line(self) -> str:
        return f"{self.passed + self.refused} passed, {self.failed} failed"


def totals(results: Sequence[CellResult]) -> Totals:
    count = {PASSED: 0, REFUSED: 0, FAILED: 0}
    for r in results:
        count[r.verdict if r.verdict in count else FAILED] += 1
    return Totals(count[PASSED], count[REFUSED], count[FAILED])


# -- terminal -------------------------------------------------------------------
def rich_grid(results: Sequence[CellResult], title: str = "xsmig migration matrix") -> Any:
    from rich import box
    from rich.table import Table

    grid = build_grid(results)
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    table.add_column("scenario", no_wrap=True)
    table.add_column("pair", no_wrap=True)
    for col in grid.columns:
        enc, _, width = col.partition("/")
        table.add_column(f"{enc}\n{width}", justify="center", no_wrap=True)
    last = None
    for row in grid.rows:
        if last is not None and row[0] != last:
            table.add_section()
        last = row[0]
        values = []
        for col in grid.columns:
            r = grid.at(row, col)
            values.append(
                "[dim]·[/dim]"
                if r is None
                else f"[{RICH_STYLE[r.verdict]}]{_term(r)}[/]"
            )
        table.add_row(row[0], row[1].replace("-to-", "→"), *values)
    return table


def _term(r: CellResult) -> str:
    """The grid's symbol, with the change against the baseline when there is one."""
    label = baseline.TERM_LABEL.get(r.change)
    if label is None:
        return TERM_SYMBOL[r.verdict]
    return label if not r.ok else f"{TERM_SYMBOL[r.verdict]} {label}"


def print_grid(results: Sequence[CellResult], console: Any = None) -> None:
    from rich.console import Console

    console = console or Console()
    console.print(rich_grid(results))
    console.print(
        "✓ identical as expected   ⊘ ref: refused as expected   ✗ FAIL   · no cell",
        style="dim",
        highlight=False,
    )
    t = totals(results)
    console.print(
        f"{t.total} cells: [green]{t.passed} identical as expected[/], "
        f"[cyan]{t.refused} refused as expected[/], "
        f"[{'bold red' if t.failed else 'green'}]{t.failed} failed[/]"
    )
    if any(r.change for r in results):
        console.print(baseline.summarize(results, None).line().split(": ", 1)[1], highlight=False)
    for r in results:
        if r.verdict == FAILED:
            head = r.change.upper() if r.change else "FAILED"
            console.print(
                f"[bold red]{head}[/] {r.id}: {r.message.splitlines()[0] if r.message else ''}",
                markup=True,
                highlight=False,
            )
            if baseline.detail(r):
                console.print(f"  {baseline.detail(r)}", markup=False, highlight=False)
            console.print(f"  repro: {r.repro}", markup=False, highlight=False)
        elif r.change == baseline.FIXED:
            console.print(f"[green]FIXED[/] {r.id}", highlight=False)


# -- cost model -------------------------------------------------------------------
PHASES = ("setup", "transfer", "checks")


@dataclass
class Cost:
    """Seconds spent by a group of cells, split as CellResult.phases splits them."""

    label: str
    cells: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def add(self, r: CellResult) -> None:
        self.cells += 1
        self.seconds += r.seconds
        for k, v in r.phases.items():
            self.phases[k] += v

    def share(self, phase: str) -> float:
        return self.phases[phase] / self.seconds if self.seconds else 0.0


def cost_model(results: Sequence[CellResult]) -> list[Cost]:
    """Per scenario, then all cells: where the cells' time went (set-up, transfer, checks)."""
    by: dict[str, Cost] = {}
    total = Cost("all cells")
    for r in results:
        by.setdefault(r.scenario, Cost(r.scenario)).add(r)
        total.add(r)
    return [*sorted(by.values(), key=lambda c: -c.seconds), total]


def _cost_cells(c: Cost) -> list[str]:
    mean = c.seconds / c.cells if c.cells else 0.0
    return [
        c.label,
        str(c.cells),
        f"{c.seconds:.1f}",
        f"{mean:.2f}",
        *(f"{c.phases[p]:.1f} ({c.share(p):.0%})" for p in PHASES),
    ]


COST_HEAD = ["scenario", "cells", "cell s", "mean s", "setup s", "transfer s", "checks s"]


def markdown_cost(results: Sequence[CellResult]) -> str:
    lines = ["| " + " | ".join(COST_HEAD) + " |", "|---|" + "--:|" * (len(COST_HEAD) - 1)]
    lines += ["| " + " | ".join(_cost_cells(c)) + " |" for c in cost_model(results)]
    return "\n".join(lines)


# -- files ------------------------------------------------------------------------
def write_json(results: Sequence[CellResult], path: Path, meta: dict[str, Any]) -> None:
    t = totals(results)
    doc = {
        "meta": meta,
        "totals": {
            "cells": t.total,
            "passed": t.passed,
            "refused": t.refused,
            "failed": t.failed,
            **baseline.summarize(results, None).counts,
        },
        "cells": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def read_json(path: Path) -> list[CellResult]:
    return read_results(path)[1]


def write_junit(results: Sequence[CellResult], path: Path, seconds: float) -> None:
    t = totals(results)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="xsmig-matrix",
        tests=str(t.total),
        failures=str(t.failed),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"matrix.{r.scenario}", name=r.id, time=f"{r.seconds:.3f}"
        )
        props = ET.SubElement(case, "properties")
        for k, v in (
            ("seed", r.seed),
            ("expected", r.expected),
            ("actual", r.actual),
            ("verdict", r.verdict),
            ("bytes", r.bytes),
            ("mib_per_s", r.mib_per_s),
            *((f"{k}_seconds", v) for k, v in r.phases.items()),
            ("repro", r.repro),
            *_change_properties(r),
        ):
            ET.SubElement(props, "property", name=k, value=str(v))
        if r.flaky:  # surefire's convention: a test that failed, then passed on a rerun
            flaky = ET.SubElement(
                case, "flakyFailure", message=(r.message.splitlines() or [""])[0]
            )
            flaky.text = f"{r.message}\nrepro: {r.repro}"
        elif r.verdict == FAILED:
            fail = ET.SubElement(case, "failure", message=(r.message.splitlines() or [""])[0])
            fail.text = "\n".join(
                [
                    r.message,
                    f"expected: {r.expected}",
                    f"actual: {r.actual}",
                    f"repro: {r.repro}",
                    *(f"artifact: {a}" for a in r.artifacts),
                ]
            )
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _change_properties(r: CellResult) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = []
    if r.change:
        props.append(("change", r.change))
    if r.baseline_verdict is not None:
        props.append(("baseline_verdict", r.baseline_verdict))
    if r.reruns:
        props.append(("reruns", ",".join(a.verdict for a in r.reruns)))
    if r.streak:
        props += [("streak", r.streak), ("flake_rate", r.flake_rate)]
    return props


def markdown_grid(results: Sequence[CellResult]) -> str:
    grid = build_grid(results)
    head = "| scenario | pair | " + " | ".join(grid.columns) + " |"
    sep = "|---|---|" + "|".join(":-:" for _ in grid.columns) + "|"
    lines = [head, sep]
    for row in grid.rows:
        vals = [_md(r) if (r := grid.at(row, c)) else "·" for c in grid.columns]
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _md(r: CellResult) -> str:
    return MD_SYMBOL[r.verdict] + (f" ({r.change})" if r.change and r.change != "passing" else "")


def write_summary(
    results: Sequence[CellResult], path: Path, seconds: float, against: str | None = None
) -> None:
    t = totals(results)
    status = "✅ every cell as expected" if t.failed == 0 else f"❌ {t.failed} cell(s) failed"
    if against or any(r.change for r in results):
        status += "; " + baseline.summarize(results, against).line()
    parts = [
        "# xsmig migration matrix",
        "",
        f"**{status}** — {t.total} cells: {t.passed} identical, {t.refused} refused as expected, "
        f"{t.failed} failed; {seconds:.0f} s.",
        "",
        markdown_grid(results),
        "",
        *baseline.markdown(results, against),
    ]
    failed = [r for r in results if r.verdict == FAILED]
    if failed:
        parts += ["## Failed cells", ""]
        for r in failed:
            first = (r.message.splitlines() or [""])[0]
            parts += [
                f"- `{r.id}`: {first}",
                f"  - expected: {r.expected}",
                f"  - repro: `{r.repro}`",
            ]
        parts.append("")
    if results:
        parts += [
            "## Where the time went",
            "",
            "Each cell's seconds split into set-up (create the source domain, its digest), "
            "transfer (the save | restore streams) and checks (digests and lists that judge "
            "each hop, destroying the source). Cells run concurrently, so their sum exceeds "
            "the wall time.",
            "",
            markdown_cost(results),
            "",
        ]
    live = [r for r in results if r.live]
    if live:
        parts += ["## Live migration", "",
                  "Downtime: from the guest's pause until the destination has restored.", "",
                  "| cell | dirty pages/s | rounds | pages per round | stop | downtime s "
                  "| total s |", "|---|--:|--:|---|---|--:|--:|"]
        for r in live:
            f = r.live or {}
            pages = ", ".join(map(str, f.get("pages_per_round") or []))
            parts.append(f"| `{r.id}` | {f.get('dirty_rate')} | {f.get('rounds')} | {pages} | "
                         f"{f.get('stop')} | {f.get('downtime')} | {f.get('total_seconds')} |")
        parts.append("")
    big = [r for r in results if r.bytes]
    if big:
        parts += ["## Throughput", "", "| cell | bytes | seconds | MiB/s |", "|---|--:|--:|--:|"]
        for r in sorted(big, key=lambda r: -r.bytes)[:8]:
            moving = sum(h.seconds for h in r.hops)
            parts.append(f"| `{r.id}` | {r.bytes} | {moving:.1f} | {r.mib_per_s:.2f} |")
        parts.append("")
    path.write_text("\n".join(parts))


_CSS = """
body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:center}
td.pass{background:#c8f0c8} td.refused{background:#cde4f7}
td.fail{background:#f5b5b5;font-weight:bold}
td.regression{outline:3px solid #b00} td.flaky{background:#f7e3b5}
td.none{color:#aaa} td.row{text-align:left;white-space:nowrap} a{color:inherit}
pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}
"""


def write_html(
    results: Sequence[CellResult], path: Path, seconds: float, against: str | None = None
) -> None:
    grid = build_grid(results)
    t = totals(results)
    e = html.escape
    compared = (
        f"<p><b>{e(baseline.summarize(results, against).line())}</b></p>"
        if against or any(r.change for r in results)
        else ""
    )
    out = [
        "<!doctype html><meta charset='utf-8'><title>xsmig migration matrix</title>",
        f"<style>{_CSS}</style><h1>xsmig migration matrix</h1>",
        f"<p>{t.total} cells: {t.passed} identical, {t.refused} refused as expected, "
        f"<b>{t.failed} failed</b>; {seconds:.0f} s. Legend: "
        "<span style='background:#c8f0c8'>pass</span> "
        "<span style='background:#cde4f7'>refused as expected</span> "
        "<span style='background:#f5b5b5'>FAIL</span> "
        "<span style='background:#f7e3b5'>flaky</span> "
        "<span style='outline:3px solid #b00'>regression</span></p>",
        compared,
        "<table><tr><th>scenario</th><th>pair</th>",
        *(f"<th>{e(c)}</th>" for c in grid.columns),
        "</tr>",
    ]
    for row in grid.rows:
        out.append(f"<tr><td class=row>{e(row[0])}</td><td class=row>{e(row[1])}</td>")
        for col in grid.columns:
            r = grid.at(row, col)
            if r is None:
                out.append("<td class=none>·</td>")
                continue
            tip = e(f"{r.id}\nexpected: {r.expected}\nactual: {r.actual}\n{r.message}")
            text = SYMBOL[r.verdict] + (f" ({r.change})" if r.change not in ("", "passing") else "")
            label = f"<a href='#{e(r.id)}'>{e(text)}</a>"
            cls = HTML_CLASS[r.verdict] + (f" {r.change}" if r.change else "")
            cls = f"'{cls}'" if r.change else cls
            out.append(f"<td class={cls} title='{tip}'>{label}</td>")
        out.append("</tr>")
    out.append("</table><h2>Where the time went</h2><table><tr>")
    out += [f"<th>{e(h)}</th>" for h in COST_HEAD]
    out.append("</tr>")
    for c in cost_model(results):
        out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in _cost_cells(c)) + "</tr>")
    out.append("</table><h2>Cells</h2>")
    for r in results:
        links = " ".join(f"<a href='{e(a)}'>{e(Path(a).name)}</a>" for a in r.artifacts)
        out.append(
            f"<h3 id='{e(r.id)}'>{e(SYMBOL[r.verdict])} {e(r.id)}</h3><pre>"
            f"hosts: {e(' -> '.join(r.hosts))}   seed: {r.seed}   {r.seconds:.1f} s   "
            f"{r.bytes} bytes   {r.mib_per_s:.2f} MiB/s\n"
            f"time: setup {r.setup_seconds:.1f} s, transfer {r.transfer_seconds:.1f} s, "
            f"checks {r.check_seconds:.1f} s\nexpected: {e(r.expected)}\n"
            f"actual:   {e(r.actual)}\n{e(r.message)}\nrepro: {e(r.repro)}"
            + (f"\n{e(baseline.detail(r))}" if baseline.detail(r) else "")
            + "</pre>"
            + (f"<p>artifacts: {links}</p>" if links else "")
            + "".join(
                f"<p>rerun {i}: {e(a.verdict)} in {a.seconds:.1f} s "
                + " ".join(f"<a href='{e(p)}'>{e(Path(p).name)}</a>" for p in a.artifacts)
                + "</p>"
                for i, a in enumerate(r.reruns, 1)
            )
        )
    path.write_text("\n".join(out) + "\n")


def write_all(
    results: Sequence[CellResult], report_dir: Path, seconds: float, meta: dict[str, Any]
) -> list[Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = [report_dir / n for n in ("junit.xml", "results.json", "report.html", "summary.md")]
    write_junit(results, paths[0], seconds)
    write_json(results, paths[1], {**meta, "seconds": round(seconds, 3)})
    against = (meta.get("comparison") or {}).get("baseline")
    write_html(results, paths[2], seconds, against)
    write_summary(results, paths[3], seconds, against)
    return paths
