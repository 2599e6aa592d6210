"""bisect's search and qualify's expectations, without hosts (fakes for what they do
not test); the real runs are tests/integration/test_workflows.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import scenarios
from scenarios.model import Outcome
from testbed.cells.oracle import Observed, classify, judge
from testbed.hosts.releases import Capabilities
from testbed.runs import bisect, qualify

OLD = Capabilities("0.1.0", frozenset({"native", "escaped", "extended"}), frozenset(),
                   frozenset({"L", "R1", "R2", "R3", "R4", "R5", "R7"}), frozenset(), "test",
                   None, "area")
NEW = Capabilities("0.3.0", frozenset({"native", "escaped", "extended", "v2"}),
                   frozenset({"libxc", "libxl"}), frozenset({"L", "R0", "R1", "R2", "R3", "R4",
                                                             "R5", "R6", "R7"}),
                   frozenset(), "test", "libxl", "xen-buffer")
V020 = Capabilities("0.2.0", NEW.encodings, frozenset({"libxc"}), NEW.rules, frozenset(),
                    "test", "libxc", "area")
CELLS = {c.id: c for c in scenarios.all_cells()}


def test_an_encoding_the_saver_lacks_must_be_refused_by_the_saver() -> None:
    cell, why = qualify.expectation(CELLS["i386-to-amd64/v2/guest64/cold"], OLD, NEW)
    assert cell.expect.outcome is Outcome.REFUSED and cell.expect.by_saver
    assert cell.expect.exit_codes == {2} and why == "saver 0.1.0 lacks v2"


def test_an_encoding_the_restorer_lacks_must_be_refused_by_the_restorer() -> None:
    cell, why = qualify.expectation(CELLS["i386-to-amd64/v2/guest64/cold"], NEW, OLD)
    assert cell.expect.outcome is Outcome.REFUSED and not cell.expect.by_saver
    assert cell.expect.exit_codes == {3, 4} and why == "restorer 0.1.0 lacks v2"


def test_a_restorer_without_r6_asks_for_the_width_then_restores() -> None:
    same = CELLS["amd64-to-amd64/native/guest64/no-ext-info"]
    assert same.expect.outcome is Outcome.IDENTICAL and same.retry is None
    cell, why = qualify.expectation(same, NEW, OLD)
    assert cell.expect.outcome is Outcome.REFUSED
    assert cell.expect.message_contains == "--source-width"
    assert cell.retry is not None and cell.retry.source_width == 64 and "R6" in why
    # a 32-bit saver's stream proves its width (R5): nothing changes
    proven = CELLS["i386-to-amd64/native/guest32/no-ext-info"]
    assert qualify.expectation(proven, NEW, OLD) == (proven, "")
    # both sides able: the scenario's own expectation
    cold = CELLS["amd64-to-i386/escaped/guest64/cold"]
    assert qualify.expectation(cold, OLD, OLD) == (cold, "")


def test_a_framing_or_xsave_layout_the_restorer_lacks_must_be_refused_by_it() -> None:
    v2 = CELLS["i386-to-amd64/v2/guest64/cold"]
    cell, why = qualify.expectation(v2, NEW, V020)
    assert cell.expect.exit_codes == {3, 4} and why == "restorer 0.2.0 lacks the libxl framing"
    assert qualify.expectation(v2, V020, NEW) == (v2, "")  # the new side reads libxc too
    cold = CELLS["i386-to-amd64/native/guest64/cold"]
    assert cold.domain.extended_state
    for saver, restorer in ((V020, NEW), (NEW, V020)):
        cell, why = qualify.expectation(cold, saver, restorer)
        assert cell.expect.outcome is Outcome.REFUSED and not cell.expect.by_saver
        assert why.endswith(f"lacks the {saver.legacy_xsave} xsave buffer")
    # without xsave state the layouts do not meet
    bare = CELLS["amd64-to-amd64/native/guest64/no-ext-info"]
    assert not bare.domain.extended_state
    assert qualify.expectation(bare, V020, NEW) == (bare, "")


def test_the_saver_refusal_is_clean_only_with_one_line_and_the_source_untouched() -> None:
    base = dict(exit_status=3, stderr="xsmig: error: stream truncated: fewer than 8 bytes\n",
                source_digest="d1", source_digest_after="d1", save_status=2,
                save_stderr="xsmig: error: argument --encoding: invalid choice: 'v2'\n")
    actual = classify(Observed(**base))  # type: ignore[arg-type]
    assert actual.outcome is Outcome.REFUSED and actual.by_saver and actual.exit_status == 2
    cell, _ = qualify.expectation(CELLS["i386-to-amd64/v2/guest64/cold"], OLD, NEW)
    assert judge(cell.expect, actual) is None
    # the same refusal never satisfies a restorer's refusal, nor an identical restore
    restorer_cell, _ = qualify.expectation(CELLS["i386-to-amd64/v2/guest64/cold"], NEW, OLD)
    assert judge(restorer_cell.expect, actual) is not None
    assert judge(CELLS["i386-to-amd64/v2/guest64/cold"].expect, actual) is not None
    for bad in ({"save_stderr": "Traceback (most recent call last):\n"},
                {"source_digest_after": "d2"}, {"domain_left": True}):
        assert classify(Observed(**{**base, **bad})).outcome is Outcome.ERROR  # type: ignore[arg-type]


def _step(verdicts: dict[str, list[str]]) -> object:
    log: list[str] = []

    def try_commit(commit: str, subject: str, role: str) -> bisect.Step:
        log.append(commit)
        return bisect.Step(commit, subject, role, list(verdicts[commit]))

    return try_commit, log


COMMITS = [(f"c{i}", f"subject {i}") for i in range(8)]


def test_bisect_names_the_first_bad_commit_after_confirming_both_ends() -> None:
    v = {f"c{i}": ["failed", "failed"] if i >= 5 else ["passed", "passed"] for i in range(8)}
    try_commit, log = _step(v)
    out = bisect._bisect(COMMITS, try_commit)  # type: ignore[arg-type]
    assert out["verdict"] == "found" and out["first_bad"] == "c5" and out["last_good"] == "c4"
    assert log[:2] == ["c0", "c7"] and len(log) == 2 + 3  # ends, then log2(7) steps


@pytest.mark.parametrize(("where", "verdict"), [("c7", "flaky"), ("c0", "refused"),
                                                ("c3", "flaky")])
def test_bisect_refuses_flakes_and_ends_that_do_not_reproduce(where: str, verdict: str) -> None:
    v = {f"c{i}": ["failed", "failed"] if i >= 5 else ["passed", "passed"] for i in range(8)}
    v[where] = ["passed", "failed"]
    try_commit, _ = _step(v)
    out = bisect._bisect(COMMITS, try_commit)  # type: ignore[arg-type]
    assert out["verdict"] == verdict and "first_bad" not in out
    assert "flaky" in out["reason"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@x.invalid", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_candidates_are_the_commits_that_change_xsmig(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "xsmig").mkdir()
    shas = []
    for i, path in enumerate(["xsmig/a.py", "docs.md", "xsmig/a.py", "docs.md"]):
        (tmp_path / path).write_text(str(i))
        _git(tmp_path, "add", "-A")
        _git(tmp_path, "commit", "-qm", f"commit {i}")
        shas.append(_git(tmp_path, "rev-parse", "HEAD"))
    got = bisect.candidates(tmp_path, shas[0], shas[3])
    assert [c for c, _ in got] == [shas[0], shas[2]]  # commit 3 has commit 2's xsmig tree
    with pytest.raises(bisect.BisectError, match="not an ancestor"):
        bisect.candidates(tmp_path, shas[3], shas[0])


def _result(cell_id: str, ok: bool) -> object:
    from testbed.cells.results import CellResult

    pair, enc, guest, scenario = cell_id.split("/")
    return CellResult(cell_id, scenario, pair, f"{enc}/{guest}", [], 1, "", "",
                      "passed" if ok else "failed", message="" if ok else "boom",
                      repro=f"repro {cell_id}")


def test_the_report_answers_the_upgrade_question_first() -> None:
    import dataclasses

    # as if 0.1.0 wrote Xen's xsave buffer: native then works in all four pairs
    old = qualify.Side("old", "0.1.0", "0.1.0", dataclasses.replace(OLD, legacy_xsave="xen-buffer"))
    new = qualify.Side("new", "worktree", None, NEW)
    ids = [f"i386-to-amd64/{e}/guest64/cold" for e in ("native", "v2")]
    sides = {"old": old, "new": new}
    pairs = []
    for a, b in qualify.SIDE_PAIRS:
        judged = [qualify.expectation(CELLS[i], sides[a].caps, sides[b].caps) for i in ids]
        pairs.append(qualify._pair_summary(f"{a}-to-{b}", sides[a], sides[b], judged,
                                           [_result(i, True) for i in ids]))
    doc = qualify.summarize(old, new, pairs, 1.0)
    assert doc["upgrade"] and doc["rollout_encodings"] == ["native"]
    text = qualify.markdown(doc)
    assert text.splitlines()[0] == ("Can a fleet upgrade host by host from 0.1.0 to worktree? "
                                    "YES, saving native during the roll-out; v2 only once no "
                                    "0.1.0 host is left")
    assert "refused cleanly (saver 0.1.0 lacks v2)" in text
    # one failed cell anywhere: the answer is no, and the cell is listed with its repro
    pairs[1]["encodings"]["native"]["failed"].append(
        {"cell": ids[0], "message": "boom", "repro": "repro x"})
    pairs[1]["failed"] = 1
    doc = qualify.summarize(old, new, pairs, 1.0)
    text = qualify.markdown(doc)
    assert text.startswith("Can a fleet upgrade host by host from 0.1.0 to worktree? NO: "
                           "new-to-old (1 cells) fail")
    assert f"new-to-old `{ids[0]}`: boom" in text
    # the real 0.1.0 writes the xsave area alone: its native cells are refused both ways
    real = qualify.Side("old", "0.1.0", "0.1.0", OLD)
    pairs = []
    for a, b in qualify.SIDE_PAIRS:
        s = {"old": real, "new": new}
        judged = [qualify.expectation(CELLS[i], s[a].caps, s[b].caps) for i in ids]
        pairs.append(qualify._pair_summary(f"{a}-to-{b}", s[a], s[b], judged,
                                           [_result(i, True) for i in ids]))
    text = qualify.markdown(qualify.summarize(real, new, pairs, 1.0))
    assert text.splitlines()[0].endswith("NO: no encoding works in all four pairs")
    assert "refused cleanly (restorer 0.3.0 lacks the area xsave buffer)" in text
