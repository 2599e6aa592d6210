"""``python -m testbed host-check``: start one host per architecture, show its report.

The hosts are started by the matrix's own code (testbed.hosts.hosts: same labels, same
pinned key-only SSH, same removal on exit and reaping after a crash). Each is
checked against its declared architecture, then reached over SSH to prove that
login and the emulating ``python3`` entry work there too, then removed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.errors import TestbedError
from testbed.images.arch import ARCHES, get_arch

HELP = "start one host per architecture, print and check its report, remove it"
REPO = Path(__file__).resolve().parents[2]
SSH_PROBE = "command -v python3 && xsmig-host-report"
CHECK_HOST_ID = 90  # XSMIG_HOST_ID of check hosts: any id the matrix does not use


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", metavar="ARCH", help="default: all")
    parser.add_argument(
        "--native",
        action="store_true",
        help="run interpreters directly (no QEMU) where the CPU can",
    )


def run(args: argparse.Namespace) -> int:
    from scenarios.hosts import HostSpec
    from testbed.hosts.hosts import fleet

    specs = [get_arch(a) for a in (args.arch or ARCHES)]
    mode = "native" if args.native else "qemu"
    for spec in specs:
        if mode == "native" and not spec.runs_natively_on():
            raise TestbedError(f"--native: this CPU cannot run {spec.name} binaries directly")
    arches = [s.name for s in specs]
    table: dict[str, HostSpec] = {
        f"check-{a}": HostSpec(f"check-{a}", a, CHECK_HOST_ID + i) for i, a in enumerate(arches)
    }
    mounts = {n: REPO / "xsmig" for n in table}
    failed = False
    with fleet(list(table), mounts=mounts, mode=mode, specs=table, progress=print) as f:
        for name, hs in table.items():
            state = f.states[name]
            problems: list[str] = []
            if state.error:
                problems.append(state.error)
            else:
                print(f"{hs.arch} (mode {mode}):")
                print(json.dumps(json.loads(state.report), indent=2, sort_keys=True))
                r = f.host(name).run(["sh", "-c", SSH_PROBE], timeout=120)
                out = r.out.splitlines()
                if not r.ok or not out or out[0] != "/usr/local/bin/python3":
                    problems.append(
                        f"ssh sessions resolve python3 to {out[:1]}, not /usr/local/bin/python3"
                    )
                elif json.loads(out[1]) != json.loads(state.report):
                    problems.append("the report over ssh differs from the start-up report")
            for p in problems:
                print(f"  REFUSED {hs.arch}: {p}")
            print(f"{hs.arch}: {'REFUSED' if problems else 'ok'}")
            failed = failed or bool(problems)
    return 1 if failed else 0
