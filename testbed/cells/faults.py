"""Faults injected into real migrations, healed, and checked for loss (scenarios/faults.py).

A fault cell creates one guest on its source and, for each fault in turn:
streams `xsmig save | xsmig restore` with a tap on the pump that injects the
fault once TRIGGER bytes reached the destination (cut the SSH connection, kill
a container, SIGSTOP the restore, take the host off the network; a full store
needs no tap: the restore writes into a 1 MiB tmpfs); heals (restart, SIGCONT,
reconnect, end the orphaned restore); then checks that the source domain is
still there with its digest unchanged, that the destination holds no domain and
no write-aside leftovers of that name, and that the same migration over the
healed link restores identically. Every fault is reported with its cause; a
fault that goes wrong does not stop the next one.

The cells run on hosts of their own and take an exclusive lock on both, so
breaking a host disturbs no other cell. Killing and disconnecting a host are
capabilities of the hosts' provider, asked for by protocol (hosts/facade.py:
killable, disconnectable: a Fleet of containers has them, an inventory of real
machines has not); everything else goes through the host facade.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from scenarios.faults import EXPECTED, LIVE_CUT, LIVE_FAULTED, LIVE_RATE, LIVE_RETRY, TRIGGER
from scenarios.model import Cell
from testbed.cells import migrate
from testbed.cells.domains import HostProvider, create_argv
from testbed.cells.oracle import ERROR_PREFIX
from testbed.cells.results import CellResult, HopRecord
from testbed.errors import TestbedError
from testbed.hosts.facade import disconnectable, killable
from testbed.hosts.hosts import TINY_STORE, TINY_STORE_SIZE

STALL_DEADLINE = 12.0  # the runner's deadline on a stalled destination
NET_DEADLINE = 30.0  # ... and on one taken off the network
IDLE_TIMEOUT = 10  # `xsmig restore --idle-timeout`, where the destination's xsmig has it
SETTLE = 10.0  # how long a restore may take to notice its input is gone (EOF)
STORE = "/var/lib/xsmig"  # the hosts' own store (images/overlay: xsmig-entrypoint)

# Finds a restore of one domain by its command line (works under QEMU, which keeps
# the emulated argv in /proc/PID/cmdline). $1: the domain name; never matches itself.
FIND_RESTORE = r"""
for d in /proc/[0-9]*; do
  p=${d#/proc/}; [ "$p" = $$ ] && continue
  c=$( { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null) || continue  # it may have exited
  case "$c" in *"xsmig restore "*"--name $1 "*) echo "$p";; esac
done
"""

FAULT_WINDOW = 256 << 10  # SSH window of the faulted save's channel (see phase)
LIVE_ATTEMPTS = 3  # live_phase: a save that stopped before the cut reached it is tried again
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_idle_support: dict[tuple[int, str], bool] = {}


@contextmanager
def exclusive(names: tuple[str, ...]) -> Iterator[None]:
    """Hold every named host (in a fixed order, so two cells cannot deadlock)."""
    with _locks_guard:
        locks = [_locks.setdefault(n, threading.Lock()) for n in sorted(set(names))]
    with ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def restore_pids(hosts: HostProvider, host: str, name: str) -> list[int]:
    """Restores of `name` running on a host (asked when the host is on the network)."""
    r = hosts.host(host).shell(FIND_RESTORE, name, timeout=60)
    if not r.ok:
        raise TestbedError(f"cannot list processes on {host}: {r.err.strip()}")
    return [int(p) for p in r.out.split() if p.isdigit()]


def signal_restore(hosts: HostProvider, host: str, name: str, sig: str) -> list[int]:
    """Stop, continue or kill the restores of `name` on a host (`kill -SIG`)."""
    pids = restore_pids(hosts, host, name)
    hosts.host(host).signal(pids, sig)
    return pids


def has_idle_timeout(hosts: HostProvider, host: str) -> bool:
    """Whether the destination's xsmig can end a restore whose writer went silent."""
    key = (id(hosts), host)
    if key not in _idle_support:
        r = hosts.host(host).xsmig("restore", "--help", timeout=120)
        _idle_support[key] = "--idle-timeout" in r.out
    return _idle_support[key]


def restore_argv(name: str, store: str | None, idle: bool) -> list[str]:
    argv = migrate.restore_argv(name, profile="current", source_width=None)
    if idle:
        argv += ["--idle-timeout", str(IDLE_TIMEOUT)]
    return ["env", f"XSMIG_STORE={store}", *argv] if store else argv


@dataclass
class Injector:
    """Injects one fault from the pump's tap, then heals it."""

    kind: str
    fleet: HostProvider
    src: str
    dst: str
    name: str
    at: int | None = None  # bytes delivered to the destination when the fault hit
    error: str | None = None

    def tap(self, total: int, s_chan: paramiko.Channel, d_chan: paramiko.Channel) -> None:
        if self.at is not None or total < TRIGGER:
            return
        self.at = total
        try:
            if self.kind == "cut":
                transport = d_chan.get_transport()
                if transport is not None:
                    transport.close()  # the TCP connection to the destination's sshd goes
            elif self.kind == "kill-src":
                killable(self.fleet, "kill faults").kill(self.src)
            elif self.kind == "kill-dst":
                killable(self.fleet, "kill faults").kill(self.dst)
            elif self.kind == "stall":
                if not signal_restore(self.fleet, self.dst, self.name, "STOP"):
                    self.error = "no restore process to stop on the destination"
            elif self.kind == "netdown":
                disconnectable(self.fleet, "netdown faults").disconnect(self.dst)
        except Exception as exc:  # the pump must go on; the phase reports it
            self.error = f"injecting {self.kind} failed: {exc}"

    def heal(self, idle: bool) -> tuple[str, str | None]:
        """Undo the fault; returns (what was done, problem or None)."""
        t0 = time.monotonic()
        done = ""
        if self.kind == "kill-src":
            killable(self.fleet, "kill faults").restart(self.src)
            done = f"{self.src} restarted in {time.monotonic() - t0:.1f}s"
        elif self.kind == "kill-dst":
            killable(self.fleet, "kill faults").restart(self.dst)
            done = f"{self.dst} restarted in {time.monotonic() - t0:.1f}s"
        elif self.kind == "netdown":
            disconnectable(self.fleet, "netdown faults").reconnect(self.dst)
            done = f"{self.dst} reconnected in {time.monotonic() - t0:.1f}s"
        elif self.kind == "stall":
            signal_restore(self.fleet, self.dst, self.name, "CONT")
            done = "restore continued (SIGCONT) after the deadline"
        # A restore whose link is gone must end by itself: at EOF, or (link silently
        # dead) by its idle timeout. Without --idle-timeout it would wait forever.
        wait = SETTLE + (IDLE_TIMEOUT + 10 if idle and self.kind == "netdown" else 0)
        deadline = time.monotonic() + wait
        while (pids := restore_pids(self.fleet, self.dst, self.name)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        if not pids:
            return done, None
        signal_restore(self.fleet, self.dst, self.name, "KILL")
        if self.kind == "netdown" and not idle:
            # Known gap of xsmig without --idle-timeout: the runner ends the orphan.
            return done + "; orphaned restore killed (xsmig has no --idle-timeout)", None
        return done, f"the faulted restore was still running {wait:.0f}s after the fault"


def _leftovers(hosts: HostProvider, host: str, name: str) -> list[str]:
    """Write-aside entries of `name` left in either store (each writer reaps dead ones):
    xsmig's crash-safety promise is about its store's files, so they are looked at."""
    script = f"ls {STORE}/incoming {TINY_STORE}/incoming 2>/dev/null; true"
    out = hosts.host(host).shell(script, timeout=60).out
    return [e for e in out.split() if e.startswith(f"{name}.")]


def _restore_ended(t: migrate.Transfer, kind: str) -> tuple[str, str | None]:
    """How the faulted restore ended, in words, and what is wrong with it (or None)."""
    exp = EXPECTED[kind]
    status = t.restore_status
    lines = [ln for ln in t.restore_stderr.splitlines() if ln.strip()]
    if status == 0:
        return "restore exited 0", "the restore succeeded despite the fault"
    if status is None or status < 0:
        text = f"restore status lost: {t.error or 'channel closed'}"
        return text, None if exp.lost else f"{text}; expected {exp.describe()}"
    text = f"restore refused (exit {status}): {lines[0] if lines else '(no message)'}"
    if status not in exp.codes:
        return (
            text,
            f"restore exited {status}, expected {exp.describe()}: {t.restore_stderr!r:.300}",
        )
    if "Traceback" in t.restore_stderr or len(lines) != 1 or not lines[0].startswith(ERROR_PREFIX):
        return text, f"not one clean '{ERROR_PREFIX}...' line: {t.restore_stderr!r:.300}"
    return text, None


def phase(
    kind: str, k: int, cell: Cell, fleet: HostProvider, source_digest: str, workdir: Path
) -> tuple[HopRecord, list[str]]:
    """Inject one fault, heal, check nothing was lost, retry. Returns the record and problems."""
    exp = EXPECTED[kind]
    src_name, dst_name = cell.hops[0], cell.hops[1]
    name = cell.domain_name
    problems: list[str] = []
    idle = has_idle_timeout(fleet, dst_name)
    store = TINY_STORE if kind == "store-full" else None
    save = migrate.save_argv(name, cell.encoding, no_ext_info=False, rounds=None)
    deadline = {"stall": STALL_DEADLINE, "netdown": NET_DEADLINE}.get(kind, cell.timeout)
    inj = Injector(kind, fleet, src_name, dst_name, name)
    t = migrate.stream(
        fleet.host(src_name),
        fleet.host(dst_name),
        save,
        restore_argv(name, store, idle),
        timeout=deadline,
        tap=None if kind == "store-full" else inj.tap,
        # The save may run only this far ahead of the destination: with the matrix's
        # 16 MiB window the whole 4 MiB stream was at the runner before the 1 MiB trigger,
        # and killing the source then hit nothing.
        save_window=FAULT_WINDOW,
    )
    marks = [time.monotonic()]
    (workdir / f"{k}-{kind}-save.stderr").write_text(t.save_stderr)
    (workdir / f"{k}-{kind}-restore.stderr").write_text(t.restore_stderr)
    try:
        healed, problem = inj.heal(idle)
    except TestbedError as exc:
        healed, problem = "", f"could not heal: {exc}"
    marks.append(time.monotonic())
    problems += [p for p in (inj.error, problem) if p]
    if kind != "store-full" and inj.at is None:
        problems.append(f"the fault never fired: the stream ended after {t.bytes} bytes")
    ended, problem = _restore_ended(t, kind)
    problems += [problem] if problem else []
    # Nothing lost on the source, nothing half-made on the destination.
    src, dst = fleet.host(src_name), fleet.host(dst_name)
    with ThreadPoolExecutor(max_workers=1) as pool:
        after = pool.submit(src.digest, name, cell.timeout)
        try:
            if dst.has_domain(name, cell.timeout, store):
                problems.append(f"a domain {name} was left on {dst_name}")
        except TestbedError as exc:
            problems.append(str(exc))
        try:
            if after.result() != source_digest:
                problems.append("the source domain's digest changed")
        except TestbedError as exc:
            problems.append(f"the source domain is not intact: {exc}")
    marks.append(time.monotonic())
    # The same migration over the healed link (a store with room, for store-full).
    again = f"{name}r{k}"
    r = migrate.stream(
        src,
        dst,
        save,
        migrate.restore_argv(again, profile="current", source_width=None),
        timeout=cell.timeout,
    )
    retried = "retry identical"
    if r.error is not None or r.restore_status != 0:
        retried = f"retry FAILED: {r.error or r.restore_stderr.strip()[:300]}"
        problems.append(retried)
    else:
        try:
            if dst.digest(again, cell.timeout) != source_digest:
                retried = "retry restored a DIFFERENT domain"
                problems.append(retried)
        except TestbedError as exc:
            retried = f"retry unreadable: {exc}"
            problems.append(retried)
    marks.append(time.monotonic())
    left = _leftovers(fleet, dst_name, name)
    if left:
        problems.append(f"write-aside leftovers on {dst_name}: {', '.join(left)}")
    where = "not injected" if inj.at is None else f"injected after {inj.at} bytes"
    if kind == "store-full":
        where = f"restore into a {TINY_STORE_SIZE.replace('m', ' MiB')} tmpfs store"
    actual = f"{exp.what}: {where}; {ended}; " + (f"{healed}; " if healed else "")
    actual += f"source intact, nothing left on {dst_name}; {retried}" if not problems else ""
    actual += "; ".join(problems)
    spans = [f"{b - a:.1f}" for a, b in zip([marks[0] - t.seconds, *marks], marks, strict=False)]
    actual += f" [attempt/heal/check/retry s: {'/'.join(spans)}]"
    record = HopRecord(
        src_name,
        dst_name,
        f"[{kind}] {exp.describe()}; source intact; nothing on the destination; retry identical",
        actual,
        t.bytes + r.bytes,
        round(t.seconds + r.seconds, 3),
        round(r.mib_per_s, 2),
        t.save_status,
        t.restore_status,
        "the healed link",
    )
    return record, problems


def live_phase(
    kind: str, k: int, cell: Cell, fleet: HostProvider, source_digest: str, workdir: Path
) -> tuple[HopRecord, list[str]]:
    """The link cut during a live round: the guest runs on the source (xsmig run), the
    live save is past its first round when the stream is cut. Then the guest must still
    be running (the save never paused it), pause cleanly with its invariant whole on the
    source, nothing may be left on the destination, and the guest must resume and
    migrate live over the healed link, identical at its pause, every counter current.
    `source_digest` is not used: the running guest changes the source."""
    import json

    from testbed.cells.live import rounds_of

    del source_digest
    src_name, dst_name = cell.hops[0], cell.hops[1]
    src, dst = fleet.host(src_name), fleet.host(dst_name)
    name = cell.domain_name
    problems: list[str] = []
    idle = has_idle_timeout(fleet, dst_name)
    save = migrate.save_argv(name, cell.encoding, no_ext_info=False, rounds=None)
    run = ("run", name, "--dirty-rate", str(LIVE_RATE), "--detach")
    for attempt in range(1, LIVE_ATTEMPTS + 1):
        started = src.xsmig(*run, timeout=cell.timeout)  # resumes a guest paused below
        if not started.ok:
            raise TestbedError(f"xsmig run on {src_name}: {started.err.strip()}")
        t = migrate.stream(src, dst, [*save, *LIVE_FAULTED], restore_argv(name, None, idle),
                           timeout=cell.timeout, limit=LIVE_CUT, save_window=FAULT_WINDOW)
        tag = f"{k}-{kind}" if attempt == 1 else f"{k}-{kind}-attempt{attempt}"
        (workdir / f"{tag}-save.stderr").write_text(t.save_stderr)
        (workdir / f"{tag}-restore.stderr").write_text(t.restore_stderr)
        # The fault's precondition: the save still in its rounds at the cut. A round can
        # end with nothing dirty when it lasts less than one of the emulated guest's
        # chunks (the stream flows that fast now), and the save then stops and pauses the
        # guest before the cut: the fault never met a live round, so it is tried again;
        # the last attempt is judged as it is.
        early = any(line.get("final") for line in rounds_of(t.save_stderr))
        if not early or attempt == LIVE_ATTEMPTS:
            break
        if t.restore_status == 0:  # the whole stream got through before the cut
            dst.xsmig("destroy", name, timeout=cell.timeout)
    if not t.cut:
        problems.append(f"the cut never happened: the stream ended after {t.bytes} bytes")
    healed, problem = Injector(kind, fleet, src_name, dst_name, name).heal(idle)
    ended, problem2 = _restore_ended(t, kind)
    problems += [p for p in (problem, problem2) if p]
    if any(line.get("final") for line in rounds_of(t.save_stderr)):
        problems.append("the faulted save paused the guest: the cut came too late")
    paused = src.xsmig("pause", name, timeout=cell.timeout)
    state = json.loads(paused.out) if paused.ok else {}
    if not paused.ok:
        problems.append(f"the guest did not pause after the cut: {paused.err.strip()}")
    else:
        check = src.xsmig("guest-check", name, "--counter", str(state["counter"]),
                          "--position", str(state["position"]), timeout=cell.timeout)
        if not check.ok:
            problems.append(f"the source guest's invariant broke: {check.err.strip()}")
    if dst.has_domain(name, cell.timeout, None):
        problems.append(f"a domain {name} was left on {dst_name}")
    # Resume the guest, migrate live over the healed link.
    again = f"{name}r{k}"
    retried = "live retry identical, every counter page current"
    resumed = src.xsmig(*run, timeout=cell.timeout)
    r = migrate.stream(src, dst, [*save, *LIVE_RETRY],
                       migrate.restore_argv(again, profile="current", source_width=None),
                       timeout=cell.timeout) if resumed.ok else None
    src.xsmig("pause", name, timeout=cell.timeout)  # a failed retry left it running
    final = (rounds_of(r.save_stderr) or [{}])[-1] if r is not None else {}
    guest = final.get("guest") or {}
    if r is None or r.error is not None or r.restore_status != 0 or not guest:
        why = resumed.err.strip() if r is None else (r.error or r.save_stderr.strip()[-300:]
                                                     + r.restore_stderr.strip()[-300:])
        retried = f"live retry FAILED: {why}"
        problems.append(retried)
    else:
        if dst.digest(again, cell.timeout) != src.digest(name, cell.timeout):
            retried = "live retry restored a DIFFERENT domain"
            problems.append(retried)
        check = dst.xsmig("guest-check", again, "--counter", str(guest["counter"]),
                          "--position", str(guest["position"]), timeout=cell.timeout)
        if not check.ok:
            retried = f"live retry broke the guest's invariant: {check.err.strip()}"
            problems.append(retried)
        if state and guest["pages_written"] <= state.get("pages_written", 0):
            problems.append("the resumed guest wrote nothing")
    left = _leftovers(fleet, dst_name, name)
    if left:
        problems.append(f"write-aside leftovers on {dst_name}: {', '.join(left)}")
    healed = f"{healed}; " if healed else ""
    actual = (f"{EXPECTED[kind].what}: cut after {t.bytes} bytes; {ended}; {healed}"
              f"guest paused at counter {state.get('counter')}, invariant whole; "
              f"nothing left on {dst_name}; {retried}") if not problems else "; ".join(problems)
    record = HopRecord(
        src_name, dst_name,
        f"[{kind}] {EXPECTED[kind].describe()}; guest still running, pauses whole; nothing on "
        "the destination; resumed live retry identical",
        actual, t.bytes + (r.bytes if r else 0), round(t.seconds + (r.seconds if r else 0), 3),
        round(r.mib_per_s, 2) if r else 0.0, t.save_status, t.restore_status, "the healed link")
    return record, problems


def run_faults(cell: Cell, provider: HostProvider, workdir: Path, result: CellResult) -> str | None:
    """The whole fault cell; returns the failure text, or None when every fault was survived."""
    # Asked before the guest exists: hosts that cannot be broken fail the cell up front.
    killable(provider, "fault cells")
    disconnectable(provider, "fault cells")
    fleet = provider
    failures: list[str] = []
    with exclusive(cell.hops):
        src = fleet.host(cell.hops[0])
        made = src.xsmig(*create_argv(cell), timeout=cell.timeout)
        if not made.ok:
            return f"xsmig create on {src.name}: exit {made.exit_status}: {made.err.strip()}"
        name = cell.domain_name
        source_digest = src.digest(name, cell.timeout)
        for k, kind in enumerate(cell.faults, 1):
            t0 = time.monotonic()
            try:
                step = live_phase if kind == "live-cut" else phase
                record, problems = step(kind, k, cell, fleet, source_digest, workdir)
            except Exception as exc:  # a broken host or engine: report, go on with the next
                why = str(exc) if isinstance(exc, TestbedError) else f"{type(exc).__name__}: {exc}"
                record = HopRecord(cell.hops[0], cell.hops[1], f"[{kind}]", f"could not run: {why}")
                problems = [why]
            record.seconds = round(time.monotonic() - t0, 3)
            result.hops.append(record)
            failures += [f"{kind}: {p}" for p in problems]
    return "; ".join(failures) or None
