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


def _agent(tmp_path: Path, payload: bytes) -> list[dict[str, object]]:
    """The agent as a process (its real stdin/stdout), fed raw bytes."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, "-m", "xsmig", "agent"], input=payload,
                          capture_output=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr[-2000:]
    return [json.loads(x) for x in proc.stdout.splitlines()]


LIST = b'{"argv": ["list", "--json"]}\n'


def test_any_request_gets_an_answer_and_the_agent_keeps_serving(tmp_path: Path) -> None:
    """Issue 16: malformed or deeply nested JSON, invalid UTF-8, a huge line, arguments
    no command takes: each one answer with a non-zero status, then the next request
    is served as usual."""
    bad = [b"{", b"[" * 100_000 + b"]" * 100_000, b'{"argv": ' + b"[" * 50_000 + b"]" * 50_000
           + b"}", b'{"argv": ["list", "\xff\xfe"]}', b"\xff" * 10, b"x" * (3 * agent.MAX_LINE),
           b'{"argv": ["digest", "a\\u0000b"]}', b'{"argv": ["create", "d", "--pages", "1e9"]}',
           b'"just a string"', b"null", b"[]"]
    answers = _agent(tmp_path, b"".join(line + b"\n" + LIST for line in bad))
    assert answers[0]["agent"] == agent.PROTOCOL
    replies = answers[1:]
    assert len(replies) == 2 * len(bad)
    for line, reply, after in zip(bad, replies[0::2], replies[1::2], strict=True):
        assert reply["status"] != 0 and str(reply["stderr"]).strip(), (line[:40], reply)
        assert after == {"status": 0, "stdout": "[]\n", "stderr": ""}, (line[:40], after)


def test_a_dump_to_a_pipe_whose_reader_has_gone_leaves_the_channel_alone(
        tmp_path: Path) -> None:
    """`digest --dump FIFO` whose reader closes at once: an error answer for that
    request, and later answers still reach the agent's stdout (it used to point its
    answer channel at /dev/null for good)."""
    fifo = tmp_path / "dump.fifo"
    os.mkfifo(fifo)
    import threading

    def read_a_little_and_go() -> None:
        with open(fifo, "rb") as f:
            f.read(1)

    reader = threading.Thread(target=read_a_little_and_go)
    reader.start()
    create = b'{"argv": ["create", "g", "--pages", "65536", "--seed", "2"]}\n'  # a 2 MB dump
    dump = json.dumps({"argv": ["digest", "g", "--dump", str(fifo)]}).encode() + b"\n"
    answers = _agent(tmp_path, create + dump + LIST + LIST)
    reader.join(timeout=60)
    made, dumped, listed, again = answers[1:]
    assert made["status"] == 0
    assert dumped["status"] == 5 and "dump.fifo" in str(dumped["stderr"]), dumped
    assert json.loads(str(listed["stdout"]))[0]["name"] == "g"
    assert listed == again


def test_a_dump_to_a_fifo_nobody_reads_is_an_answer_not_a_hang(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open() of a FIFO without a reader would block the agent for good: it waits for a
    reader at most FIFO_OPEN_TIMEOUT (shortened here), answers exit 5, keeps serving."""
    from xsmig import cli as xcli

    monkeypatch.setenv("XSMIG_STORE", str(tmp_path / "store"))
    monkeypatch.setattr(xcli, "FIFO_OPEN_TIMEOUT", 0.5)
    fifo = tmp_path / "nobody.fifo"
    os.mkfifo(fifo)
    _, made, dumped, listed = ask([{"argv": ["create", "g", "--pages", "64"]},
                                   {"argv": ["digest", "g", "--dump", str(fifo)]},
                                   {"argv": ["list"]}])
    assert made["status"] == 0
    assert dumped["status"] == 5 and "no reader" in str(dumped["stderr"]), dumped
    assert listed["status"] == 0 and "g" in str(listed["stdout"])
