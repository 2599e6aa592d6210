"""Live save (`xsmig save --live`): pre-copy rounds over a running guest, as Xen's
saver does in log-dirty mode.

Round 0 clears the log-dirty bitmap, then sends every page. Each later round fetches
and clears the bitmap and sends the pages dirtied since the previous fetch (in legacy
encodings these are more page batches, in v2 more PAGE_DATA records: a restorer keeps
the last copy of a page). The rounds stop when
- the pages dirty now are at most --dirty-threshold ("threshold"), or
- the estimated downtime fits --max-downtime ("downtime"): the dirty pages' bytes at
  the rate the output has taken bytes since the save began (an output that buffers
  ahead, such as an SSH window, makes it optimistic until the buffer is full), or
- --max-rounds rounds have been sent ("round-limit": the guest dirties faster than the
  link carries, and the last round is as big as the guest makes it).
Then the guest is paused (xsmig/guest.py), the last round sent from the bitmap, and
the vCPU state and the tail follow. Every round is one JSON line on stderr: round,
pages, bytes, seconds; the last line adds the stop reason, the pause's wall-clock time
(time.time(): the testbed measures downtime from it) and the guest's recorded state.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NamedTuple, TextIO

from xsmig import pagetypes as pt
from xsmig.dirty import DirtyLog, pfns
from xsmig.domain import PAGE_SIZE
from xsmig.errors import UsageError
from xsmig.guest import RunFiles, pause
from xsmig.stream.writer import _Saver


class LiveOptions(NamedTuple):
    max_rounds: int = 30
    dirty_threshold: int = 50  # pages
    max_downtime: float = 0.3  # seconds


def check(opts: LiveOptions) -> None:
    if opts.max_rounds < 1:
        raise UsageError("--max-rounds must be at least 1")
    if opts.dirty_threshold < 0:
        raise UsageError("--dirty-threshold must be 0 or more pages")
    if not opts.max_downtime >= 0:
        raise UsageError("--max-downtime must be 0 or more seconds")


class LiveRounds:
    """The saver's body for a live save: called by stream.writer.save with the saver."""

    def __init__(self, files: RunFiles, opts: LiveOptions, report: TextIO = sys.stderr
                 ) -> None:
        self.files = files
        self.opts = opts
        self.report = report
        self.rounds: list[dict[str, Any]] = []

    def _say(self, line: dict[str, Any]) -> None:
        print(json.dumps(line, sort_keys=True), file=self.report, flush=True)

    def _round(self, saver: _Saver, number: int, send: list[int] | None) -> dict[str, Any]:
        out: Any = saver.out  # both encoders count their bytes (offset) and flush (out)
        t0, b0, p0 = time.monotonic(), out.offset, saver.pages_sent
        if send is None:
            saver.all_pages()
        else:
            saver.send(send)
        out.out.flush()  # the round leaves now: its seconds include the link's
        line = {"round": number, "pages": saver.pages_sent - p0,
                "bytes": out.offset - b0,
                "seconds": round(time.monotonic() - t0, 4)}
        self.rounds.append(line)
        return line

    def __call__(self, saver: _Saver) -> None:
        meta = saver.meta
        log = DirtyLog(self.files.dirty, meta.p2m_size)
        guest = log.exists()
        has_data = bytes(saver.types).translate(pt.HAS_DATA)
        started = time.monotonic()
        if guest:
            log.fetch_and_clear()  # log-dirty on: what is written from now on is tracked
        line = self._round(saver, 0, None)
        number, stop = 0, "no-guest"
        while guest:
            dirty = log.count()
            elapsed = time.monotonic() - started
            sent = sum(r["bytes"] for r in self.rounds)
            estimate = dirty * PAGE_SIZE * elapsed / sent if sent else float(dirty)
            line["dirty_after"], line["downtime_estimate"] = dirty, round(estimate, 4)
            self._say(line)
            if dirty <= self.opts.dirty_threshold:
                stop = "threshold"
            elif estimate <= self.opts.max_downtime:
                stop = "downtime"
            elif number + 1 >= self.opts.max_rounds:
                stop = "round-limit"
            else:
                number += 1
                line = self._round(saver, number, pfns(log.fetch_and_clear(), meta.p2m_size,
                                                       has_data))
                continue
            break
        else:
            self._say(line)
        paused_at = time.time()
        state = pause(self.files) if guest else None
        paused_wait = round(time.time() - paused_at, 4)
        last = pfns(log.fetch_and_clear(), meta.p2m_size, has_data) if guest else []
        final = self._round(saver, number + 1, last)
        saver.body_end()
        final.update({"final": True, "stop": stop, "paused_at": paused_at,
                      "pause_seconds": paused_wait,
                      "total_seconds": round(time.monotonic() - started, 4),
                      "rounds": len(self.rounds),
                      "pages_per_round": [r["pages"] for r in self.rounds]})
        if state is not None:
            final["guest"] = {k: state.get(k) for k in ("counter", "position", "working_set",
                                                        "pages_written", "passes")}
        self._say(final)
