"""Live migration with a running guest: the log-dirty bitmap and its race, the guest's
counter invariant, live rounds in every encoding with no lost write, convergence, the
round limit, and a failed live save that leaves the guest resumable."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.xsmig_helpers import REPO, Guest, digest, make, restore_bytes
from xsmig import guest as g
from xsmig.dirty import DirtyLog, pfns, run_mask, to_bytemap
from xsmig.domain import PAGE_SIZE
from xsmig.layout import ABIS
from xsmig.live import LiveOptions, LiveRounds
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save

PAGES = 512


def test_bitmap_bits_and_pfns() -> None:
    bits = run_mask(3, 4) | 1 << 200 | 1 << 511
    assert to_bytemap(bits, 512)[:8] == bytes([0, 0, 0, 1, 1, 1, 1, 0])
    assert pfns(bits, 512) == [3, 4, 5, 6, 200, 511]
    keep = bytearray(b"\1" * 512)
    keep[4] = keep[511] = 0
    assert pfns(bits, 512, bytes(keep)) == [3, 5, 6, 200]
    assert pfns(0, 512) == []


def test_write_after_fetch_stays_dirty(tmp_path: Path) -> None:
    """The race: the saver fetches and clears; a page marked after that is in the next
    fetch, and a mark before it is never lost by the clear."""
    log = DirtyLog(tmp_path / "d", 100)
    log.create()
    log.mark(run_mask(10, 5))
    assert log.count() == 5
    first = log.fetch_and_clear()
    log.mark(1 << 12)  # the guest wrote pfn 12 again after the saver read the bitmap
    assert pfns(first, 100) == [10, 11, 12, 13, 14]
    assert pfns(log.fetch_and_clear(), 100) == [12]
    assert log.fetch_and_clear() == 0
    log.create()  # a second create keeps the bits
    log.mark(1 << 99)
    log.create()
    assert log.count() == 1


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _xsmig(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XSMIG_STORE": str(store.root), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "xsmig", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60, check=False)


def test_guest_invariant_and_first_stale_page(tmp_path: Path) -> None:
    store = _store(tmp_path)
    domain = make(store, "g", Guest(pages=PAGES, width=32, vcpus=2))
    files = g.RunFiles(store.root, "g")
    state = g.run(domain, files, 0, seconds=0.2)
    assert state["status"] == "paused" and state["passes"] >= 1
    assert state["pt_writes"] >= 1 and state["vcpu_writes"] >= 1
    ok = g.check(domain, state["counter"], state["position"])
    assert ok["pages"] == state["working_set"]
    assert g.check(domain)["counter"] == state["counter"] - (state["position"] == 0)
    # A page that missed the last write: named, with what it holds.
    runs = g.working_set(domain.read_meta(), domain.read_types())
    pfn = runs[-1][0] + runs[-1][1] - 1  # the last working-set page: holds counter - 1
    with domain.open_memory("r+b") as mem:
        mem.seek(pfn * PAGE_SIZE + g.COUNTER_OFFSET)
        mem.write((state["counter"] - 5).to_bytes(8, "little"))
    with pytest.raises(g.InvariantBroken, match=f"pfn {pfn:#x}"):
        g.check(domain, state["counter"], state["position"])
    r = _xsmig(store, "guest-check", "g", "--counter", str(state["counter"]), "--position",
               str(state["position"]))
    assert r.returncode == 1 and f"stale page: pfn {pfn:#x}" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_resume_continues_from_recorded_state(tmp_path: Path) -> None:
    store = _store(tmp_path)
    domain = make(store, "g", Guest(pages=PAGES))
    files = g.RunFiles(store.root, "g")
    first = g.run(domain, files, 0, seconds=0.1)
    second = g.run(domain, files, 0, seconds=0.1)
    assert second["pages_written"] > first["pages_written"]
    assert (second["counter"], second["position"]) > (first["counter"], first["position"])
    g.check(domain, second["counter"], second["position"])


def _live_save(domain_name: str, store: Store, encoding: Encoding, opts: LiveOptions,
               out: io.BytesIO | None = None) -> tuple[bytes, list[dict[str, object]]]:
    report = io.StringIO()
    buf = out or io.BytesIO()
    save(store.get(domain_name), buf, SaveOptions(encoding, ABIS["amd64"]),
         LiveRounds(g.RunFiles(store.root, domain_name), opts, report))
    return buf.getvalue(), [json.loads(line) for line in report.getvalue().splitlines()]


@pytest.mark.parametrize("encoding", list(Encoding))
def test_live_save_loses_no_write(tmp_path: Path, encoding: Encoding) -> None:
    """A guest dirtying pages flat out in another process; the rounds chase it; the
    destination equals the source at the pause and every counter page is current."""
    store = _store(tmp_path)
    make(store, "g", Guest(pages=PAGES, width=32 if encoding is Encoding.NATIVE else 64,
                           vcpus=2))
    r = _xsmig(store, "run", "g", "--dirty-rate", "0", "--detach")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "running"
    data, lines = _live_save("g", store, encoding, LiveOptions(max_rounds=4,
                                                               dirty_threshold=0,
                                                               max_downtime=0.0))
    final = lines[-1]
    # Flat out it dirties pages in every round, unless the scheduler idles it for one.
    assert final["final"] is True and final["stop"] in ("round-limit", "threshold")
    assert final["rounds"] == len(final["pages_per_round"]) == len(lines)
    assert final["pages_per_round"] == [line["pages"] for line in lines]
    assert final["stop"] == "threshold" or final["rounds"] == 5
    state = g.RunFiles(store.root, "g").read_state()
    assert state is not None and state["status"] == "paused"
    assert final["guest"]["counter"] == state["counter"]
    restored = restore_bytes(store, data, "r", host_id=7)
    assert digest(restored) == digest(store.get("g"))
    g.check(restored, state["counter"], state["position"])


def test_live_save_converges_and_without_guest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    make(store, "g", Guest(pages=PAGES))
    data, lines = _live_save("g", store, Encoding.V2, LiveOptions())
    assert lines[-1]["stop"] == "no-guest" and lines[-1]["pages_per_round"] == [PAGES, 0]
    assert digest(restore_bytes(store, data, "r0")) == digest(store.get("g"))
    r = _xsmig(store, "run", "g", "--dirty-rate", "200", "--detach")
    assert r.returncode == 0, r.stderr
    data, lines = _live_save("g", store, Encoding.EXTENDED,
                             LiveOptions(max_rounds=30, dirty_threshold=20, max_downtime=0))
    assert lines[-1]["stop"] == "threshold"
    state = g.RunFiles(store.root, "g").read_state()
    assert state is not None
    restored = restore_bytes(store, data, "r1")
    assert digest(restored) == digest(store.get("g"))
    g.check(restored, state["counter"], state["position"])


class _AlwaysDirty(DirtyLog):
    """A guest that dirties the same 100 pages between any two looks."""

    def exists(self) -> bool:
        return True

    def count(self) -> int:
        return 100

    def fetch_and_clear(self) -> int:
        return run_mask(0, 100)


def test_round_limit_when_the_guest_outruns_the_link(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import xsmig.live

    store = _store(tmp_path)
    make(store, "g", Guest(pages=PAGES))
    monkeypatch.setattr(xsmig.live, "DirtyLog", _AlwaysDirty)
    data, lines = _live_save("g", store, Encoding.V2,
                             LiveOptions(max_rounds=3, dirty_threshold=10, max_downtime=0))
    assert [line["round"] for line in lines] == [0, 1, 2, 3]
    assert lines[-1]["stop"] == "round-limit"
    # Later rounds: the dirty pages with data (pfns 0..99 of a guest without holes).
    assert lines[-1]["pages_per_round"] == [PAGES, 100, 100, 100]
    assert all(line["bytes"] > 100 * PAGE_SIZE for line in lines[1:])
    assert digest(restore_bytes(store, data, "r")) == digest(store.get("g"))


class _CutLink(io.BytesIO):
    """A link that breaks once `limit` bytes went through."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: object) -> int:
        if self.tell() + len(memoryview(data)) > self.limit:  # type: ignore[arg-type]
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(data)  # type: ignore[arg-type]


def test_failed_live_save_leaves_guest_running_and_resumable(tmp_path: Path) -> None:
    store = _store(tmp_path)
    make(store, "g", Guest(pages=PAGES))
    assert _xsmig(store, "run", "g", "--dirty-rate", "0", "--detach").returncode == 0
    with pytest.raises(BrokenPipeError):
        _live_save("g", store, Encoding.NATIVE, LiveOptions(max_rounds=10, dirty_threshold=0,
                                                            max_downtime=0),
                   out=_CutLink(PAGES * PAGE_SIZE // 2))  # mid round 0: the guest runs
    files = g.RunFiles(store.root, "g")
    state = files.read_state()
    assert state is not None and state["status"] == "running"  # never paused
    r = _xsmig(store, "pause", "g")
    assert r.returncode == 0, r.stderr
    paused = json.loads(r.stdout)
    g.check(store.get("g"), paused["counter"], paused["position"])
    # Resumable: it runs on from its recorded state, and migrates whole.
    assert _xsmig(store, "run", "g", "--dirty-rate", "0", "--detach").returncode == 0
    data, _ = _live_save("g", store, Encoding.ESCAPED, LiveOptions(max_rounds=3))
    state = files.read_state()
    assert state is not None and state["pages_written"] > paused["pages_written"]
    restored = restore_bytes(store, data, "r")
    assert digest(restored) == digest(store.get("g"))
    g.check(restored, state["counter"], state["position"])


def test_pause_sees_a_pause_recorded_just_before_the_exit(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI met: the guest records "paused" and exits between pause()'s read of
    its state and its liveness check. That is a pause, not a death."""
    from xsmig import store as store_module

    files = g.RunFiles(tmp_path, "g")
    files.write_state({"status": "running", "pid": 4242, "counter": 3, "position": 7})

    def exits_paused(pid: int) -> bool:
        files.write_state({"status": "paused", "pid": pid, "counter": 3, "position": 9})
        return False

    monkeypatch.setattr(store_module, "pid_alive", exits_paused)
    state = g.pause(files, timeout=5)
    assert state is not None and state["status"] == "paused" and state["position"] == 9
    assert not files.pause.exists()
    # A guest that really died (no paused record) is still an error naming it.
    files.write_state({"status": "running", "pid": 4242, "counter": 3, "position": 7})
    monkeypatch.setattr(store_module, "pid_alive", lambda pid: False)
    with pytest.raises(g.StateError, match="died without pausing"):
        g.pause(files, timeout=5)


def test_cli_refusals(tmp_path: Path) -> None:
    store = _store(tmp_path)
    make(store, "g", Guest(pages=PAGES))
    for args, text in [
        (("save", "g", "--encoding", "v2", "--live", "--max-rounds", "0"), "--max-rounds"),
        (("save", "g", "--encoding", "v2", "--live", "--rounds", "3"), "--rounds and --live"),
        (("run", "g", "--dirty-rate", "-1"), "--dirty-rate"),
        (("pause", "g"), "no guest"),
        (("run", "nosuch", "--dirty-rate", "1"), "no domain"),
    ]:
        r = _xsmig(store, *args, "-o", "/dev/null") if args[0] == "save" else _xsmig(store, *args)
        assert r.returncode in (2, 5), (args, r.stderr)
        assert text in r.stderr and r.stderr.count("\n") == 1, r.stderr


def _doctored_table_stream(store: Store, name: str, stale_first: bool) -> bytes:
    """A v2 stream in which one page table is sent twice: once with entry 0 naming a
    hole, once as it is. `stale_first`: the doctored copy is the older one."""
    from xsmig import pagetypes as pt
    from xsmig.stream.writer import _Saver

    def body(saver: _Saver) -> None:
        types = saver.types
        table = next(m.start() for m in pt.PAGETABLE.finditer(types)
                     if types[m.start()] & ~pt.LPINTAB == pt.L1TAB)
        hole = types.index(pt.XTAB)
        page = bytearray(PAGE_SIZE)
        with store.get(name).open_memory() as mem:
            mem.seek(table * PAGE_SIZE)
            mem.readinto(page)
        saver.canonicalise_page(table, types[table], memoryview(page))
        page[0:8] = ((hole << 12) | 0x27).to_bytes(8, "little")
        if not stale_first:
            saver.all_pages()
        saver.out.pages([table], bytes([types[table]]), memoryview(page))
        if stale_first:
            saver.all_pages()
        saver.body_end()

    buf = io.BytesIO()
    save(store.get(name), buf, SaveOptions(Encoding.V2, ABIS["amd64"]), body)
    return buf.getvalue()


def test_restore_judges_page_tables_by_their_last_copy(tmp_path: Path) -> None:
    """Restore skips the validator's page-table pass unless a pfn some entry named is a
    hole; then the final pages decide: a stale copy naming a hole is fine, a last one not."""
    from xsmig.errors import StreamError

    store = _store(tmp_path)
    make(store, "s", Guest(pages=PAGES, shape="sparse"))
    restored = restore_bytes(store, _doctored_table_stream(store, "s", True), "ok")
    assert digest(restored) == digest(store.get("s"))
    with pytest.raises(StreamError, match="entry 0 maps pfn"):
        restore_bytes(store, _doctored_table_stream(store, "s", False), "bad")
    assert not store.exists("bad")
