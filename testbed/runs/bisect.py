"""`python -m testbed bisect CELL --good REF --bad REF [--runs K]`: the first commit
whose xsmig fails a cell.

The cell runs as `--xsmig-ref` runs it: the runner's testbed and scenarios judge it,
the hosts run xsmig from the commit under test. The cell's hosts start once and are
kept between steps; only the mounted xsmig tree changes (swapped in place, the hosts'
agents and bytecode renewed). Like osstest's bisector it names no culprit until both
ends are reproduced: good must pass and bad fail K times out of K first, and every
step runs K times. A commit that both passes and fails is a flake: bisect says so and
stops. Commits that leave xsmig/ unchanged are not run (their tree is an earlier one's).

Exit status: 0 when a first bad commit is named; 2 when bisect refuses (a flaky end
or step, a good end that fails, a bad end that passes); 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

HELP = "find the first xsmig commit that fails a cell (good/bad confirmed K/K, flakes refused)"
FOUND, REFUSED = 0, 2


class BisectError(TestbedError):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cell_id", metavar="CELL", help="e.g. i386-to-amd64/escaped/guest64/cold")
    parser.add_argument("--good", required=True, metavar="REF",
                        help="a release name (CHANGELOG.md) or git ref where the cell passes")
    parser.add_argument("--bad", required=True, metavar="REF",
                        help="a release name or git ref where it fails (a descendant of --good)")
    parser.add_argument("--runs", type=int, default=2, metavar="K",
                        help="runs per commit; each end must give K/K (default 2)")
    parser.add_argument("--repo", type=Path, default=None, metavar="PATH",
                        help="the git repository whose history is bisected (default: this one)")
    parser.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                        help="where the step log and artifacts go (default reports/bisect/<cell>)")
    parser.add_argument("--mode", choices=("qemu", "native"), default="qemu")


@dataclass
class Step:
    commit: str
    subject: str
    role: str  # good, bad, or step
    verdicts: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for v in self.verdicts if v == "failed")

    @property
    def judgement(self) -> str:
        if self.failed == 0:
            return "good"
        return "bad" if self.failed == len(self.verdicts) else "flaky"

    def line(self) -> str:
        k = len(self.verdicts)
        return (f"{self.role:>4} {self.commit[:10]} {self.judgement:<5} "
                f"({k - self.failed}/{k} passed)  {self.subject}")


def _git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise BisectError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def candidates(repo: Path, good: str, bad: str) -> list[tuple[str, str]]:
    """(commit, subject) from good (first) to bad (last) along bad's first-parent line,
    keeping only the commits that change xsmig/ (the first commit of each tree)."""
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good, bad]
                      ).returncode != 0:
        raise BisectError(f"--good {good[:10]} is not an ancestor of --bad {bad[:10]}")
    line = _git(repo, "rev-list", "--reverse", "--first-parent", f"{good}..{bad}").split()
    out = [(good, _git(repo, "log", "-1", "--format=%s", good))]
    last_tree = _git(repo, "rev-parse", f"{good}:xsmig")
    for commit in line:
        tree = _git(repo, "rev-parse", f"{commit}:xsmig")
        if tree != last_tree:
            out.append((commit, _git(repo, "log", "-1", "--format=%s", commit)))
            last_tree = tree
    return out  # when bad's tree is an earlier commit's, that commit stands for it


class Tree:
    """The xsmig directory every host mounts; its contents are swapped between steps."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.repo = repo
        self.root = root
        self.package = root / "mounted" / "xsmig"
        self.package.mkdir(parents=True)
        self.current: str | None = None
        self._mtime = int(time.time())

    def checkout(self, commit: str) -> bool:
        """Put commit's xsmig/ in place; False when it is already there."""
        if commit == self.current:
            return False
        from testbed.hosts.sources import export_ref

        exported = export_ref(commit, self.root / "exports", self.repo)
        for child in list(self.package.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(exported, self.package, dirs_exist_ok=True)
        # Fresh mtimes for every step: a cached .pyc is checked by source mtime and size,
        # and two commits made within one second would otherwise share both.
        self._mtime = max(int(time.time()), self._mtime + 1)
        for path in self.package.rglob("*"):
            os.utime(path, (self._mtime, self._mtime))
        self.current = commit
        return True


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    import scenarios
    from testbed.cells.execute import slug
    from testbed.hosts.hosts import fleet, new_run_id
    from testbed.hosts.sources import REPO, resolve_ref
    from testbed.runs.selection import by_id
    from testbed.runs.session import DEFAULT_REPORT_DIR

    if args.runs < 1:
        raise BisectError("--runs must be at least 1")
    console = Console()
    if not console.is_terminal:  # logs: no wrapping of ids and commands at 80 columns
        console = Console(width=200)

    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    repo = (args.repo or REPO).resolve()
    cell = by_id(scenarios.all_cells(), args.cell_id)
    good, bad = resolve_ref(args.good, repo), resolve_ref(args.bad, repo)
    commits = candidates(repo, good, bad)
    report_dir = (args.report_dir or DEFAULT_REPORT_DIR.parent / "bisect" / slug(cell.id)).resolve()
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    names = list(dict.fromkeys(cell.hops))
    say(f"bisect {cell.id}: {len(commits) - 1} commit(s) after --good {args.good} "
        f"({good[:10]}) up to --bad {args.bad} ({bad[:10]}) change xsmig/; {args.runs} run(s) "
        f"per commit on {' -> '.join(cell.hops)}, hosts kept between steps")
    log: list[Step] = []
    outcome: dict[str, Any] = {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xsmig-bisect-") as tmp:
        tree = Tree(repo, Path(tmp))
        tree.checkout(good)
        with fleet(names, run_id=new_run_id(), mounts={n: tree.package for n in names},
                   source_labels={n: "bisect" for n in names}, mode=args.mode,
                   progress=say) as f:

            def try_commit(commit: str, subject: str, role: str) -> Step:
                if tree.checkout(commit):
                    for n in names:
                        f.reload_source(n)
                step = Step(commit, subject, role)
                for k in range(1, args.runs + 1):
                    _clean(f, cell, names)
                    where = report_dir / "steps" / f"{len(log) + 1:02d}-{commit[:10]}" / str(k)
                    r = _run_cell(cell, f, where, commit)
                    step.verdicts.append(r.verdict)
                    step.messages.append((r.message.splitlines() or [""])[0])
                log.append(step)
                say(step.line())
                for m in dict.fromkeys(x for x in step.messages if x):
                    say(f"       {m}")
                return step

            outcome = _bisect(commits, try_commit)
    outcome["seconds"] = round(time.monotonic() - start, 1)
    return _finish(args, cell, repo, commits, log, outcome, report_dir, say)


def _bisect(
    commits: list[tuple[str, str]], try_commit: Callable[[str, str, str], Step]
) -> dict[str, Any]:
    g = try_commit(*commits[0], "good")
    if g.judgement != "good":
        why = "is flaky" if g.judgement == "flaky" else "fails every run"
        return {"verdict": "refused", "reason": f"--good {why} ({g.failed}/{len(g.verdicts)} "
                "runs failed): nothing to bisect from"}
    b = try_commit(*commits[-1], "bad")
    if b.judgement != "bad":
        if b.judgement == "flaky":
            reason = (f"--bad is flaky: it failed {b.failed} of {len(b.verdicts)} runs; a flake "
                      "is not bisected (rerun with more --runs, or look at the cell's flake rate)")
        else:
            reason = "--bad passes every run: nothing to bisect"
        return {"verdict": "flaky" if b.judgement == "flaky" else "refused", "reason": reason}
    lo, hi = 0, len(commits) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        s = try_commit(*commits[mid], "step")
        if s.judgement == "flaky":
            return {"verdict": "flaky", "reason": f"{s.commit[:10]} is flaky ({s.failed}/"
                    f"{len(s.verdicts)} runs failed): the first bad commit is after "
                    f"{commits[lo][0][:10]} and at or before {commits[hi][0][:10]}; not naming one"}
        if s.judgement == "good":
            lo = mid
        else:
            hi = mid
    return {"verdict": "found", "first_bad": commits[hi][0], "subject": commits[hi][1],
            "last_good": commits[lo][0]}


def _clean(f: Any, cell: Any, names: list[str]) -> None:
    """A failed run leaves its domain on the source (and a wrong restore on the
    destination): remove them, so the next run creates the same guest afresh."""
    from testbed.cells.artifacts import remote_stream

    for n in names:
        host = f.host(n)
        host.xsmig("destroy", cell.domain_name, timeout=cell.timeout)
        host.run(["rm", "-f", remote_stream(cell.domain_name)], timeout=60)


def _run_cell(cell: Any, f: Any, where: Path, commit: str) -> Any:
    from testbed.cells.execute import run_cell

    return run_cell(cell, f, where, refs={"all": commit})


def _repro(cell_id: str, commit: str, repo: Path) -> str:
    from testbed.hosts.sources import REPO

    cmd = f"python3 -m testbed repro {cell_id} --xsmig-ref all={commit}"
    return cmd if repo == REPO.resolve() else f"{cmd}  # commit of {repo}"


def _finish(args: argparse.Namespace, cell: Any, repo: Path, commits: list[tuple[str, str]],
            log: list[Step], outcome: dict[str, Any], report_dir: Path,
            say: Callable[[str], None]) -> int:
    found = outcome["verdict"] == "found"
    if found:
        say(f"first bad commit: {outcome['first_bad']} {outcome['subject']}")
        say(f"last good commit: {outcome['last_good']}")
        outcome["repro"] = _repro(cell.id, outcome["first_bad"], repo)
        say(f"repro: {outcome['repro']}")
    else:
        say(f"no culprit named: {outcome['reason']}")
    doc = {"cell": cell.id, "seed": cell.seed, "good": args.good, "bad": args.bad,
           "runs": args.runs, "repo": str(repo), "candidates": len(commits),
           **outcome, "steps": [{**asdict(s), "judgement": s.judgement} for s in log]}
    (report_dir / "bisect.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [f"# bisect {cell.id}", "",
          (f"**first bad commit: `{outcome['first_bad']}`** {outcome['subject']}" if found
           else f"**no culprit named**: {outcome['reason']}"), "",
          f"good {args.good}, bad {args.bad}, {args.runs} run(s) per commit, "
          f"{len(commits)} commits with distinct xsmig/ trees, {outcome['seconds']} s.", "",
          "| role | commit | judgement | runs | subject |", "|---|---|---|---|---|"]
    md += [f"| {s.role} | `{s.commit[:10]}` | {s.judgement} | {' '.join(s.verdicts)} | "
           f"{s.subject} |" for s in log]
    if found:
        md += ["", f"repro: `{outcome['repro']}`"]
    (report_dir / "bisect.md").write_text("\n".join(md) + "\n")
    say(f"report: {report_dir / 'bisect.md'}, {report_dir / 'bisect.json'}")
    return FOUND if found else REFUSED
