"""--shard K/N slices and `python -m testbed merge`: partition, balance, determinism, and
a sharded run's merged report equal in verdicts to the single run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import scenarios
from testbed.__main__ import main
from testbed.cells.results import FAILED, PASSED, REFUSED, CellResult
from testbed.reports import report
from testbed.reports.merge import MergeError, merge
from testbed.runs.shard import ShardError, assign, cost, parse_shard, shard

ALL = scenarios.all_cells()
NIGHTLY = scenarios.on_arches(ALL, ("i386", "amd64"))


def test_parse_shard() -> None:
    assert parse_shard("1/1") == (1, 1)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0", "-1/2", ""):
        with pytest.raises(ShardError):
            parse_shard(bad)


@pytest.mark.parametrize("cells", [NIGHTLY, ALL], ids=["nightly", "all"])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_partition_the_selection_deterministically_and_balanced(cells: list, count: int
                                                                        ) -> None:
    slices = assign(cells, count)
    ids = [c.id for s in slices for c in s]
    assert sorted(ids) == sorted(c.id for c in cells) and len(set(ids)) == len(ids)
    assert [[c.id for c in s] for s in assign(list(cells), count)] == [[c.id for c in s]
                                                                       for s in slices]
    position = {c.id: i for i, c in enumerate(cells)}
    for s in slices:  # each slice keeps matrix order
        assert [position[c.id] for c in s] == sorted(position[c.id] for c in s)
    loads = [sum(cost(c) for c in s) for s in slices]
    assert max(loads) - min(loads) <= max(cost(c) for c in cells)


def test_empty_shard_is_an_error() -> None:
    with pytest.raises(ShardError, match="use fewer shards"):
        shard(NIGHTLY[:2], 3, 3)


def _result(cell: scenarios.Cell, verdict: str, artifacts: list[str] | None = None
            ) -> CellResult:
    return CellResult(
        id=cell.id, scenario=cell.scenario, pair=cell.pair, column=cell.column,
        hosts=list(cell.hops), seed=cell.seed, expected=cell.expect.describe(),
        actual="identical" if verdict != REFUSED else "refused", verdict=verdict,
        artifacts=artifacts or [],
    )


def _verdicts(report_dir: Path) -> list[tuple[str, str]]:
    doc = json.loads((report_dir / "results.json").read_text())
    return [(c["id"], c["verdict"]) for c in doc["cells"]]


def test_two_shards_merge_to_the_single_runs_verdicts(tmp_path: Path) -> None:
    cells = NIGHTLY[:40]
    verdicts = [(PASSED, REFUSED, FAILED)[i % 3] for i in range(len(cells))]
    results = {c.id: _result(c, v) for c, v in zip(cells, verdicts, strict=True)}
    failing = cells[2]
    art = f"artifacts/{failing.domain_name}/stream.bin"
    results[failing.id] = _result(failing, FAILED, [art])
    report.write_all(list(results.values()), tmp_path / "single", 10.0, {})
    for k in (1, 2):
        part = [results[c.id] for c in shard(cells, k, 2)]
        d = tmp_path / f"shard{k}"
        report.write_all(part, d, 5.0 + k, {"seconds": 5.0 + k})
        if results[failing.id] in part:
            (d / art).parent.mkdir(parents=True)
            (d / art).write_bytes(b"stream")
    out = tmp_path / "merged"
    code = main(["merge", str(tmp_path / "shard2"), str(tmp_path / "shard1"), "-o", str(out)])
    assert code == 1  # some cells failed
    assert _verdicts(out) == _verdicts(tmp_path / "single")
    assert (out / art).read_bytes() == b"stream"
    for name in ("junit.xml", "report.html", "summary.md"):
        assert (out / name).stat().st_size > 0
    junit = (out / "junit.xml").read_text()
    assert junit.count("<testcase") == len(cells)
    assert json.loads((out / "results.json").read_text())["meta"]["seconds"] == 7.0


def test_overlapping_or_missing_shards_are_one_line_errors(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    part = [_result(c, PASSED) for c in NIGHTLY[:3]]
    for d in ("a", "b"):
        report.write_all(part, tmp_path / d, 1.0, {})
    with pytest.raises(MergeError, match="overlap"):
        merge([tmp_path / "a", tmp_path / "b"])
    assert main(["merge", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read") and "\n" not in err
    assert main(["merge", str(tmp_path / "a"), "-o", str(tmp_path / "o")]) == 0


def test_merge_takes_report_dir_as_matrix_does_and_keeps_o() -> None:
    import argparse

    from testbed.reports import merge as merge_cmd

    parser = argparse.ArgumentParser()
    merge_cmd.configure(parser)
    assert parser.parse_args(["a", "--report-dir", "x"]).output == Path("x")
    assert parser.parse_args(["a", "-o", "y"]).output == Path("y")
    assert parser.parse_args(["a", "--output", "z"]).output == Path("z")
