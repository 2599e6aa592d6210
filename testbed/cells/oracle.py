"""Turning what a restore did into an outcome, and judging it against the scenario's expectation.

Failing in either direction is the point: a refusal where an identical restore
was expected fails the cell, and so does a restore where a refusal was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.model import Expect, Outcome

ERROR_PREFIX = "xsmig: error: "


@dataclass(frozen=True)
class Observed:
    """Facts gathered around one restore attempt."""

    exit_status: int | None  # None: no status (transport failure, timeout)
    stderr: str
    transport_error: str | None = None
    restored_digest: str | None = None  # digest on the destination, when restored
    source_digest: str = ""  # digest the source had before the migration
    source_digest_after: str | None = None  # re-read after a refusal; None: not checked
    domain_left: bool = False  # a domain of that name exists on the destination after a failure
    save_status: int | None = 0  # None: the save was cut off on purpose
    save_stderr: str = ""
    restored_unreadable: str | None = None  # why `xsmig digest` refused the restored domain


@dataclass(frozen=True)
class Actual:
    outcome: Outcome
    exit_status: int | None
    message: str  # the error line, or what went wrong
    by_saver: bool = False  # REFUSED: the save refused to write the stream

    def describe(self) -> str:
        if self.outcome is Outcome.REFUSED:
            who = " by the saver" if self.by_saver else ""
            return f"refused{who} (exit {self.exit_status}): {self.message}"
        if self.outcome is Outcome.IDENTICAL:
            return "identical"
        return f"{self.outcome.value}: {self.message}"


def classify(obs: Observed) -> Actual:
    if obs.transport_error is not None or obs.exit_status is None:
        return Actual(Outcome.ERROR, obs.exit_status, obs.transport_error or "no exit status")
    if obs.save_status not in (0, None):
        # The source could not write the stream: whatever the restorer said is beside the point.
        refusal = _clean_save_refusal(obs)
        if refusal is not None:
            return refusal
        return Actual(
            Outcome.ERROR,
            obs.exit_status,
            f"save on the source exited {obs.save_status}: {obs.save_stderr.strip()[:300]}",
        )
    if obs.exit_status == 0:
        if obs.restored_unreadable is not None:
            # The restorer accepted the stream and built a domain that is not even
            # consistent: the silent wrong restore the oracle exists to catch.
            return Actual(
                Outcome.DIFFERENT, 0, f"restored domain is corrupt: {obs.restored_unreadable}"
            )
        if obs.restored_digest is None:
            return Actual(Outcome.ERROR, 0, "restore succeeded but the digest could not be read")
        if obs.restored_digest != obs.source_digest:
            return Actual(
                Outcome.DIFFERENT,
                0,
                f"digest {obs.restored_digest[:16]}.. != source {obs.source_digest[:16]}..",
            )
        return Actual(Outcome.IDENTICAL, 0, "")
    lines = [ln for ln in obs.stderr.splitlines() if ln.strip()]
    if "Traceback" in obs.stderr:
        return Actual(Outcome.ERROR, obs.exit_status, "traceback on stderr: " + _last(lines))
    if len(lines) != 1 or not lines[0].startswith(ERROR_PREFIX):
        return Actual(
            Outcome.ERROR, obs.exit_status, f"not one '{ERROR_PREFIX}...' line: {obs.stderr!r:.300}"
        )
    if obs.domain_left:
        return Actual(Outcome.ERROR, obs.exit_status, "failed restore left a domain behind")
    if obs.source_digest_after is not None and obs.source_digest_after != obs.source_digest:
        return Actual(Outcome.ERROR, obs.exit_status, "source domain changed by the migration")
    return Actual(Outcome.REFUSED, obs.exit_status, lines[0])


def _clean_save_refusal(obs: Observed) -> Actual | None:
    """A save that refused as a command should (one error line, no traceback), leaving
    the source as it was and nothing on the destination: e.g. an old release asked for
    an encoding it lacks. Only an expectation `by_saver` accepts it."""
    lines = [ln for ln in obs.save_stderr.splitlines() if ln.strip()]
    if "Traceback" in obs.save_stderr or len(lines) != 1 or not lines[0].startswith(ERROR_PREFIX):
        return None
    if obs.domain_left:
        return None
    if obs.source_digest_after is None or obs.source_digest_after != obs.source_digest:
        return None
    return Actual(Outcome.REFUSED, obs.save_status, lines[0], by_saver=True)


def _last(lines: list[str]) -> str:
    return lines[-1] if lines else ""


def judge(expect: Expect, actual: Actual) -> str | None:
    """None when the actual outcome is the expected one, else why not."""
    if actual.outcome is not expect.outcome or actual.by_saver != expect.by_saver:
        return f"expected {expect.describe()}, got {actual.describe()}"
    if expect.outcome is Outcome.REFUSED:
        if actual.exit_status not in expect.exit_codes:
            return f"expected {expect.describe()}, got {actual.describe()}"
        if expect.message_contains and expect.message_contains not in actual.message:
            return f"refusal does not name {expect.message_contains}: {actual.message}"
    return None
