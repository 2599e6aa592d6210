"""Classifying what a restore did, and judging it against the expectation in both directions."""

from __future__ import annotations

from scenarios.model import IDENTICAL, Outcome, refused
from testbed.cells.oracle import Observed, classify, judge

D = "ab" * 32


def obs(**kw: object) -> Observed:
    base: dict[str, object] = {
        "exit_status": 0,
        "stderr": "",
        "restored_digest": D,
        "source_digest": D,
    }
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def test_identical_restore() -> None:
    actual = classify(obs())
    assert actual.outcome is Outcome.IDENTICAL
    assert judge(IDENTICAL, actual) is None


def test_digest_mismatch_is_a_silent_wrong_restore() -> None:
    actual = classify(obs(restored_digest="cd" * 32))
    assert actual.outcome is Outcome.DIFFERENT
    assert judge(IDENTICAL, actual) is not None
    assert judge(refused(4), actual) is not None


def test_restored_domain_that_cannot_be_digested_is_a_wrong_restore() -> None:
    actual = classify(obs(restored_digest=None, restored_unreadable="page table at pfn 0x19"))
    assert actual.outcome is Outcome.DIFFERENT
    assert "corrupt" in actual.message and "0x19" in actual.message
    assert judge(IDENTICAL, actual) is not None


def test_clean_refusal_matches_its_exit_code_and_message() -> None:
    line = "xsmig: error: cannot tell the stream's width; pass --source-width 32|64"
    actual = classify(
        obs(exit_status=4, stderr=line + "\n", restored_digest=None, source_digest_after=D)
    )
    assert actual.outcome is Outcome.REFUSED
    assert judge(refused(4, naming="--source-width"), actual) is None
    assert judge(refused(3), actual) is not None  # wrong exit code
    assert judge(refused(4, naming="--profile"), actual) is not None  # wrong message


def test_restore_where_refusal_expected_fails() -> None:
    assert judge(refused(4), classify(obs())) is not None


def test_refusal_where_identical_expected_fails() -> None:
    actual = classify(obs(exit_status=4, stderr="xsmig: error: no\n", restored_digest=None))
    assert judge(IDENTICAL, actual) is not None


def test_traceback_is_never_a_clean_refusal() -> None:
    err = "Traceback (most recent call last):\n  ...\nValueError: x\n"
    actual = classify(obs(exit_status=1, stderr=err, restored_digest=None))
    assert actual.outcome is Outcome.ERROR
    assert judge(refused(1, 3, 4), actual) is not None


def test_several_lines_or_no_prefix_is_unclean() -> None:
    for err in ("oops\n", "xsmig: error: a\nxsmig: error: b\n", ""):
        actual = classify(obs(exit_status=3, stderr=err, restored_digest=None))
        assert actual.outcome is Outcome.ERROR, err


def test_half_restored_domain_or_changed_source_fails_a_refusal() -> None:
    err = "xsmig: error: truncated stream at byte offset 6\n"
    left = classify(obs(exit_status=3, stderr=err, restored_digest=None, domain_left=True))
    assert left.outcome is Outcome.ERROR and "left a domain" in left.message
    changed = classify(
        obs(exit_status=3, stderr=err, restored_digest=None, source_digest_after="00" * 32)
    )
    assert changed.outcome is Outcome.ERROR and "source" in changed.message


def test_transport_failure_is_an_error_never_a_pass() -> None:
    actual = classify(obs(exit_status=None, transport_error="timed out", restored_digest=None))
    assert actual.outcome is Outcome.ERROR
    assert judge(IDENTICAL, actual) is not None
    assert judge(refused(3, 4), actual) is not None


def test_a_failed_save_is_an_error_whatever_the_restorer_did() -> None:
    err = "xsmig: error: stream truncated: fewer than 8 bytes at byte 0\n"
    actual = classify(
        obs(
            exit_status=3,
            stderr=err,
            restored_digest=None,
            save_status=5,
            save_stderr="xsmig: error: domain has extended vCPU state\n",
        )
    )
    assert actual.outcome is Outcome.ERROR and "save on the source exited 5" in actual.message
    assert judge(refused(3), actual) is not None
    # A save cut off on purpose (truncation) has no status and is not held against the cell.
    cut = classify(obs(exit_status=3, stderr=err, restored_digest=None, save_status=None))
    assert cut.outcome is Outcome.REFUSED
