"""The live cell's reading of the save's per-round lines (testbed/cells/live.py), and the
live-workload scenario's cells."""

from __future__ import annotations

import json

from scenarios import live_workload
from scenarios.hosts import NIGHTLY_PAIRS
from testbed.cells.live import rounds_of, summary


def test_rounds_and_downtime_from_the_save_stderr() -> None:
    final = {"round": 2, "pages": 7, "bytes": 30000, "seconds": 0.01, "final": True,
             "stop": "threshold", "paused_at": 1000.0, "rounds": 3,
             "pages_per_round": [2048, 300, 7], "guest": {"counter": 4, "position": 9}}
    err = "\n".join([json.dumps({"round": 0, "pages": 2048}), "not json {",
                     json.dumps({"round": 1, "pages": 300}), "{broken", json.dumps(final),
                     "8405024 bytes, 2355 pages in 4 batches, 1.00s"])
    lines = rounds_of(err)
    assert [line["round"] for line in lines] == [0, 1, 2]
    figures = summary(lines, 1001.25, 4.0, 100.0)
    assert figures["rounds"] == 3 and figures["pages_per_round"] == [2048, 300, 7]
    assert figures["downtime"] == 1.25 and figures["stop"] == "threshold"
    assert figures["guest"] == {"counter": 4, "position": 9}
    # A save that died before its last round: no downtime to report, no guest.
    cut = summary(lines[:2], 1001.25, 4.0, 100.0)
    assert cut["downtime"] is None and cut["stop"] is None and cut["guest"] is None


def test_live_workload_cells() -> None:
    cells = live_workload.cells()
    nightly = [c for c in cells if c.pair in NIGHTLY_PAIRS]
    converging = [c for c in nightly if c.scenario == live_workload.NAME]
    assert {(c.pair, c.encoding) for c in converging} == {
        (p, e) for p in NIGHTLY_PAIRS for e in ("native", "escaped", "extended", "v2")}
    outrun = [c for c in cells if c.scenario == live_workload.OUTRUN]
    assert {c.pair for c in outrun} == {"i386-to-amd64", "amd64-to-i386"}
    for c in cells:
        assert c.live is not None and len(c.hops) == 2
        if c in outrun:
            assert c.live.stops == ("round-limit",) and c.live.max_downtime == 0
        else:
            assert "round-limit" not in c.live.stops


def test_the_outrun_guest_is_larger_than_the_buffers_between_save_and_restore() -> None:
    """With a guest the SSH window holds whole, every round went into buffers in
    milliseconds and could end with nothing dirty ("threshold"): the outrun unseen."""
    from testbed.cells.migrate import WINDOW

    for c in live_workload.cells():
        if c.scenario == live_workload.OUTRUN:
            assert c.domain.pages * 4096 >= 2 * WINDOW
