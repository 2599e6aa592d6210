"""A run against a baseline: each cell sorted into regression, fixed, still failing,
new, flaky or passing, as Xen's osstest sorts a flight against the last good one.

- regression: as expected in the baseline, not now (and no rerun passed);
- fixed: failed in the baseline, as expected now;
- still-failing: failed in both;
- new: not in the baseline (its verdict says how it went);
- flaky: failed, then passed when rerun on fresh hosts with the same seed
  (`--rerun-failures`): counted apart, whatever the baseline said;
- passing: as expected in both.

Only regressions fail the run by default (`--fail-on regression`); `--fail-on any`
fails on every cell not as expected, flakes included. Without a baseline every
failure fails the run, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.cells.results import CellResult, ResultsError, read_results
from testbed.errors import TestbedError

REGRESSION = "regression"
FIXED = "fixed"
STILL_FAILING = "still-failing"
NEW = "new"
FLAKY = "flaky"
PASSING = "passing"
CHANGES = (REGRESSION, FLAKY, STILL_FAILING, NEW, FIXED, PASSING)  # report order
FAIL_ON = ("regression", "any")


class BaselineError(TestbedError):
    pass


def results_path(path: Path) -> Path:
    """A results.json, or a report directory holding one."""
    return path / "results.json" if path.is_dir() else path


def load(path: Path) -> dict[str, CellResult]:
    """The baseline's cells by id; one clear error for anything that is not a matrix run."""
    try:
        _, cells = read_results(results_path(path))
    except ResultsError as e:
        raise BaselineError(f"--baseline {path}: {e}") from None
    return {c.id: c for c in cells}


def classify(now: CellResult, before: CellResult | None) -> str:
    if now.flaky:
        return FLAKY
    if before is None:
        return NEW
    if now.ok:
        return PASSING if before.ok else FIXED
    return STILL_FAILING if not before.ok else REGRESSION


def compare(results: Sequence[CellResult], baseline: dict[str, CellResult]) -> None:
    """Write each cell's change (and the baseline's verdict) into it."""
    for r in results:
        before = baseline.get(r.id)
        r.change = classify(r, before)
        r.baseline_verdict = before.verdict if before is not None else None


def mark_flakes(results: Sequence[CellResult]) -> None:
    """Without a baseline, only flakes get a change label."""
    for r in results:
        if r.flaky:
            r.change = FLAKY


@dataclass(frozen=True)
class Comparison:
    baseline: str | None
    counts: dict[str, int]

    def line(self) -> str:
        parts = [f"{self.counts.get(c, 0)} {c}" for c in CHANGES if self.counts.get(c, 0)]
        against = f"against {self.baseline}" if self.baseline else "no baseline"
        return f"{against}: " + (", ".join(parts) or "no cells")

    def to_json(self) -> dict[str, object]:
        return {"baseline": self.baseline, "counts": dict(self.counts)}


def summarize(results: Sequence[CellResult], baseline: str | None) -> Comparison:
    counts = Counter(r.change for r in results if r.change)
    return Comparison(baseline, {c: counts.get(c, 0) for c in CHANGES if counts.get(c, 0)})


def failing(results: Sequence[CellResult], fail_on: str) -> list[CellResult]:
    """The cells that make the run fail under this policy."""
    if fail_on == "regression":
        return [r for r in results if r.change == REGRESSION]
    return [r for r in results if not r.ok or r.flaky]


def default_fail_on(has_baseline: bool) -> str:
    return "regression" if has_baseline else "any"


# -- how the reports show a change ------------------------------------------------
TERM_LABEL = {REGRESSION: "✗ REGR", FLAKY: "≈ flaky", STILL_FAILING: "✗ still", NEW: "new",
              FIXED: "fixed"}
HEADLINE = {
    REGRESSION: "passed in the baseline, fails now",
    FLAKY: "failed, then passed on a rerun with the same seed",
    STILL_FAILING: "failed in the baseline too",
    NEW: "not in the baseline",
    FIXED: "failed in the baseline, passes now",
    PASSING: "as expected in both",
}


def detail(r: CellResult) -> str:
    """One line on what is known of a cell beyond its verdict: change, streak, reruns."""
    bits = []
    if r.change:
        bits.append(r.change)
    if r.baseline_verdict is not None and r.change != PASSING:
        bits.append(f"baseline {r.baseline_verdict}")
    if r.reruns:
        bits.append("reruns: " + ", ".join(a.verdict for a in r.reruns))
    if r.streak:
        bits.append(f"failing {r.streak} run(s) in a row")
    if r.flake_rate:
        bits.append(r.flake_rate)
    return "; ".join(bits)


def markdown(results: Sequence[CellResult], against: str | None) -> list[str]:
    """summary.md's section: the counts, then every cell that is not plainly passing."""
    changed = [r for r in results if r.change and r.change != PASSING]
    if not any(r.change for r in results):
        return []
    s = summarize(results, against)
    out = ["## Against the baseline" if against else "## Flakes", "",
           f"{s.line()}.", "", "| change | cells | meaning |", "|---|--:|---|"]
    out += [f"| {c} | {n} | {HEADLINE[c]} |" for c, n in s.counts.items()]
    out.append("")
    for r in sorted(changed, key=lambda r: CHANGES.index(r.change)):
        out.append(f"- **{r.change}** `{r.id}`: {detail(r)}")
        if not r.ok:
            out.append(f"  - {(r.message.splitlines() or [''])[0]}")
            out.append(f"  - repro: `{r.repro}`")
        for a in r.reruns:
            links = ", ".join(f"`{p}`" for p in a.artifacts[:3])
            tail = f"; {links}" if links else ""
            out.append(f"  - rerun: {a.verdict} in {a.seconds:.1f} s{tail}")
    out.append("")
    return out
