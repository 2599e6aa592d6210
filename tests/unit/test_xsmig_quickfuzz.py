"""The quick differential campaign in CI (issue 16): fuzz/quick.py runs check_one (restore,
inspect, digest and round trip; verify == restore; convert as a function on domains)
on the committed corpus and 400 inputs derived from it with a fixed seed."""

from __future__ import annotations

import os

import pytest

from fuzz.quick import run


def test_quick_campaign_runs_clean(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))  # a failing input is written here as crash-quick-N
    outcomes = run(int(os.environ.get("XSMIG_QUICKFUZZ", "400")))
    assert sum(outcomes.values()) >= 400
    # the derived inputs reach every verdict: not all refused at the first bytes
    assert outcomes["restored"] > 20 and outcomes["StreamError"] > 20, outcomes
