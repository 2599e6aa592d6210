#!/usr/bin/env python3
"""xsmig save/restore throughput, as ratios against baselines measured in the same run.

For each domain size (default 64 MiB and 256 MiB) a fresh child process creates a
synthetic guest and measures:

  save      save to /dev/null                     vs  pipe_copy
  restore   restore from a stream file            vs  pipe_to_file
  pipeline  `xsmig save | xsmig restore`, two     vs  pipe_to_file
            processes, as a migration runs
  digest    canonical digest of the domain        vs  hashlib.sha256 over as many bytes

pipe_copy is `cat STREAM | cat > /dev/null`: the stream's bytes through the same kind of
pipe between two processes; pipe_to_file is `cat STREAM | cat > FILE` into a new file
beside the store, since a restore must write the guest's memory to disk (page cache)
and that write, not parsing, is most of its cost. MB/s counts guest memory
(pages * 4096 bytes; 1 MB = 10^6 bytes).
Peak RSS is each process's VmHWM (/proc/PID/status): it must not grow with the domain.

Stdlib only, so the same script runs under Debian's i386 Python in the QEMU host images:
  python3 bench/throughput.py                      # this interpreter
  python3 bench/throughput.py --json results.json  # also machine-readable
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Child interpreters. Under QEMU user emulation sys.executable names the guest binary
# (QEMU fakes /proc/self/exe), which would run natively: inside a host image pass
# XSMIG_BENCH_PYTHON=/usr/local/bin/python3, the emulating wrapper.
PYTHON = os.environ.get("XSMIG_BENCH_PYTHON", sys.executable)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xsmig.canonical import CanonicalDomain  # noqa: E402
from xsmig.layout import Layout  # noqa: E402
from xsmig.restore import restore  # noqa: E402
from xsmig.store import Store  # noqa: E402
from xsmig.stream.format import Encoding  # noqa: E402
from xsmig.stream.writer import SaveOptions, save  # noqa: E402
from xsmig.synth import GuestSpec, create  # noqa: E402

PAGE = 4096
CHUNK = 1 << 20


def _hwm_mib(status: str) -> float:
    """VmHWM (peak RSS) from /proc/PID/status text. getrusage's ru_maxrss is no use here:
    Linux carries it over fork and exec, so a child would report its parent's peak."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def peak_rss_mib() -> float:
    return _hwm_mib(Path("/proc/self/status").read_text())


# Runs the xsmig CLI, then prints its own VmHWM on stderr for the parent to read.
XSMIG_WITH_HWM = ("import sys; from xsmig.cli import main; rc = main(sys.argv[1:]); "
                  "sys.stdout.flush(); "
                  "print([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0], "
                  "end='', file=sys.stderr); sys.exit(rc)")


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pipe_copy(path: Path, dest: Path | None = None) -> float:
    """Seconds for `cat FILE | cat > DEST`: the file's bytes through a pipe between two
    processes, into dest (a new file, as restore writes one) or /dev/null."""
    start = time.perf_counter()
    with open(dest or os.devnull, "wb") as sink:
        first = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
        second = subprocess.Popen(["cat"], stdin=first.stdout, stdout=sink)
        assert first.stdout is not None
        first.stdout.close()
        if second.wait() or first.wait():
            raise SystemExit("cat | cat failed")
    elapsed = time.perf_counter() - start
    if dest:
        dest.unlink()
    return elapsed


def sha256_bytes(n: int) -> float:
    buf = os.urandom(CHUNK)
    h = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(n // CHUNK):
        h.update(buf)
    h.update(buf[:n % CHUNK])
    return time.perf_counter() - start


def pipeline(store: Path, name: str, encoding: str) -> tuple[float, dict[str, float]]:
    """`xsmig save | xsmig restore` as two processes; seconds and each one's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(store)}
    cmd = [PYTHON, "-c", XSMIG_WITH_HWM]
    start = time.perf_counter()
    saver = subprocess.Popen([*cmd, "--host-id", "1", "save", name, "--encoding", encoding],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    restorer = subprocess.Popen([*cmd, "--host-id", "2", "restore", "--name", f"{name}-piped"],
                                stdin=saver.stdout, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
    assert saver.stdout is not None
    saver.stdout.close()
    rss = {}
    for label, proc in (("restore", restorer), ("save", saver)):
        _out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"pipeline {label} failed ({proc.returncode}): {err.decode()}")
        rss[label] = _hwm_mib(err.decode())
    return time.perf_counter() - start, rss


def child(pages: int, encoding: str, workdir: Path, repeat: int) -> dict[str, Any]:
    """One domain size, in a process of its own so that its peak RSS is its own."""
    store = Store(workdir / "store")
    memory = pages * PAGE
    spec = GuestSpec("bench", pages, 64, 2, None, 1, "standard", True)
    t_create, _ = _timed(lambda: _create(store, spec))
    domain = store.get("bench")
    opts = SaveOptions(Encoding(encoding), Layout.native())
    rss_after_create = peak_rss_mib()

    def save_null() -> None:
        with open(os.devnull, "wb") as null:
            save(domain, io.BufferedWriter(null, CHUNK), opts)
    t_save = min(_timed(save_null)[0] for _ in range(repeat))
    stream = workdir / "bench.stream"
    with open(stream, "wb") as f:
        save(domain, f, opts)
    stream_bytes = stream.stat().st_size

    def do_restore() -> None:
        if store.exists("restored"):
            store.destroy("restored")
        with open(stream, "rb") as f:
            restore(store, f, name="restored", host_id=2)
    t_restore = min(_timed(do_restore)[0] for _ in range(repeat))
    t_digest = min(_timed(lambda: CanonicalDomain(domain).digest())[0] for _ in range(repeat))
    source_digest = CanonicalDomain(domain).digest()
    if CanonicalDomain(store.get("restored")).digest() != source_digest:
        raise SystemExit("restored domain differs from the source")
    rss_self = peak_rss_mib()

    t_copy = min(pipe_copy(stream) for _ in range(repeat))
    t_copy_file = min(pipe_copy(stream, workdir / "copy") for _ in range(repeat))
    t_sha = min(sha256_bytes(memory) for _ in range(repeat))
    store.destroy("restored")
    t_pipe, pipe_rss = pipeline(workdir / "store", "bench", encoding)
    if CanonicalDomain(store.get("bench-piped")).digest() != source_digest:
        raise SystemExit("piped restore differs from the source")

    def mbps(seconds: float) -> float:
        return memory / seconds / 1e6

    return {
        "pages": pages, "memory_mib": memory >> 20, "stream_bytes": stream_bytes,
        "encoding": encoding,
        "seconds": {"create": t_create, "save": t_save, "restore": t_restore,
                    "digest": t_digest, "pipeline": t_pipe, "pipe_copy": t_copy,
                    "pipe_to_file": t_copy_file, "sha256": t_sha},
        "mb_per_s": {"save": mbps(t_save), "restore": mbps(t_restore),
                     "digest": mbps(t_digest), "pipeline": mbps(t_pipe),
                     "pipe_copy": mbps(t_copy), "pipe_to_file": mbps(t_copy_file),
                     "sha256": mbps(t_sha)},
        "ratio": {"save/pipe_copy": t_copy / t_save,
                  "restore/pipe_to_file": t_copy_file / t_restore,
                  "pipeline/pipe_to_file": t_copy_file / t_pipe,
                  "digest/sha256": t_sha / t_digest},
        "peak_rss_mib": {"in_process_all_phases": rss_self, "after_create": rss_after_create,
                         "pipeline_save": pipe_rss["save"],
                         "pipeline_restore": pipe_rss["restore"]},
    }


def _create(store: Store, spec: GuestSpec) -> None:
    with store.writing(spec.name) as domain:
        create(spec, domain, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16384,65536",
                   help="comma-separated domain sizes in pages (default: 64 MiB and 256 MiB)")
    p.add_argument("--encoding", default="native", choices=[e.value for e in Encoding])
    p.add_argument("--repeat", type=int, default=3,
                   help="best of N for every timed phase but the pipeline (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.encoding, args.workdir, args.repeat)))
        return 0

    results = []
    for pages in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="xsmig-bench-") as tmp:
            proc = subprocess.run([PYTHON, __file__, "--child", str(pages),
                                   "--encoding", args.encoding, "--workdir", tmp,
                                   "--repeat", str(args.repeat)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                return proc.returncode
            results.append(json.loads(proc.stdout))
    report: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
              "ulong_size": struct.calcsize("@L"), "command": " ".join(sys.argv),
              "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"python {report['python']} on {report['machine']} ({8 * report['ulong_size']}-bit "
          f"ulongs), encoding {args.encoding}")
    print(f"{'MiB':>5} {'phase':<9} {'MB/s':>8} {'baseline':<12} {'MB/s':>8} {'ratio':>6}")
    for r in results:
        for phase, base in (("save", "pipe_copy"), ("restore", "pipe_to_file"),
                            ("pipeline", "pipe_to_file"), ("digest", "sha256")):
            ratio = r["mb_per_s"][phase] / r["mb_per_s"][base]
            print(f"{r['memory_mib']:>5} {phase:<9} {r['mb_per_s'][phase]:>8.1f} {base:<12} "
                  f"{r['mb_per_s'][base]:>8.1f} {ratio:>6.3f}")
    print("peak RSS (MiB):")
    for r in results:
        rss = r["peak_rss_mib"]
        print(f"{r['memory_mib']:>5} in-process {rss['in_process_all_phases']:.1f}, "
              f"pipeline save {rss['pipeline_save']:.1f}, "
              f"pipeline restore {rss['pipeline_restore']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
