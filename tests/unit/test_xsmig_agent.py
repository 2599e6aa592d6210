"""`xsmig agent`: bookkeeping commands served in-process, one JSON line each way."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xsmig import agent
from xsmig.cli import main

REPO = Path(__file__).resolve().parents[2]


def ask(lines: list[object]) -> list[dict[str, object]]:
    inp = io.StringIO("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    out = io.StringIO()
    assert agent.serve(inp, out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_answers_as_the_command_line_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XSMIG_STORE", str(tmp_path))
    hello, made, digest, listed, missing, gone = ask(
        [
            {"argv": ["create", "d1", "--pages", "64", "--seed", "3"]},
            {"argv": ["digest", "d1"]},
            {"argv": ["list", "--json"]},
            {"argv": ["destroy", "nope"]},
            {"argv": ["destroy", "d1"]},
        ]
    )
    assert hello["agent"] == agent.PROTOCOL
    assert made == {"status": 0, "stdout": "d1\n", "stderr": ""}
    assert [r["name"] for r in json.loads(str(listed["stdout"]))] == ["d1"]
    assert missing["status"] == 5 and "nope" in str(missing["stderr"])
    assert gone["status"] == 0 and not (tmp_path / "domains" / "d1").exists()
    # The same digest as a separate command computes for the same guest.
    assert main(["create", "d2", "--pages", "64", "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["digest", "d2"]) == 0
    assert capsys.readouterr().out == digest["stdout"]


def test_refuses_streaming_commands_and_bad_lines(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XSMIG_STORE", str(tmp_path))
    _, save, junk, empty, usage = ask(
        [{"argv": ["save", "d1", "--encoding", "native"]}, "not json", {"argv": []},
         {"argv": ["create"]}]
    )
    assert save["status"] == 2 and "not served" in str(save["stderr"])
    assert junk["status"] == 2 and empty["status"] == 2
    assert usage["status"] == 2 and str(usage["stderr"]).startswith("xsmig: error:")


def test_python_m_xsmig_agent_runs_the_loop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "xsmig", "agent"],
        input='{"argv": ["list", "--json"]}\n',
        capture_output=True, text=True, env=env, check=True,
    )
    hello, listed = (json.loads(x) for x in proc.stdout.splitlines())
    assert hello["agent"] == agent.PROTOCOL
    assert listed == {"status": 0, "stdout": "[]\n", "stderr": ""}
