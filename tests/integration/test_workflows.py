"""The users' workflows on real hosts, with planted commits in a temporary clone:
a regression is classified as one (not flaky) against a baseline and bisected to its
commit; a flake is labelled flaky by --rerun-failures and refused by bisect.

The planted flake is deterministic: its restorer counts its runs in the host's /tmp
and fails every second one. Two cells restored on one host in a row see 1 (pass) and
2 (fail); the failed cell's rerun on fresh hosts sees 1 again (pass): flaky. Bisect
keeps its hosts, so --bad's K=2 runs see 1 and 2: pass, then fail: flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.__main__ import main as run_testbed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CELL = "i386-to-amd64/escaped/guest64/cold"  # the planted regression breaks escaped only
NATIVE = "i386-to-amd64/native/guest64/cold"  # restored first on the same host
DETECT = "xsmig/stream/detect.py"
R2 = 'return Detection(Encoding.ESCAPED, 64, rule("R2"))'
RESTORE = '    elif args.command == "restore":\n'
FLAKE = """        counter = Path("/tmp/xsmig-planted-flake")
        seen = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(seen))
        if seen % 2 == 0:
            raise StateError("planted flake: every second restore on this host fails")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=planter", "-c", "user.email=p@x.invalid",
         *args], capture_output=True, text=True, check=True).stdout.strip()


def plant(repo: Path, path: str, old: str, new: str, message: str) -> str:
    f = repo / path
    text = f.read_text()
    assert old in text, f"the planting anchor moved: {old!r} not in {path}"
    f.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-qam", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    """HEAD cloned; on a branch: harmless, regression, harmless, docs-only commits; on
    another from the same base: the flake."""
    repo = tmp_path_factory.mktemp("planted") / "xsmig"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(repo)], check=True)
    base = git(repo, "rev-parse", "HEAD")
    plant(repo, "xsmig/cli.py", '"""The xsmig command line', '"""The xsmig command line (1)',
          "harmless 1")
    regress = plant(repo, DETECT, R2,
                    'raise StreamRefused("planted regression: escaped streams refused", 4)',
                    "planted regression")
    plant(repo, "xsmig/cli.py", "(1)", "(2)", "harmless 2")
    (repo / "NOTES").write_text("docs only\n")
    git(repo, "add", "NOTES")
    git(repo, "commit", "-qm", "docs only")
    bad = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "flaky", base)
    flaky = plant(repo, "xsmig/cli.py", RESTORE, RESTORE + FLAKE, "planted flake")
    git(repo, "checkout", "-q", base)
    return {"repo": repo, "base": base, "regress": regress, "bad": bad, "flaky": flaky}


def matrix(repo: Path, report: Path, *extra: str) -> tuple[int, dict[str, dict[str, object]]]:
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "matrix", "--select", f"{NATIVE},{CELL}", "--jobs", "1",
         "--report-dir", str(report), *extra],
        cwd=repo, capture_output=True, text=True, timeout=900,
    )
    doc = json.loads((report / "results.json").read_text())
    return r.returncode, {c["id"]: c for c in doc["cells"]}


def test_a_regression_is_a_regression_and_a_flake_is_flaky(
    clone: dict[str, str | Path], tmp_path: Path
) -> None:
    repo = Path(clone["repo"])
    code, base = matrix(repo, tmp_path / "base")
    assert code == 0 and all(c["verdict"] == "passed" for c in base.values())

    code, now = matrix(repo, tmp_path / "regress", "--baseline", str(tmp_path / "base"),
                       "--rerun-failures", "1", "--xsmig-ref", f"all={clone['bad']}")
    assert code == 1  # a regression fails the run
    assert now[CELL]["change"] == "regression" and now[CELL]["verdict"] == "failed"
    assert [a["verdict"] for a in now[CELL]["reruns"]] == ["failed"]  # not flaky
    assert "planted regression" in str(now[CELL]["message"])
    assert now[NATIVE]["change"] == "passing"

    code, now = matrix(repo, tmp_path / "flaky", "--baseline", str(tmp_path / "base"),
                       "--rerun-failures", "1", "--xsmig-ref", f"all={clone['flaky']}")
    assert code == 0  # a flake is counted apart: only regressions fail by default
    assert now[CELL]["change"] == "flaky" and now[CELL]["verdict"] == "failed"
    assert "planted flake" in str(now[CELL]["message"])
    rerun = now[CELL]["reruns"][0]  # type: ignore[index]
    assert rerun["verdict"] == "passed"
    # both attempts' artifacts are kept
    assert (tmp_path / "flaky" / "artifacts" / CELL.replace("/", "__")).is_dir()
    assert any((tmp_path / "flaky" / a).is_file() for a in rerun["artifacts"])


def bisect(clone: dict[str, str | Path], report: Path, bad: str) -> tuple[int, dict[str, object]]:
    code = run_testbed(["bisect", CELL, "--good", str(clone["base"]), "--bad", bad, "--runs",
                         "2", "--repo", str(clone["repo"]), "--report-dir", str(report)])
    return code, json.loads((report / "bisect.json").read_text())


def test_bisect_finds_the_planted_regression(clone: dict[str, str | Path], tmp_path: Path) -> None:
    code, doc = bisect(clone, tmp_path, str(clone["bad"]))
    assert code == 0 and doc["verdict"] == "found"
    assert doc["first_bad"] == clone["regress"]
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert steps[0]["role"] == "good" and steps[0]["verdicts"] == ["passed", "passed"]
    assert steps[1]["role"] == "bad" and steps[1]["verdicts"] == ["failed", "failed"]
    assert f"all={clone['regress']}" in str(doc["repro"])
    assert (tmp_path / "bisect.md").read_text().count(str(clone["regress"])) >= 1


def test_bisect_refuses_the_planted_flake(clone: dict[str, str | Path], tmp_path: Path) -> None:
    code, doc = bisect(clone, tmp_path, str(clone["flaky"]))
    assert code == 2 and doc["verdict"] == "flaky" and "first_bad" not in doc
    assert "--bad is flaky" in str(doc["reason"])
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert steps[-1]["verdicts"] == ["passed", "failed"]
