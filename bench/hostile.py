#!/usr/bin/env python3
"""Memory and time of every command that reads a stream (restore, inspect, verify,
convert) or a dump (diff) on small hostile inputs.

Each stream is under 1 MiB and declares far more than it holds (a huge p2m frame list,
unmapped list, vCPU map, ext-info section, toolstack chunk), or nests JSON deeply, or
is noise after a valid head. Each command runs as a child process; its peak RSS is the
child's own VmHWM read from /proc/self/status as it exits (an atexit hook), its time
the parent's wall clock. The bound to hold (docs/reliability.md): under 64 MiB and 5 s
per command for any stream under 1 MiB.

diff reads each input as the dump it compares a domain against (and three cases are
hostile dumps). A last, larger case shows vCPU extended state streamed to disk: 64 vCPUs with 1 MiB
xsave areas each (a 64 MiB stream) restore in far less than 64 MiB.

    python3 bench/hostile.py [--json FILE]
Not a test: figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PYTHON = os.environ.get("XSMIG_BENCH_PYTHON", sys.executable)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fuzz.seeds import seeds  # noqa: E402
from xsmig.inspect import inspect_stream  # noqa: E402
from xsmig.layout import AMD64  # noqa: E402
from xsmig.store import Store  # noqa: E402
from xsmig.stream import format as fmt  # noqa: E402
from xsmig.stream.format import Encoding  # noqa: E402
from xsmig.stream.writer import SaveOptions, save  # noqa: E402
from xsmig.synth import GuestSpec, create  # noqa: E402

MiB = 1 << 20
LIMIT = MiB - 1

# The child: run xsmig's CLI, then report its own peak RSS into the file named by $HWM.
CHILD = """
import atexit, os, sys
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(os.environ['HWM'], 'w').write(line.split()[1])
atexit.register(hwm)
sys.argv[0] = 'xsmig'
from xsmig.cli import main
sys.exit(main())
"""


def _frame_list_huge() -> bytes:
    """Escaped, p2m_size 0x0FFFFFFF: a 4 MiB frame list declared, 1 MiB sent."""
    out = struct.pack("<IQ", fmt.ESCAPE, fmt.MAX_P2M_SIZE)
    return out + struct.pack("<Q", 1) * ((LIMIT - len(out)) // 8)


def _unmapped_huge(p2m: int) -> bytes:
    """Native i386 32-bit guest, no ext-info; an empty body; a tail declaring p2m_size
    unmapped pfns, of which the stream holds what fits in 1 MiB."""
    frames = -(-p2m // 1024)
    out = struct.pack("<I", p2m) + struct.pack("<I", 1) * frames
    out += struct.pack("<i", 0) + struct.pack("<I", p2m)
    return out + struct.pack("<I", 2) * ((LIMIT - len(out)) // 4)


def _ext_info_blocks() -> bytes:
    """Native amd64 with a 1 MiB ext-info section of empty unknown blocks."""
    size = fmt.MAX_EXT_INFO
    out = struct.pack("<QQI", 64, (1 << 64) - 1, size)
    return (out + b"junk\0\0\0\0" * ((LIMIT - len(out)) // 8))[:LIMIT]


def _body_end(seed: bytes) -> int:
    """Offset of the seed's vcpu_info chunk: what comes before is a valid head and body."""
    report = inspect_stream(io.BytesIO(seed))
    return int(next(c["offset"] for c in report["chunks"] if c["kind"] == "vcpu_info"))


def _vcpu_map_full(seed: bytes) -> bytes:
    """A valid head and body, a vcpu_info naming all 4096 vCPUs, an empty tail list, then
    the stream ends after one vCPU context."""
    out = seed[:_body_end(seed)] + struct.pack("<ii", -2, 4095) + b"\xff" * 512
    return out + struct.pack("<iI", 0, 0) + b"\0" * 6000


def _toolstack_huge(seed: bytes) -> bytes:
    """A toolstack chunk declaring 1 MiB and 2^32-1 physmap entries, truncated."""
    out = seed[:_body_end(seed)] + struct.pack("<iIII", -18, fmt.MAX_TOOLSTACK, 1, 0xFFFFFFFF)
    return out + b"\0" * (LIMIT - len(out) - 100)


def _deep_json(seed: bytes) -> bytes:
    """The extended seed with its optional wrtr block replaced by 64 KiB of '['."""
    report = inspect_stream(io.BytesIO(seed))
    wrtr = next(b for b in report["extended_info_section"] if b["id"] == "wrtr")
    nested = b"[" * fmt.MAX_XBLOCK
    block = fmt.XBLOCK.pack(fmt.WRITER, fmt.XBLOCK_OPTIONAL, 0, len(nested)) + nested
    return (seed[:wrtr["offset"]] + block
            + seed[wrtr["offset"] + fmt.XBLOCK.size + wrtr["size"]:])


def _chunk_flood(seed: bytes, chunk: bytes) -> bytes:
    """A valid head and body start, then the same chunk repeated up to 1 MiB."""
    out = seed[:_body_end(seed)]
    return out + chunk * ((LIMIT - len(out)) // len(chunk))


def _noise(seed: bytes) -> bytes:
    rng = random.Random(7)
    return seed[:4096] + rng.randbytes(LIMIT - 4096)


def _p2m_max_full_frame_list() -> bytes:
    """Native i386, no ext-info, p2m_size 2^28 - 8 Ki with its whole (just under 1 MiB)
    frame list, then nothing: a reader that sizes a byte per pfn from the header
    allocates 256 MiB before it reads on (issue 16: verify, 276 MiB)."""
    frames = (LIMIT - 4) // 4
    return struct.pack("<I", frames * 1024) + struct.pack("<I", 1) * frames


def _v2_optional_flood(v2: bytes) -> bytes:
    """A valid v2 stream with empty optional records filling it to 1 MiB before END: a
    warning each for verify (issue 16: 175 MiB for 4 MiB of them)."""
    end = len(v2) - 8
    n = (LIMIT - len(v2)) // 8
    return v2[:end] + struct.pack("<II", 0x80000123, 0) * n + v2[end:]


def _v2_page_data_declared(v2: bytes) -> bytes:
    """The v2 stream's headers, then a PAGE_DATA record declaring 2^20 pfns, truncated."""
    at = 40
    while True:
        rtype, length = struct.unpack_from("<II", v2, at)
        at += 8 + length + (-length % 8)
        if rtype == fmt.REC_X86_PV_P2M_FRAMES:
            break
    out = v2[:at] + struct.pack("<IIII", fmt.REC_PAGE_DATA, 0xFFFFFFF8, 1 << 20, 0)
    return out + struct.pack("<Q", 5) * ((LIMIT - len(out)) // 8)


def _dump_nested() -> bytes:
    return b"[" * LIMIT


def _dump_many_pages() -> bytes:
    pages = ",".join(f'"{i:x}":["plain","{i:064x}"]' for i in range(12000))
    return ('{"format": "xsmig-dump-1", "pages": {' + pages + "}}").encode()[:LIMIT]


def cases() -> dict[str, bytes]:
    s = seeds()
    ext = s["extended-amd64-32"]
    v2 = _v2_seed(s["native-amd64-64"])
    return {
        "native i386, p2m 2^28 - 8 Ki, whole frame list": _p2m_max_full_frame_list(),
        "v2, 1 MiB of empty optional records (valid)": _v2_optional_flood(v2),
        "v2 PAGE_DATA declaring 2^20 pfns": _v2_page_data_declared(v2),
        "dump: 1 MiB of nested JSON": _dump_nested(),
        "dump: 12000 pages (JSON, 1 MiB)": _dump_many_pages(),
        "valid seed (extended, 36 KiB)": ext,
        "frame list declared 4 MiB": _frame_list_huge(),
        "unmapped list declared 4 MiB (p2m 2^20)": _unmapped_huge(1 << 20),
        "unmapped list declared 64 MiB (p2m 2^24)": _unmapped_huge(1 << 24),
        "1 MiB ext-info of empty blocks": _ext_info_blocks(),
        "vCPU map of 4096, truncated": _vcpu_map_full(s["native-amd64-64"]),
        "toolstack chunk declared 1 MiB": _toolstack_huge(s["native-amd64-64"]),
        "64 KiB of nested JSON in wrtr (valid)": _deep_json(s["extended-i386-64"]),
        "noise after a valid head": _noise(s["native-i386-32"]),
        "1 MiB of vcpu_info chunks naming 4096 vCPUs": _chunk_flood(
            s["native-amd64-64"], struct.pack("<ii", -2, 4095) + b"\xff" * 512),
        "1 MiB of empty batches of 1024 holes": _chunk_flood(
            s["native-amd64-64"], struct.pack("<i", 1024) + struct.pack("<Q", 0xF << 28) * 1024),
        "1 MiB of 1-page page-table batches": _chunk_flood(
            s["native-amd64-64"],
            struct.pack("<iQ", 1, (1 << 28) | 5) + struct.pack("<Q", (1 << 12) | 0x67) * 512),
    }


def _v2_seed(legacy: bytes) -> bytes:
    """A legacy seed's domain saved as v2."""
    from xsmig.restore import restore
    with tempfile.TemporaryDirectory(prefix="xsmig-hostile-v2-") as t:
        store = Store(Path(t))
        restore(store, io.BytesIO(legacy), name="v", host_id=1)
        buf = io.BytesIO()
        save(store.get("v"), buf, SaveOptions(Encoding.V2, AMD64))
        return buf.getvalue()


def run(args: list[str], store: Path, stream: Path, xsmig_from: Path = REPO
        ) -> dict[str, Any]:
    hwm = store.parent / "hwm"
    hwm.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(xsmig_from), "XSMIG_STORE": str(store),
           "HWM": str(hwm)}
    started = time.monotonic()
    proc = subprocess.run([PYTHON, "-c", CHILD, *args, str(stream)], env=env, cwd=store.parent,
                          capture_output=True, check=False, timeout=600)
    wall = time.monotonic() - started
    err = proc.stderr.decode().strip().splitlines()
    return {"exit": proc.returncode, "seconds": round(wall, 2),
            "peak_rss_mib": round(int(hwm.read_text()) / 1024, 1),
            "message": (err[-1] if err else "")[:100]}


def xsave_case(tmp: Path) -> tuple[Path, int]:
    """64 vCPUs with 1 MiB xsave areas: a valid ~64 MiB stream."""
    store = Store(tmp / "xs-src")
    with store.writing("xs") as domain:
        create(GuestSpec("xs", 4096, 64, 64, None, 1, "standard", True), domain, 1)
        meta = domain.read_meta()._replace(xsave_size=MiB - 32)  # xcnt = 1 MiB, the cap
        domain.write_meta(meta)
        for vcpu_id in meta.vcpu_ids:  # Xen's buffer: xcr0, xcr0_accum, the area
            domain.vcpu_path(vcpu_id, "xsave").write_bytes(
                struct.pack("<QQ", 3, 3) + random.Random(vcpu_id).randbytes(MiB - 32))
    path = tmp / "xsave.bin"
    with open(path, "wb") as f:
        save(store.get("xs"), f, SaveOptions(Encoding.EXTENDED, AMD64))
    return path, path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--xsmig-from", type=Path, default=REPO,
                    help="run the commands of another checkout (e.g. before a fix)")
    opts = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="xsmig-hostile-") as t:
        tmp = Path(t)
        out = tmp / "converted"
        commands: list[tuple[str, Callable[[Path], list[str]]]] = [
            ("restore", lambda _s: ["restore", "-i"]),
            ("inspect", lambda _s: ["inspect"]),
            ("verify", lambda _s: ["verify"]),
            ("convert", lambda _s: ["convert", "--to", "v2", "-o", str(out), "-i"]),
            ("diff", lambda _s: ["diff", "g"]),  # the input as the dump to compare with
        ]
        template = tmp / "template"  # a store holding "g", for diff
        with Store(template).writing("g") as domain:
            create(GuestSpec("g", 64), domain, 1)
        items = [(name, data) for name, data in cases().items()]
        for name, data in items:
            assert len(data) < MiB, (name, len(data))
            stream = tmp / "s.bin"
            stream.write_bytes(data)
            for command, argv in commands:
                if name.startswith("dump:") and command != "diff":
                    continue
                store = tmp / f"store-{len(rows)}"
                if command == "diff":
                    shutil.copytree(template, store)
                row = {"case": name, "bytes": len(data), "command": command,
                       **run(argv(stream), store, stream, opts.xsmig_from)}
                rows.append(row)
        path, size = xsave_case(tmp)
        for command, argv in commands[:4]:
            rows.append({"case": "64 vCPUs x 1 MiB xsave (valid)", "bytes": size,
                         "command": command, **run(argv(path), tmp / f"store-x{command}",
                                                   path, opts.xsmig_from)})
    print(f"{'case':<44} {'bytes':>9} {'command':<8} {'exit':>4} {'s':>6} {'RSS MiB':>8}")
    for r in rows:
        print(f"{r['case']:<44} {r['bytes']:>9} {r['command']:<8} {r['exit']:>4} "
              f"{r['seconds']:>6.2f} {r['peak_rss_mib']:>8.1f}  {r['message']}")
    small = [r for r in rows if r["bytes"] < MiB]
    worst_rss = max(r["peak_rss_mib"] for r in small)
    worst_s = max(r["seconds"] for r in small)
    print(f"\nstreams under 1 MiB: worst peak RSS {worst_rss} MiB, worst time {worst_s} s "
          f"(bound: 64 MiB, 5 s); python {sys.version.split()[0]}")
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
