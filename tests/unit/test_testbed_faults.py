"""Fault cells without Docker: how a faulted restore is judged, argv, locks, the declared cells."""

from __future__ import annotations

import threading

from scenarios import faults as declared
from scenarios.hosts import BY_NAME, FAULT_PAIRS, NIGHTLY_PAIRS, PAIRS
from testbed.cells import faults
from testbed.cells.migrate import Transfer


def transfer(status: int | None, err: str = "", error: str | None = None) -> Transfer:
    return Transfer(("save",), ("restore",), 0, "", status, "", err, 1 << 20, 1.0, False, error)


def test_a_restore_that_succeeds_despite_the_fault_is_a_problem() -> None:
    for kind in declared.EXPECTED:
        _, problem = faults._restore_ended(transfer(0), kind)
        assert problem == "the restore succeeded despite the fault"


def test_a_lost_status_is_fine_only_where_declared() -> None:
    for status in (None, -1):
        assert faults._restore_ended(transfer(status, error="cut"), "cut")[1] is None
        text, problem = faults._restore_ended(transfer(status), "store-full")
        assert problem is not None and "expected refused (exit 5)" in problem
        assert "status lost" in text


def test_a_refusal_needs_the_expected_code_and_one_clean_line() -> None:
    ok = transfer(5, "xsmig: error: No space left on device\n")
    text, problem = faults._restore_ended(ok, "store-full")
    assert problem is None and "No space left on device" in text  # the cause, for the report
    assert faults._restore_ended(transfer(3, "xsmig: error: truncated\n"), "store-full")[1]
    traceback = transfer(5, "Traceback (most recent call last):\nOSError: 28\n")
    assert "clean" in str(faults._restore_ended(traceback, "store-full")[1])
    assert faults._restore_ended(transfer(3, "xsmig: error: truncated\n"), "kill-src")[1] is None


def test_restore_argv_store_and_idle_timeout() -> None:
    plain = faults.restore_argv("c1", None, idle=False)
    assert plain[:2] == ["xsmig", "restore"] and "--idle-timeout" not in plain
    tiny = faults.restore_argv("c1", "/var/lib/xsmig-tiny", idle=True)
    assert tiny[:2] == ["env", "XSMIG_STORE=/var/lib/xsmig-tiny"]
    assert tiny[-2:] == ["--idle-timeout", str(faults.IDLE_TIMEOUT)]


def test_exclusive_locks_hosts_in_one_order_so_crossing_cells_cannot_deadlock() -> None:
    done: list[str] = []

    def cell(hops: tuple[str, str]) -> None:
        for _ in range(50):
            with faults.exclusive(hops):
                done.append(hops[0])

    a = threading.Thread(target=cell, args=(("x-a", "y-b"),))
    b = threading.Thread(target=cell, args=(("y-b", "x-a"),))
    a.start(), b.start()
    a.join(10), b.join(10)
    assert not a.is_alive() and not b.is_alive() and len(done) == 100


def test_fault_cells_cover_every_pair_native_and_extended_on_hosts_of_their_own() -> None:
    cells = declared.cells()
    assert {(c.pair, c.encoding) for c in cells} == {
        (p, e) for p in NIGHTLY_PAIRS for e in ("native", "extended")
    }
    shared = {h for hops in PAIRS.values() for h in hops}
    for c in cells:
        assert c.faults == tuple(declared.EXPECTED) and not shared & set(c.hops)
        assert [BY_NAME[h].arch for h in c.hops] == c.pair.split("-to-")
        assert c.domain.pages * 4096 > 2 * declared.TRIGGER  # every fault lands mid-stream
    # Neighbours share no host, so two fault cells can run at once.
    for a, b in ((0, 1), (2, 3)):
        pa, pb = declared.ORDER[a], declared.ORDER[b]
        assert not set(FAULT_PAIRS[pa]) & set(FAULT_PAIRS[pb])


def test_every_fault_expects_something_other_than_success() -> None:
    assert set(declared.EXPECTED) == {
        "cut",
        "store-full",
        "kill-src",
        "stall",
        "kill-dst",
        "netdown",
        "live-cut",
    }
    assert list(declared.EXPECTED)[-1] == "live-cut"  # its running guest changes the source
    for exp in declared.EXPECTED.values():
        assert exp.codes or exp.lost
        assert 0 not in exp.codes
