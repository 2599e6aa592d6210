"""`python -m testbed soak`: back-to-back migrations ping-ponging between an i386 and an amd64 host.

One guest goes i386-a -> amd64-a -> i386-a -> ... for `--hops` migrations over
the matrix's own path (save | restore over SSH, canonical digest compared with
the original's, the source copy destroyed only after a match). After every hop
the runner records its own resident memory and open descriptors, so a leak in
the testbed (connections, channels, threads, buffers) shows as a slope.

Exit 0 when every hop restored identically and the runner's descriptors stayed
flat; the figures go to stdout and to `soak.json`. Not in default CI (100 hops
take a while under QEMU); CI runs a quick mode (tests/integration/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.hosts import backends

HELP = "ping-pong one guest between an i386 and an amd64 host, N times; watch the runner"
HOSTS = ("i386-a", "amd64-a")
NAME = "soak"
FD_SLACK = 4  # descriptors the runner may gain after warm-up (paramiko's lazy imports, logs)


@dataclass
class HopFigures:
    hop: int
    src: str
    dst: str
    identical: bool
    seconds: float
    bytes: int
    rss_kib: int
    fds: int
    threads: int
    error: str = ""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hops", type=int, default=100, help="migrations (default 100)")
    parser.add_argument("--pages", type=int, default=2048, help="guest size in 4 KiB pages")
    parser.add_argument("--encoding", choices=("native", "escaped", "extended"), default="extended")
    parser.add_argument("--guest-width", type=int, choices=(32, 64), default=64)
    parser.add_argument("--mode", choices=("qemu", "native"), default="qemu")
    parser.add_argument("--report-dir", type=Path, default=Path("reports/soak"), metavar="DIR")
    backends.configure(parser)


def summarise(figures: list[HopFigures]) -> dict[str, object]:
    """Totals and slopes; the warm-up is the first tenth of the hops (at least one)."""
    warm = figures[max(0, len(figures) // 10 - 1)] if figures else None
    last = figures[-1] if figures else None
    return {
        "hops": len(figures),
        "mismatches": sum(not f.identical for f in figures),
        "seconds": round(sum(f.seconds for f in figures), 1),
        "bytes": sum(f.bytes for f in figures),
        "rss_kib_first": figures[0].rss_kib if figures else 0,
        "rss_kib_after_warmup": warm.rss_kib if warm else 0,
        "rss_kib_last": last.rss_kib if last else 0,
        "rss_kib_max": max((f.rss_kib for f in figures), default=0),
        "fds_first": figures[0].fds if figures else 0,
        "fds_after_warmup": warm.fds if warm else 0,
        "fds_last": last.fds if last else 0,
        "fds_max": max((f.fds for f in figures), default=0),
        "threads_last": last.threads if last else 0,
    }


def verdict(summary: dict[str, object]) -> list[str]:
    problems = []
    if summary["mismatches"]:
        problems.append(f"{summary['mismatches']} hop(s) did not restore identically")
    grown = int(str(summary["fds_last"])) - int(str(summary["fds_after_warmup"]))
    if grown > FD_SLACK:
        problems.append(f"the runner gained {grown} open descriptors after warm-up")
    return problems


def run(args: argparse.Namespace) -> int:
    from scenarios.model import IDENTICAL, Cell, Domain
    from testbed.cells import migrate
    from testbed.cells.domains import create_argv
    from testbed.errors import TestbedError
    from testbed.hosts.hosts import new_run_id
    from testbed.hosts.sources import resolve_sources

    if args.hops < 1:
        raise TestbedError("--hops must be at least 1")
    report_dir: Path = args.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    # A cell only for its create arguments and seed; the soak is not a matrix cell.
    cell = Cell("soak", HOSTS, args.encoding, Domain(args.pages, args.guest_width), IDENTICAL)
    mounts, _ = resolve_sources({}, list(HOSTS), report_dir)
    figures: list[HopFigures] = []
    backend = backends.Backend.from_args(args)
    with backends.hosts(list(HOSTS), backend, run_id=new_run_id(), mounts=mounts,
                        mode=args.mode, progress=print) as f:
        hosts = [f.host(n) for n in HOSTS]
        argv = create_argv(cell)
        argv[1] = NAME
        made = hosts[0].xsmig(*argv, timeout=300)
        if not made.ok:
            raise TestbedError(f"xsmig create on {hosts[0].name}: {made.err.strip()}")
        original = hosts[0].digest(NAME, 300)
        print(
            f"soak: {args.hops} hops of a {args.pages}-page guest ({args.encoding}), "
            f"digest {original[:16]}..",
            flush=True,
        )
        for i in range(args.hops):
            src, dst = hosts[i % 2], hosts[(i + 1) % 2]
            t = migrate.stream(
                src,
                dst,
                migrate.save_argv(NAME, args.encoding, no_ext_info=False, rounds=None),
                migrate.restore_argv(NAME, profile="current", source_width=None),
                timeout=600,
            )
            error = t.error or ("" if t.restore_status == 0 else t.restore_stderr.strip())
            identical = False
            if not error:
                try:
                    identical = dst.digest(NAME, 300) == original
                    error = "" if identical else "digest differs"
                except TestbedError as exc:
                    error = str(exc)
            fig = HopFigures(
                i + 1,
                src.name,
                dst.name,
                identical,
                round(t.seconds, 3),
                t.bytes,
                rss_kib(),
                open_fds(),
                threading.active_count(),
                error,
            )
            figures.append(fig)
            print(
                f"hop {fig.hop:>3} {src.name}->{dst.name}: "
                f"{'identical' if identical else 'FAILED ' + error[:200]} "
                f"{fig.seconds:.1f}s rss {fig.rss_kib / 1024:.1f} MiB fds {fig.fds}",
                flush=True,
            )
            if not identical:
                break  # the guest stays where it is; nothing more to ping-pong
            gone = src.xsmig("destroy", NAME, timeout=300)
            if not gone.ok:
                raise TestbedError(f"xsmig destroy on {src.name}: {gone.err.strip()}")
    summary = summarise(figures)
    problems = verdict(summary)
    summary["problems"] = problems
    out = report_dir / "soak.json"
    out.write_text(json.dumps({"summary": summary, "hops": [asdict(x) for x in figures]}, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"soak: {'FAILED: ' + '; '.join(problems) if problems else 'ok'} ({out})")
    return 1 if problems or len(figures) < args.hops else 0
