#!/usr/bin/env python3
"""Streaming rates of a large migration, as ratios against baselines measured in the same run.

Starts i386-a and amd64-b (the i386-to-amd64 pair), creates a 64-bit guest on i386-a
(256 MiB by default) and saves its stream to a file there once, then measures:

  openssh     `ssh src cat STREAM | ssh dst 'cat >/dev/null'`: OpenSSH's client pumping the
              stream's bytes through this machine between the same two hosts
  paramiko    the same `cat` pair through the testbed's own pump (testbed.migrate.stream)
  e2e         `xsmig save | xsmig restore` across the hosts through that pump, as a
              large cell runs it (restored digest checked against the source's)
  host-pipe   on the source host, emulated: `xsmig save | xsmig restore` inside one host
  host-copy   the same bytes through two emulated Python copy loops into a file
              (a raw pipe copy by the same interpreter: the floor for host-pipe)
  native-pipe / native-copy: the same two on this machine's own Python

and prints MB/s and the ratios e2e/openssh and pipe/copy (issue 9 targets: >= 0.6).

  python bench/stream.py                  # 256 MiB
  python bench/stream.py --quick          # 8 MiB, proves the bench runs (CI)
  python bench/stream.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import migrate  # noqa: E402
from testbed.hosts import Fleet, fleet, new_run_id  # noqa: E402
from testbed.sources import resolve_sources  # noqa: E402
from testbed.ssh import Host  # noqa: E402

HOSTS = ["i386-a", "amd64-b"]
STREAM = "/tmp/bench.stream"
COPY = "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1 << 20)"


def must(host: Host, argv: list[str], timeout: float = 900) -> str:
    r = host.run(argv, timeout=timeout)
    if not r.ok:
        raise SystemExit(f"{shlex.join(argv)} on {host.name}: exit {r.exit_status}: {r.err}")
    return r.out


def timed_sh(host: Host, script: str) -> float:
    t0 = time.perf_counter()
    must(host, ["sh", "-c", script])
    return time.perf_counter() - t0


def openssh(f: Fleet, src: Host, dst: Host, workdir: Path) -> float:
    key = f.key.write(workdir / "key")
    known = workdir / "known_hosts"
    known.write_text(src.known_hosts_line() + "\n" + dst.known_hosts_line() + "\n")

    def ssh(h: Host, cmd: str) -> list[str]:
        return ["ssh", "-i", str(key), "-p", str(h.port), "-o", f"UserKnownHostsFile={known}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "root@127.0.0.1", cmd]

    t0 = time.perf_counter()
    first = subprocess.Popen(ssh(src, f"cat {STREAM}"), stdout=subprocess.PIPE)
    second = subprocess.Popen(ssh(dst, "cat > /dev/null"), stdin=first.stdout)
    assert first.stdout is not None
    first.stdout.close()
    if second.wait() or first.wait():
        raise SystemExit("openssh pump failed")
    return time.perf_counter() - t0


def pump(src: Host, dst: Host, save: list[str], restore: list[str]) -> tuple[float, int]:
    t = migrate.stream(src, dst, save, restore, timeout=900)
    if t.error or t.restore_status != 0 or t.save_status != 0:
        raise SystemExit(f"pump {save} | {restore}: {t.error} {t.save_stderr} {t.restore_stderr}")
    return t.seconds, t.bytes


def native(pages: int, workdir: Path) -> dict[str, float]:
    """save | restore against two copy loops, on this machine's own Python."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(workdir / "store")}
    xsmig = [sys.executable, "-m", "xsmig"]

    def sh(script: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True, env=env, capture_output=True)
        return time.perf_counter() - t0

    x = shlex.join(xsmig)
    py = shlex.quote(sys.executable)
    sh(f"{x} create n --pages {pages} --seed 1 && {x} save n --encoding extended -o {workdir}/s")
    pipe = sh(f"{x} save n --encoding extended | {x} restore --name m --host-id 2")
    copy = sh(f"{py} -c {shlex.quote(COPY)} < {workdir}/s | {py} -c {shlex.quote(COPY)} "
              f"> {workdir}/copy")
    return {"native_pipe": pipe, "native_copy": copy,
            "stream_bytes": float((workdir / "s").stat().st_size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 MiB guest: proves the bench runs")
    p.add_argument("--pages", type=int, default=65536, help="guest size (default 65536: 256 MiB)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    pages = 2048 if args.quick else args.pages
    secs: dict[str, float] = {}
    mounts, labels = resolve_sources({}, HOSTS)
    with tempfile.TemporaryDirectory(prefix="xsmig-bench-stream-") as tmp, fleet(
        HOSTS, run_id=new_run_id(), mounts=mounts, source_labels=labels
    ) as f:
        work = Path(tmp)
        src, dst = f.host(HOSTS[0]), f.host(HOSTS[1])
        must(src, ["xsmig", "create", "big", "--pages", str(pages), "--seed", "1"])
        must(src, ["xsmig", "save", "big", "--encoding", "extended", "-o", STREAM])
        source_digest = must(src, ["xsmig", "digest", "big"]).strip()
        size = int(must(src, ["stat", "-c", "%s", STREAM]))
        secs["openssh"] = openssh(f, src, dst, work)
        secs["paramiko"], n = pump(src, dst, ["cat", STREAM], ["sh", "-c", "cat > /dev/null"])
        assert n == size, (n, size)
        secs["e2e"], n = pump(src, dst,
                              migrate.save_argv("big", "extended", no_ext_info=False, rounds=None),
                              migrate.restore_argv("big", profile="current", source_width=None))
        if must(dst, ["xsmig", "digest", "big"]).strip() != source_digest:
            raise SystemExit("e2e restore differs from the source")
        store = "$(cat /run/xsmig/store)"
        secs["host_pipe"] = timed_sh(
            src, "xsmig save big --encoding extended | xsmig restore --name big2 >/dev/null")
        secs["host_copy"] = timed_sh(
            src, f"python3 -c {shlex.quote(COPY)} < {STREAM} | python3 -c {shlex.quote(COPY)} "
                 f"> {store}/copy; rm -f {store}/copy")
        secs.update(native(pages, work))
    mb = size / 1e6
    rate = {k: mb / v for k, v in secs.items() if k != "stream_bytes"}
    ratio = {"e2e/openssh": secs["openssh"] / secs["e2e"],
             "paramiko/openssh": secs["openssh"] / secs["paramiko"],
             "host_pipe/host_copy": secs["host_copy"] / secs["host_pipe"],
             "native_pipe/native_copy": secs["native_copy"] / secs["native_pipe"]}
    report: dict[str, Any] = {"command": " ".join(sys.argv), "pages": pages, "stream_bytes": size,
                              "seconds": secs, "mb_per_s": rate, "ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"guest {pages} pages, stream {size} bytes ({mb:.1f} MB)")
    for k, v in secs.items():
        if k != "stream_bytes":
            print(f"  {k:<12} {v:7.2f}s {rate[k]:8.1f} MB/s")
    for k, v in ratio.items():
        print(f"  {k:<24} {v:.2f}  (target >= 0.6 for e2e and the pipes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
