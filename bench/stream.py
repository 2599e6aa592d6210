#!/usr/bin/env python3
"""Streaming rates of a large migration, as ratios against baselines measured in the same run.

Starts i386-a and amd64-b (the i386-to-amd64 pair), creates a 64-bit guest on i386-a
(256 MiB by default) and saves its stream to a file there once, then measures:

  openssh     `ssh src cat STREAM | ssh dst 'cat >/dev/null'`: OpenSSH's client pumping the
              stream's bytes through this machine between the same two hosts
  paramiko    the same `cat` pair through the testbed's own pump (testbed.cells.migrate.stream)
  e2e         `xsmig save | xsmig restore` across the hosts through that pump, as a
              large cell runs it (restored digest checked against the source's)
  host-pipe   on the source host, emulated: `xsmig save | xsmig restore` inside one host
  host-copy   the same bytes through two emulated Python copy loops into a file
              (a raw pipe copy by the same interpreter: the floor for host-pipe)
  native-pipe / native-copy: the same two on this machine's own Python

and prints MB/s and the ratios e2e/openssh and pipe/copy (issue 9 targets: >= 0.6).

`--pumps` runs paramiko and e2e once per runner pump variant (testbed.cells.migrate.Pump:
`default`, `classic` = the pump before issue 9's second pass, `threaded`), and
`--repeat N` does the openssh / per-variant rounds N times, interleaved, so variants
are compared against baselines of the same moment (ratios: medians of per-round ones).

  python bench/stream.py                  # 256 MiB
  python bench/stream.py --quick          # 8 MiB, proves the bench runs (CI)
  python bench/stream.py --pumps classic,default --repeat 3 --no-host   # pump before/after
  python bench/stream.py --json out.json
  python bench/stream.py --no-runner --baseline-ref main --host-repeat 3
      # the in-host and native pipes of this tree and of a baseline ref, alternating
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.cells import migrate  # noqa: E402
from testbed.hosts.hosts import Fleet, fleet, new_run_id  # noqa: E402
from testbed.hosts.sources import resolve_sources  # noqa: E402
from testbed.hosts.ssh import Host  # noqa: E402

HOSTS = ["i386-a", "amd64-b"]
STREAM = "/tmp/bench.stream"
COPY = "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1 << 20)"
PUMPS = {
    "default": migrate.DEFAULT_PUMP,
    "classic": migrate.CLASSIC,
    "threaded": migrate.Pump(threaded=True),
    "recv4m": migrate.Pump(recv=4 << 20),
}


def runner_cpu() -> float:
    """CPU seconds of this process, all threads: what the pump costs the runner."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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


def pump(
    src: Host, dst: Host, save: list[str], restore: list[str], how: migrate.Pump
) -> tuple[float, int, float]:
    cpu = runner_cpu()
    t = migrate.stream(src, dst, save, restore, timeout=900, pump=how)
    cpu = runner_cpu() - cpu
    if t.error or t.restore_status != 0 or t.save_status != 0:
        raise SystemExit(f"pump {save} | {restore}: {t.error} {t.save_stderr} {t.restore_stderr}")
    return t.seconds, t.bytes, cpu


def native(pages: int, workdir: Path, base: Path | None = None, repeat: int = 1
           ) -> dict[str, float]:
    """save | restore against two copy loops, on this machine's own Python."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(workdir / "store")}
    xsmig = [sys.executable, "-m", "xsmig"]

    def sh(script: str, tree: Path = REPO) -> float:
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True, env={**env, "PYTHONPATH": str(tree)},
                       capture_output=True, cwd=tree)
        return time.perf_counter() - t0

    x = shlex.join(xsmig)
    py = shlex.quote(sys.executable)
    sh(f"{x} create n --pages {pages} --seed 1 && {x} save n --encoding extended -o {workdir}/s")
    trees = {"": REPO} | ({"_base": base} if base else {})
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        for sfx, tree in trees.items():
            samples.setdefault("native_pipe" + sfx, []).append(
                sh(f"{x} save n --encoding extended | {x} restore --name m --host-id 2", tree))
            sh(f"{x} destroy m")
        samples.setdefault("native_copy", []).append(
            sh(f"{py} -c {shlex.quote(COPY)} < {workdir}/s | {py} -c {shlex.quote(COPY)} "
               f"> {workdir}/copy"))
    return {**{k: statistics.median(v) for k, v in samples.items()},
            "stream_bytes": float((workdir / "s").stat().st_size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 MiB guest: proves the bench runs")
    p.add_argument("--pages", type=int, default=65536, help="guest size (default 65536: 256 MiB)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--pumps", default="default",
                   help=f"runner pump variants to time, in order ({', '.join(PUMPS)})")
    p.add_argument("--repeat", type=int, default=1, help="rounds of openssh + every variant")
    p.add_argument("--no-host", action="store_true",
                   help="skip the in-host and native pipe/copy pairs (the runner's part only)")
    p.add_argument("--no-runner", action="store_true",
                   help="skip openssh, paramiko and e2e (the in-host and native pipes only)")
    p.add_argument("--baseline-ref", default=None,
                   help="also time the pipes with this git ref's xsmig, alternating with "
                        "this tree's (before/after in one run)")
    p.add_argument("--host-repeat", type=int, default=1,
                   help="in-host and native rounds (medians)")
    args = p.parse_args()
    pages = 2048 if args.quick else args.pages
    pumps = args.pumps.split(",")
    unknown = set(pumps) - set(PUMPS)
    if unknown:
        p.error(f"unknown --pumps {', '.join(sorted(unknown))}; known: {', '.join(PUMPS)}")
    secs: dict[str, float] = {}
    rounds: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
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
        for _ in range(0 if args.no_runner else args.repeat):
            rounds.setdefault("openssh", []).append(openssh(f, src, dst, work))
            for v in pumps:
                sfx = "" if v == "default" else f"[{v}]"
                w, n, c = pump(src, dst, ["cat", STREAM], ["sh", "-c", "cat > /dev/null"], PUMPS[v])
                assert n == size, (n, size)
                rounds.setdefault("paramiko" + sfx, []).append(w)
                cpus.setdefault("paramiko" + sfx, []).append(c)
                w, n, c = pump(src, dst,
                               migrate.save_argv("big", "extended", no_ext_info=False, rounds=None),
                               migrate.restore_argv("big", profile="current", source_width=None),
                               PUMPS[v])
                rounds.setdefault("e2e" + sfx, []).append(w)
                cpus.setdefault("e2e" + sfx, []).append(c)
                if must(dst, ["xsmig", "digest", "big"]).strip() != source_digest:
                    raise SystemExit("e2e restore differs from the source")
                must(dst, ["xsmig", "destroy", "big"])
        secs.update({k: statistics.median(v) for k, v in rounds.items()})
        if not args.no_host:
            base = _put_baseline(f, HOSTS[0], args.baseline_ref, work) if args.baseline_ref \
                else None
            secs.update(host_and_native(src, pages, work, base, args.host_repeat))
    mb = size / 1e6
    rate = {k: mb / v for k, v in secs.items() if k != "stream_bytes"}
    base = rounds.get("openssh", [])
    ratio = {}
    for k in rounds if base else ():
        if k != "openssh":  # median of the per-round ratios against that round's openssh
            pairs = zip(base, rounds[k], strict=True)
            ratio[f"{k}/openssh"] = statistics.median(o / x for o, x in pairs)
    if not args.no_host:
        ratio["host_pipe/host_copy"] = secs["host_copy"] / secs["host_pipe"]
        ratio["native_pipe/native_copy"] = secs["native_copy"] / secs["native_pipe"]
        ratio["host_pipe/host_copy, CPU"] = secs["host_copy_cpu"] / secs["host_pipe_cpu"]
        if args.baseline_ref:
            ratio["host_pipe_base/host_copy"] = secs["host_copy"] / secs["host_pipe_base"]
            ratio["host_pipe_base/host_copy, CPU"] = (secs["host_copy_cpu"]
                                                      / secs["host_pipe_base_cpu"])
            ratio["native_pipe_base/native_copy"] = secs["native_copy"] / secs["native_pipe_base"]
    report: dict[str, Any] = {
        "command": " ".join(sys.argv), "pages": pages, "stream_bytes": size, "seconds": secs,
        "mb_per_s": rate, "ratio": ratio, "rounds": rounds,
        "runner_cpu_seconds": {k: statistics.median(v) for k, v in cpus.items()},
        "load": os.getloadavg(),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"guest {pages} pages, stream {size} bytes ({mb:.1f} MB), {args.repeat} round(s), "
          f"load {os.getloadavg()[0]:.1f}")
    for k, v in secs.items():
        if k != "stream_bytes":
            cpu = report["runner_cpu_seconds"].get(k)
            print(f"  {k:<20} {v:7.2f}s {rate[k]:8.1f} MB/s"
                  + (f"  runner CPU {cpu:.2f}s" if cpu is not None else ""))
    for k, v in ratio.items():
        print(f"  {k:<28} {v:.2f}  (target >= 0.6 for e2e and the pipes)")
    return 0


BASE_DIR = "/tmp/xsmig-base"  # the baseline tree inside the source host


def _put_baseline(f: Fleet, host: str, ref: str, work: Path) -> Path:
    """`git archive` of ref's xsmig/, into the host (BASE_DIR) and beside this run."""
    import io
    import tarfile

    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "xsmig"], check=True,
                             capture_output=True).stdout
    must(f.host(host), ["mkdir", "-p", BASE_DIR])
    if not f.container(host).put_archive(BASE_DIR, archive):
        raise SystemExit(f"cannot copy {ref}'s xsmig into {host}")
    local = work / "base-tree"
    local.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as t:
        t.extractall(local, filter="data")
    return local


CPU_OF = ("import resource, subprocess, sys, time; t = time.monotonic(); "
          "subprocess.run(['sh', '-c', sys.argv[1]], check=True); "
          "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
          "print(time.monotonic() - t, r.ru_utime + r.ru_stime)")


def timed_cpu(host: Host, script: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a script on the host, CPU of all its processes (under QEMU:
    the emulators' CPU): the CPU figure is what a loaded machine does not blur."""
    wall, cpu = must(host, ["python3", "-S", "-c", CPU_OF, script]).split()
    return float(wall), float(cpu)


def host_and_native(src: Host, pages: int, work: Path, base: Path | None = None,
                    repeat: int = 1) -> dict[str, float]:
    """The emulated and native save | restore pipes against copy loops (xsmig's own share);
    with a baseline tree, its pipes too, the trees alternating round by round."""
    store = "$(cat /run/xsmig/store)"
    based = (f"env PYTHONPATH={BASE_DIR} PYTHONPYCACHEPREFIX={BASE_DIR}/pycache "
             f"XSMIG_STORE={store} XSMIG_HOST_ID=$(cat /run/xsmig/host-id) "
             "/usr/local/bin/python3 -S -m xsmig")
    trees = {"": "xsmig"} | ({"_base": based} if base else {})
    for cmd in trees.values():  # compile every module the pipe imports, untimed
        must(src, ["sh", "-c", f"{cmd} create warm --pages 64 && {cmd} save warm --encoding "
                               f"extended | {cmd} restore --name warm2 >/dev/null && "
                               "xsmig destroy warm && xsmig destroy warm2"])
    samples: dict[str, list[float]] = {}
    def sample(key: str, script: str) -> None:
        wall, cpu = timed_cpu(src, script)
        samples.setdefault(key, []).append(wall)
        samples.setdefault(key + "_cpu", []).append(cpu)

    for _ in range(repeat):
        for sfx, cmd in trees.items():
            sample("host_pipe" + sfx, f"{cmd} save big --encoding extended | {cmd} restore "
                                      "--name big2 >/dev/null")
            must(src, ["xsmig", "destroy", "big2"])
        sample("host_copy", f"python3 -c {shlex.quote(COPY)} < {STREAM} | python3 -c "
                            f"{shlex.quote(COPY)} > {store}/copy; rm -f {store}/copy")
    secs = {k: statistics.median(v) for k, v in samples.items()}
    print("in-host samples, s:", {k: [round(x, 2) for x in v] for k, v in samples.items()})
    secs.update(native(pages, work, base, repeat))
    return secs


if __name__ == "__main__":
    sys.exit(main())
