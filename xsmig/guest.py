"""A running guest: a process that keeps writing a domain while it is live-migrated,
as the guest of QEMU's migration tests does (`xsmig run`, `xsmig pause`, `xsmig guest-check`).

Workload:
- the working set is every plain page except pfns 0 and 1 and the guest's p2m-table
  pages (the saver rewrites those): ascending pfn order, in runs of consecutive pfns;
- each page carries a little-endian u64 counter at byte offset COUNTER_OFFSET. A pass
  writes the pass's counter into every working-set page in order, a chunk of
  consecutive pages at a time (one readinto, one strided C-level store, one write);
  `--dirty-rate` paces the chunks. A first start writes 0 everywhere, unpaced, so a
  guest always satisfies its invariant;
- page tables at a lower rate: every PT_PERIOD seconds it flips the dirty flag (bit 6)
  of one entry of an L1 page table (one byte, so a frame is never torn);
- vCPU state at a lower rate still: every VCPU_PERIOD seconds it stores the counter in
  one vCPU's instruction pointer.
Every page it writes is marked in the log-dirty bitmap after its data (xsmig/dirty.py).

Invariant: with state (counter C, position P), working-set pages [0, P) hold C and
pages [P, end) hold C-1. Pausing (`xsmig pause` creates RUN_DIR/NAME.pause; SIGTERM,
SIGINT and SIGUSR1 too) takes effect at the next chunk boundary, where that holds;
the guest then records its state as "paused" and exits. `xsmig run` on a paused
domain resumes from its recorded state.

Run files live beside the store's domains, in RUN_DIR: NAME.json (state, written by
rename), NAME.dirty (bitmap).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from xsmig import pagetypes as pt
from xsmig.dirty import DirtyLog, run_mask
from xsmig.domain import PAGE_SIZE, DomainDir, DomainMeta
from xsmig.errors import StateError, UsageError, XsmigError

RUN_DIR = "run"
COUNTER_OFFSET = 8  # bytes 0..7 carry synth's per-page stamp
COUNTER_WORD = COUNTER_OFFSET // 8
RESERVED = (0, 1)  # pfn 0 and the start-info page
MAX_CHUNK = 256  # pages per read-modify-write
PT_PERIOD = 0.05
VCPU_PERIOD = 0.25
PT_DIRTY_BIT = 0x40
PAUSE_TIMEOUT = 30.0


class InvariantBroken(XsmigError):
    """`xsmig guest-check`: a counter page disagrees with the guest's state."""

    exit_code = 1


class RunFiles:
    def __init__(self, store_root: Path, name: str) -> None:
        self.dir = store_root / RUN_DIR
        self.state = self.dir / f"{name}.json"
        self.dirty = self.dir / f"{name}.dirty"
        self.error = self.dir / f"{name}.error"  # why a detached guest stopped, if it failed
        self.pause = self.dir / f"{name}.pause"  # a pause request, seen at a chunk boundary

    def read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateError(f"cannot read guest state {self.state}: {e}") from None
        if not isinstance(data, dict):
            raise StateError(f"guest state {self.state} is not an object")
        return data

    def write_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_name(f".{self.state.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.state)


def working_set(meta: DomainMeta, types: bytes | bytearray) -> list[tuple[int, int]]:
    """(first pfn, count) runs of the working set, ascending: regex scans, set arithmetic
    only on the few reserved pfns."""
    skip = sorted({*RESERVED, *meta.p2m_frames})
    runs: list[tuple[int, int]] = []
    for m in pt.PLAIN_RUN.finditer(types):
        start, end = m.span()
        for s in [p for p in skip if start <= p < end]:
            if s > start:
                runs.append((start, s - start))
            start = s + 1
        if end > start:
            runs.append((start, end - start))
    return runs


def _chunks(runs: list[tuple[int, int]], most: int = MAX_CHUNK) -> list[tuple[int, int, int]]:
    """(first pfn, count, working-set index of the first) chunks of at most `most` pages."""
    out, index = [], 0
    for first, count in runs:
        for off in range(0, count, most):
            n = min(most, count - off)
            out.append((first + off, n, index + off))
        index += count
    return out


def _word(counter: int) -> int:
    """The host-order u64 whose bytes are `counter` little-endian (guest memory is LE)."""
    return int.from_bytes((counter & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"), sys.byteorder)


def _l1_tables(types: bytes | bytearray) -> list[int]:
    return [m.start() for m in pt.PAGETABLE.finditer(types)
            if types[m.start()] & ~pt.LPINTAB == pt.L1TAB]


class Guest:
    def __init__(self, domain: DomainDir, files: RunFiles, rate: float) -> None:
        self.domain = domain
        self.files = files
        self.rate = rate
        self.meta = domain.read_meta()
        self.types = domain.read_types()
        self.runs = working_set(self.meta, self.types)
        # ~50 chunks a second when paced: a pause waits at most one chunk's time
        self.chunks = _chunks(self.runs, max(1, min(MAX_CHUNK, int(rate / 50))) if rate
                              else MAX_CHUNK)
        self.size = sum(n for _, n in self.runs)
        self.l1 = _l1_tables(self.types)
        self.log = DirtyLog(files.dirty, self.meta.p2m_size)
        self.buf = bytearray(MAX_CHUNK * PAGE_SIZE)
        self.pause_requested = False
        self.counter = 1
        self.position = 0
        self.stats = {"pages_written": 0, "pt_writes": 0, "vcpu_writes": 0, "passes": 0}

    def state(self, status: str) -> dict[str, Any]:
        return {"status": status, "pid": os.getpid(), "counter": self.counter,
                "position": self.position, "working_set": self.size,
                "dirty_rate": self.rate, "time": time.time(), **self.stats}

    def _fill(self, mem: Any, first: int, n: int, value: int) -> None:
        view = memoryview(self.buf)[:n * PAGE_SIZE]
        os.preadv(mem.fileno(), [view], first * PAGE_SIZE)
        view.cast("Q")[COUNTER_WORD::PAGE_SIZE // 8] = memoryview(array("Q", [_word(value)]) * n)
        os.pwrite(mem.fileno(), view, first * PAGE_SIZE)

    def start(self) -> None:
        prev = self.files.read_state()
        if prev is not None and prev.get("status") == "running":
            from xsmig.store import pid_alive
            if pid_alive(int(prev.get("pid", 0))):
                raise StateError(f"guest {self.meta.name!r} is already running "
                                 f"(pid {prev['pid']})")
        self.files.dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.files.error, self.files.pause):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self.log.create()
        if prev is not None and prev.get("status") == "paused" \
                and prev.get("working_set") == self.size:
            self.counter, self.position = int(prev["counter"]), int(prev["position"])
            for key in self.stats:
                self.stats[key] = int(prev.get(key, 0))
            return
        # First start: every counter page to 0, so the invariant holds from here on.
        bits = 0
        with self.domain.open_memory("r+b") as mem:
            for first, n, _ in self.chunks:
                self._fill(mem, first, n, 0)
                bits |= run_mask(first, n)
        self.log.mark(bits)
        self.counter, self.position = 1, 0

    def run(self, seconds: float | None = None) -> None:
        """Dirty pages at the rate until a pause is requested (or `seconds` passed)."""
        vl = self.meta.vcpu_layout
        now = time.monotonic()
        end = None if seconds is None else now + seconds
        next_chunk = next_pt = next_vcpu = now
        pt_index = vcpu_index = 0
        with self.domain.open_memory("r+b") as mem:
            fd = mem.fileno()
            index = self._chunk_at(self.position)
            pause = self.files.pause
            while not (self.pause_requested or pause.exists()) and (end is None
                                                                    or time.monotonic() < end):
                first, n, ws_index = self.chunks[index]
                # A chunk may start part-way (a resumed position): write only its rest.
                skip = self.position - ws_index
                first, n = first + skip, n - skip
                self._fill(mem, first, n, self.counter)
                bits = run_mask(first, n)
                self.stats["pages_written"] += n
                self.position += n
                index += 1
                if index == len(self.chunks):
                    index, self.position = 0, 0
                    self.counter += 1
                    self.stats["passes"] += 1
                now = time.monotonic()
                if self.l1 and now >= next_pt:
                    pfn = self.l1[pt_index % len(self.l1)]
                    at = pfn * PAGE_SIZE + (pt_index * 37 % 512) * 8
                    os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ PT_DIRTY_BIT]), at)
                    bits |= 1 << pfn
                    pt_index += 1
                    self.stats["pt_writes"] += 1
                    next_pt = now + PT_PERIOD
                if now >= next_vcpu:
                    vcpu_id = self.meta.vcpu_ids[vcpu_index % len(self.meta.vcpu_ids)]
                    ctx = self.domain.vcpu_path(vcpu_id, "ctx")
                    with open(ctx, "r+b") as f:
                        os.pwrite(f.fileno(), (self.counter % (1 << (8 * vl.word_size)))
                                  .to_bytes(vl.word_size, "little"), vl.rip)
                    vcpu_index += 1
                    self.stats["vcpu_writes"] += 1
                    next_vcpu = now + VCPU_PERIOD
                self.log.mark(bits)  # after the data: see xsmig/dirty.py
                if self.rate > 0:
                    next_chunk += n / self.rate
                    delay = next_chunk - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -1.0:
                        next_chunk = time.monotonic()  # fell behind: no burst to catch up

    def _chunk_at(self, position: int) -> int:
        for i, (_, n, ws_index) in enumerate(self.chunks):
            if ws_index <= position < ws_index + n:
                return i
        return 0


def _on_pause(guest: Guest) -> None:
    def handler(_signum: int, _frame: object) -> None:
        guest.pause_requested = True
    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(domain: DomainDir, files: RunFiles, rate: float, *, seconds: float | None = None,
        detach: bool = False) -> dict[str, Any]:
    """`xsmig run`: start (or resume) the guest, dirty pages until paused, record the
    state. With detach, return the running state once the guest has started."""
    if not rate >= 0:
        raise UsageError("--dirty-rate must be 0 or more pages per second")
    guest = Guest(domain, files, rate)
    if not guest.size:
        raise StateError(f"domain {guest.meta.name!r} has no plain pages to dirty")
    _on_pause(guest)
    if not detach:
        guest.start()
        files.write_state(guest.state("running"))
        guest.run(seconds)
        paused = guest.state("paused")
        files.write_state(paused)
        return paused
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:  # the caller: wait for the child to say it runs (or why it could not)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            said = r.read().decode(errors="replace")
        if not said.startswith("{"):
            raise StateError(said.strip() or f"guest {guest.meta.name!r} did not start")
        state: dict[str, Any] = json.loads(said)
        return state
    os.close(read_end)
    code = 0
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        try:
            guest.start()
            running = guest.state("running")
            files.write_state(running)
            os.write(write_end, json.dumps(running).encode())
        except Exception as e:
            os.write(write_end, str(e).encode() or type(e).__name__.encode())
            raise
        finally:
            os.close(write_end)
        guest.run(seconds)
        files.write_state(guest.state("paused"))
    except BaseException as e:  # no stderr here: say why in the run directory
        code = 1
        with contextlib.suppress(Exception):
            files.error.write_text(f"{type(e).__name__}: {e}\n")
    os._exit(code)


def pause(files: RunFiles, timeout: float = PAUSE_TIMEOUT) -> dict[str, Any] | None:
    """Ask a running guest to pause and wait until it has recorded its state. None: no
    guest ever ran; a paused guest's recorded state otherwise."""
    from xsmig.store import pid_alive

    state = files.read_state()
    if state is None or state.get("status") == "paused":
        return state
    pid = int(state.get("pid", 0))
    # A request file, not a signal: a signal landing in the middle of the guest's I/O is
    # one more thing an emulator can get wrong, and the guest looks at every chunk anyway.
    files.pause.touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = files.read_state()
        if state is not None and state.get("status") == "paused":
            with contextlib.suppress(FileNotFoundError):
                files.pause.unlink()
            return state  # recorded after its last write: nothing changes from here on
        if not pid_alive(pid):
            # It may have recorded "paused" and exited between our read and this check.
            state = files.read_state()
            if state is not None and state.get("status") == "paused":
                with contextlib.suppress(FileNotFoundError):
                    files.pause.unlink()
                return state
            why = ""
            with contextlib.suppress(OSError):
                why = f" ({files.error.read_text().strip()})"
            raise StateError(f"the guest (pid {pid}) died without pausing{why}: its counter "
                             "pages may be mid-pass (check with xsmig guest-check)")
        time.sleep(0.005)
    raise StateError(f"the guest (pid {pid}) did not pause within {timeout:g} s")


def check(domain: DomainDir, counter: int | None = None, position: int | None = None
          ) -> dict[str, Any]:
    """The invariant: pages [0, P) hold C, [P, end) hold C-1. Without C and P (a guest
    whose state is not known), C is read off the first page and P is where the counters
    step down, as QEMU's migration test checks. Raises InvariantBroken naming the first
    stale page."""
    meta = domain.read_meta()
    types = domain.read_types()
    runs = working_set(meta, types)
    size = sum(n for _, n in runs)
    if not size:
        raise StateError(f"domain {meta.name!r} has no counter pages")
    buf = bytearray(MAX_CHUNK * PAGE_SIZE)
    view = memoryview(buf)

    def counters(mem: Any, first: int, n: int) -> bytes:
        os.preadv(mem.fileno(), [view[:n * PAGE_SIZE]], first * PAGE_SIZE)
        return view[:n * PAGE_SIZE].cast("Q")[COUNTER_WORD::PAGE_SIZE // 8].tobytes()

    with domain.open_memory() as mem:
        if counter is None:
            counter = int.from_bytes(counters(mem, runs[0][0], 1), "little")
            position = None
        elif position is None or not 0 <= position <= size:
            raise UsageError(f"--position must be between 0 and {size}")
        cur, prev = counter.to_bytes(8, "little"), ((counter - 1) % (1 << 64)).to_bytes(8,
                                                                                        "little")
        for first, n, ws_index in _chunks(runs):
            got = counters(mem, first, n)
            if position is None:  # free: the step down may be anywhere, but once only
                k = 0
                while k < n and got[8 * k:8 * k + 8] == cur:  # find the step (cur run)
                    k += _run_len(got[8 * k:], cur)
                if k < n:
                    position = ws_index + k
            split = max(0, min(n, (position if position is not None else size) - ws_index))
            want = cur * split + prev * (n - split)
            if got != want:
                bad = next(i for i in range(n) if got[8 * i:8 * i + 8] != want[8 * i:8 * i + 8])
                value = int.from_bytes(got[8 * bad:8 * bad + 8], "little")
                expected = counter if bad < split else counter - 1
                raise InvariantBroken(
                    f"stale page: pfn {first + bad:#x} (working-set page {ws_index + bad} of "
                    f"{size}) holds counter {value}, expected {expected} (counter {counter}, "
                    f"position {position})")
    return {"pages": size, "counter": counter,
            "position": size if position is None else position, "ok": True}


def _run_len(data: bytes, word: bytes) -> int:
    """How many leading 8-byte words of `data` equal `word` (C-level: lstrip-like compare
    by halving)."""
    n = len(data) // 8
    lo, hi = 0, n
    while lo < hi:  # largest k with data[:8k] == word*k: O(log n) C compares
        mid = (lo + hi + 1) // 2
        if data[:8 * mid] == word * mid:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, 1)
