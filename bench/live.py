#!/usr/bin/env python3
"""Live migration: downtime and total time against the guest's dirty rate.

For each dirty rate a fresh guest (synthetic, --pages) runs in its own process
(`xsmig run --detach`) while `xsmig save --live` streams through a link of fixed
bandwidth (this process copies the save's stdout into the restore's stdin at --link
MB/s, the way an SSH hop limits a migration) into `xsmig restore`. Measured:

  rounds     pre-copy rounds before the pause, plus the last one
  pages      pages sent per round
  stop       why the rounds stopped: threshold, downtime, round-limit
  achieved   pages/s the guest really dirtied from its start to its pause (a loaded
             machine slows it below the rate asked)
  downtime   from the guest's pause (the save's paused_at) until the restore exited
  total      from the save's start until the restore exited

and checked, so a fast row is never a wrong one: the restored digest equals the
source's at the pause, and `xsmig guest-check` finds every counter page current.
Rate 0 is the baseline: no guest running, a plain copy and an empty last round.

  python3 bench/live.py                                  # table
  python3 bench/live.py --svg docs/live-downtime.svg     # and a plot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PYTHON = os.environ.get("XSMIG_BENCH_PYTHON", sys.executable)
REPO = Path(__file__).resolve().parents[1]
RATES = (0, 250, 500, 1000, 1500, 2000, 3000, 6000)


def _xsmig(env: dict[str, str], *args: str) -> str:
    r = subprocess.run([PYTHON, "-m", "xsmig", *args], env=env, cwd=REPO, capture_output=True,
                       text=True, check=False)
    if r.returncode:
        raise SystemExit(f"xsmig {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _link(src: Any, dst: Any, rate: float) -> None:
    """Copy src to dst at `rate` bytes/s, 64 KiB at a time."""
    sent, t0 = 0, time.monotonic()
    while data := os.read(src.fileno(), 64 << 10):
        dst.write(data)
        dst.flush()
        sent += len(data)
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    dst.close()


def one(rate: int, pages: int, link: float, opts: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xsmig-bench-live-") as tmp:
        env = {**os.environ, "XSMIG_STORE": tmp, "PYTHONPATH": str(REPO)}
        _xsmig(env, "create", "g", "--pages", str(pages), "--vcpus", "2")
        started = json.loads(_xsmig(env, "run", "g", "--dirty-rate", str(rate), "--detach")
                             ) if rate else None
        t0 = time.time()
        save = subprocess.Popen([PYTHON, "-m", "xsmig", "save", "g", "--encoding", "v2",
                                 "--live", *opts], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        restore = subprocess.Popen([PYTHON, "-m", "xsmig", "restore", "--name", "r"],
                                   env={**env, "XSMIG_HOST_ID": "7"}, cwd=REPO,
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        assert save.stdout is not None and save.stderr is not None and restore.stdin
        _link(save.stdout, restore.stdin, link)
        code = restore.wait()
        done = time.time()
        report = save.stderr.read().decode()
        if save.wait() or code:
            raise SystemExit(f"rate {rate}: save {save.returncode} {report[-500:]}; restore "
                             f"{code} {restore.stderr.read().decode() if restore.stderr else ''}")
        if os.environ.get("XSMIG_BENCH_VERBOSE"):
            print(report, file=sys.stderr)
        final = json.loads(report.strip().splitlines()[-1])
        if _xsmig(env, "digest", "g") != _xsmig(env, "digest", "r"):
            raise SystemExit(f"rate {rate}: the destination differs from the source")
        guest = final.get("guest")
        if guest:
            _xsmig(env, "guest-check", "r", "--counter", str(guest["counter"]), "--position",
                   str(guest["position"]))
        achieved = 0.0
        if guest and started:  # what the guest managed (a loaded machine slows it down)
            achieved = ((guest["pages_written"] - started["pages_written"])
                        / (final["paused_at"] - started["time"]))
        return {"rate": rate, "achieved": achieved, "rounds": final["rounds"],
                "pages": final["pages_per_round"],
                "stop": final["stop"], "downtime": done - final["paused_at"],
                "total": done - t0}


def svg(rows: list[dict[str, Any]], link_pages: float) -> str:
    """Downtime and total time against dirty rate, as a hand-written SVG line plot."""
    w, h, left, bottom = 560, 300, 60, 40
    top = max(r["total"] for r in rows) * 1.1
    most = max(r["rate"] for r in rows) or 1

    def xy(rate: float, secs: float) -> str:
        return (f"{left + rate / most * (w - left - 20):.1f},"
                f"{h - bottom - secs / top * (h - bottom - 20):.1f}")

    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" '
             'stroke="black"/>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{left}" y2="10" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">dirty rate (pages/s)</text>',
             f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" '
             'text-anchor="middle">seconds</text>']
    for r in rows:
        x = xy(r["rate"], 0).split(",")[0]
        lines.append(f'<text x="{x}" y="{h - bottom + 14}" text-anchor="middle">'
                     f'{r["rate"]}</text>')
    for k in range(5):
        secs = top * k / 4
        y = xy(0, secs).split(",")[1]
        lines.append(f'<text x="{left - 6}" y="{y}" text-anchor="end">{secs:.1f}</text>')
    if link_pages <= most:
        x = xy(link_pages, 0).split(",")[0]
        lines.append(f'<line x1="{x}" y1="{h - bottom}" x2="{x}" y2="10" stroke="grey" '
                     'stroke-dasharray="4"/>')
        lines.append(f'<text x="{x}" y="20" fill="grey"> link</text>')
    for key, colour in (("total", "#1f77b4"), ("downtime", "#d62728")):
        points = " ".join(xy(r["rate"], r[key]) for r in rows)
        lines.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        lines += [f'<circle cx="{xy(r["rate"], r[key]).split(",")[0]}" '
                  f'cy="{xy(r["rate"], r[key]).split(",")[1]}" r="3" fill="{colour}"/>'
                  for r in rows]
    lines.append(f'<text x="{left + 10}" y="24" fill="#1f77b4">total</text>')
    lines.append(f'<text x="{left + 10}" y="38" fill="#d62728">downtime</text>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def text_plot(rows: list[dict[str, Any]]) -> str:
    top = max(r["total"] for r in rows) or 1
    out = []
    for r in rows:
        total = round(r["total"] / top * 50)
        down = round(r["downtime"] / top * 50)
        out.append(f"{r['rate']:>6} | {'#' * down}{'=' * max(0, total - down)} "
                   f"{r['downtime']:.2f} / {r['total']:.2f} s")
    return "\n".join(out) + "\n       (# downtime, # and = total)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=4096)
    ap.add_argument("--link", type=float, default=8.0, help="link MB/s (default 8)")
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    ap.add_argument("--max-rounds", type=int, default=8)
    ap.add_argument("--max-downtime", type=float, default=0.3)
    ap.add_argument("--dirty-threshold", type=int, default=50)
    ap.add_argument("--svg", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    opts = ["--max-rounds", str(args.max_rounds), "--max-downtime", str(args.max_downtime),
            "--dirty-threshold", str(args.dirty_threshold)]
    link = args.link * 1e6
    rows = [one(int(r), args.pages, link, opts) for r in args.rates.split(",")]
    link_pages = link / 4096
    print(f"guest {args.pages} pages ({args.pages * 4096 / 1e6:.0f} MB), v2, link "
          f"{args.link:g} MB/s (~{link_pages:.0f} pages/s); save --live {' '.join(opts)}")
    print()
    print("| dirty pages/s | achieved | rounds | pages per round | stop | downtime s | total s |")
    print("|--:|--:|--:|---|---|--:|--:|")
    for r in rows:
        pages = ", ".join(map(str, r["pages"]))
        print(f"| {r['rate']} | {r['achieved']:.0f} | {r['rounds']} | {pages} | {r['stop']} "
              f"| {r['downtime']:.2f} | {r['total']:.2f} |")
    print()
    print(text_plot(rows))
    if args.svg:
        args.svg.write_text(svg(rows, link_pages))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
