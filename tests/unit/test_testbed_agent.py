"""The testbed's side of `xsmig agent`: requests out, answers in, fallback to commands."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from testbed.hosts.ssh import Agent, ClientKey, CommandResult, Host, SSHError


class Chan:
    """A channel whose process answers each request line with `answer(argv)`."""

    def __init__(self, hello: bytes, answer: Any = None) -> None:
        self.pending = [hello]
        self.answer = answer
        self.sent: list[bytes] = []
        self.closed = self.eof_received = False

    def settimeout(self, t: float) -> None: ...

    def exit_status_ready(self) -> bool:
        return self.closed

    def recv(self, n: int) -> bytes:
        if not self.pending:
            return b""
        data = self.pending.pop(0)
        return data[:n]

    def recv_stderr_ready(self) -> bool:
        return False

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        argv = json.loads(data)["argv"]
        reply = json.dumps({"status": 0, "stdout": " ".join(argv) + "\n", "stderr": ""})
        # Split the answer in two reads: a line may arrive in pieces.
        raw = reply.encode() + b"\n"
        self.pending += [raw[:7], raw[7:]]

    def close(self) -> None:
        self.closed = True


HELLO = b'{"agent": 1, "commands": ["create"]}\n'


class FakeHost(Host):
    def __init__(self, hello: bytes) -> None:
        key = ClientKey.generate()
        super().__init__("h", 1, key.pkey, key)
        self.hello = hello
        self.chans: list[Chan] = []
        self.commands: list[tuple[str, ...]] = []

    def open_exec(self, argv: Sequence[str], timeout: float, window: int | None = None) -> Any:
        chan = Chan(self.hello)
        self.chans.append(chan)
        return chan

    def run(self, argv: Sequence[str], timeout: float = 120.0, stdin: bytes = b"") -> CommandResult:
        self.commands.append(tuple(argv))
        return CommandResult(tuple(argv), 0, b"plain\n", b"", 0.0)


def test_bookkeeping_goes_to_one_reused_agent_and_streams_never_do() -> None:
    h = FakeHost(HELLO)
    assert h.xsmig("digest", "d1").out == "digest d1\n"
    assert h.xsmig("list", "--json").out == "list --json\n"
    assert len(h.chans) == 1 and len(h.chans[0].sent) == 2  # one agent, reused
    assert h.xsmig("save", "d1").out == "plain\n"
    assert h.commands == [("xsmig", "save", "d1")]


def test_a_host_without_the_agent_falls_back_to_commands() -> None:
    h = FakeHost(b"usage: xsmig ...\n")
    assert h.xsmig("digest", "d1").out == "plain\n"
    assert h.agent_unsupported and h.chans[0].closed
    h.xsmig("list")
    assert len(h.chans) == 1  # not asked again


def test_an_agent_that_died_is_replaced_and_one_that_fails_mid_call_is_an_error() -> None:
    h = FakeHost(HELLO)
    h.xsmig("list")
    h.chans[0].closed = True
    h.xsmig("list")
    assert len(h.chans) == 2
    agent = Agent(Chan(HELLO))
    agent.read_line(1e9)
    agent.chan.pending.clear()
    agent.chan.sendall = lambda data: None  # type: ignore[method-assign]
    with pytest.raises(SSHError, match="agent ended"):
        agent.call(["digest", "d1"], timeout=1)
