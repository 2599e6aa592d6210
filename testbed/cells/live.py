"""Running one live cell (scenarios/live_workload.py): a guest dirtying the source domain
in the background while `xsmig save --live` streams into `xsmig restore`.

Steps: create the domain on the source; `xsmig run --detach` starts the guest there
(it stays in the background of the source host, outside any SSH channel); the live
save | restore; then, at once, the source's digest (the guest paused: the domain no
longer changes), the destination's digest and `xsmig guest-check` on the destination
with the counter and position the guest recorded at its pause. Judged: the restore
succeeded, the digests agree, the invariant holds, the save stopped for an expected
reason. Downtime runs from the pause (the save's wall-clock `paused_at`; the hosts share
the runner's kernel clock) until the restore has exited; total time is the transfer's.
Whatever happens, the guest is paused before the cell ends: a failed cell leaves a
consistent, resumable source domain for the artifacts.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scenarios.model import Cell
from testbed.cells import artifacts, migrate
from testbed.cells.domains import HostProvider, create_argv
from testbed.cells.results import CellResult, HopRecord
from testbed.errors import TestbedError


def rounds_of(save_stderr: str) -> list[dict[str, Any]]:
    """The save's per-round JSON lines (other lines are ignored)."""
    out = []
    for line in save_stderr.splitlines():
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "round" in data:
                out.append(data)
    return out


def summary(lines: list[dict[str, Any]], restored_at: float, seconds: float,
            rate: float) -> dict[str, Any]:
    final = lines[-1] if lines and lines[-1].get("final") else {}
    paused_at = final.get("paused_at")
    return {
        "dirty_rate": rate,
        "rounds": final.get("rounds", len(lines)),
        "pages_per_round": [line.get("pages") for line in lines],
        "stop": final.get("stop"),
        "downtime": round(restored_at - paused_at, 3) if paused_at else None,
        "total_seconds": round(seconds, 3),
        "guest": final.get("guest"),
    }


def run_live(cell: Cell, provider: HostProvider, workdir: Path, result: CellResult) -> str | None:
    assert cell.live is not None and len(cell.hops) == 2
    live = cell.live
    src, dst = provider.host(cell.hops[0]), provider.host(cell.hops[1])
    name = cell.domain_name
    t0 = time.monotonic()
    made = src.xsmig(*create_argv(cell), timeout=cell.timeout)
    if not made.ok:
        return f"xsmig create on {src.name}: exit {made.exit_status}: {made.err.strip()}"
    started = src.xsmig("run", name, "--dirty-rate", f"{live.dirty_rate:g}", "--detach",
                        timeout=cell.timeout)
    if not started.ok:
        return f"xsmig run on {src.name}: exit {started.exit_status}: {started.err.strip()}"
    result.setup_seconds = round(time.monotonic() - t0, 3)
    try:
        save = migrate.save_argv(name, cell.encoding, no_ext_info=False, rounds=None)
        t = migrate.stream(
            src, dst, save + live.save_args(),
            artifacts.teed(migrate.restore_argv(name, profile="current", source_width=None),
                           artifacts.remote_stream(name)),
            timeout=cell.timeout, tee=workdir / "hop1-try1.stream")
        restored_at = time.time()
    finally:
        # Never leave a guest running: a failed save did not pause it (no-op if it did).
        paused = src.xsmig("pause", name, timeout=cell.timeout)
    (workdir / "hop1-try1-save.stderr").write_text(t.save_stderr)
    (workdir / "hop1-try1-restore.stderr").write_text(t.restore_stderr)
    lines = rounds_of(t.save_stderr)
    figures = summary(lines, restored_at, t.seconds, live.dirty_rate)
    result.live = figures
    problems: list[str] = []
    if not paused.ok:
        problems.append(f"xsmig pause on {src.name}: {paused.err.strip()}")
    if t.error or t.save_status != 0 or t.restore_status != 0:
        problems.append(f"live migration failed: {t.error or ''} save exit {t.save_status}: "
                        f"{t.save_stderr.strip()[-300:]}; restore exit {t.restore_status}: "
                        f"{t.restore_stderr.strip()[-300:]}")
    guest = figures["guest"] or {}
    if not problems:
        if figures["stop"] not in live.stops:
            problems.append(f"the rounds stopped at {figures['stop']!r}, expected "
                            f"{' or '.join(live.stops)}")
        if not guest:
            problems.append("the save reported no paused guest")
        with ThreadPoolExecutor(max_workers=1) as pool:  # two hosts, asked at once
            before = pool.submit(src.digest, name, cell.timeout)
            try:
                after: str | None = dst.digest(name, cell.timeout)
            except TestbedError as exc:
                after = None
                problems.append(str(exc))
            check = dst.xsmig("guest-check", name, "--counter", str(guest.get("counter")),
                              "--position", str(guest.get("position")),
                              timeout=cell.timeout) if guest else None
            try:
                if after is not None and before.result() != after:
                    problems.append("the destination differs from the source at the pause")
            except TestbedError as exc:
                problems.append(str(exc))
        if check is not None and not check.ok:
            problems.append(f"guest invariant broken on {dst.name}: {check.err.strip()}")
    downtime = figures["downtime"]
    actual = (f"{figures['rounds']} rounds {figures['pages_per_round']} pages, stop "
              f"{figures['stop']}, downtime {downtime} s, total {figures['total_seconds']} s, "
              f"guest counter {guest.get('counter')} at page {guest.get('position')}")
    result.hops.append(HopRecord(
        src.name, dst.name,
        f"live at {live.dirty_rate:g} pages/s: stop {' or '.join(live.stops)}; identical at "
        "the pause; every counter page current", actual if not problems else
        "; ".join(problems), t.bytes, round(t.seconds, 3), round(t.mib_per_s, 2),
        t.save_status, t.restore_status))
    result.transfer_seconds = round(t.seconds, 3)
    if problems:
        return "; ".join(problems)
    gone = src.xsmig("destroy", name, timeout=cell.timeout)
    if not gone.ok:
        return f"xsmig destroy on {src.name}: exit {gone.exit_status}: {gone.err.strip()}"
    return None
