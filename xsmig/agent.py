"""A long-lived xsmig for bookkeeping commands: one JSON request per line, one answer each.

Under QEMU user emulation every interpreter start-up, and every import after it,
costs most of a second; a test harness that creates, digests, lists and destroys
domains around each migration would pay that many times per migration. The agent
pays it once: it reads `{"argv": ["digest", "dom1"]}` lines on stdin, runs the
command in-process through the same `xsmig.cli.main` as the command line, and
answers `{"status": 0, "stdout": "...", "stderr": "..."}` on stdout, one line each.

Only commands that neither stream on stdin/stdout nor hold state between calls are
served (create, digest, diff, list, destroy, host-info): a migration stays what a
toolstack runs, `xsmig save` on the source and `xsmig restore` on the destination.
Run it as `python3 -m xsmig.agent`; it exits at end of input.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

PROTOCOL = 1
COMMANDS = frozenset({"create", "digest", "diff", "list", "destroy", "host-info"})
MAX_LINE = 256 << 10  # bytes (characters) of one request line; longer lines are refused


def _error(status: int, text: str) -> dict[str, Any]:
    return {"status": status, "stdout": "", "stderr": f"xsmig agent: error: {text}\n"}


def handle(request: Any) -> dict[str, Any]:
    """Run one request; a bad request is an answer with status 2, never an exit."""
    from xsmig.cli import main

    argv = request.get("argv") if isinstance(request, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return _error(2, "argv must be a non-empty list of strings")
    if argv[0] not in COMMANDS:
        return _error(2, f"{argv[0]!r} is not served here (only {', '.join(sorted(COMMANDS))})")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            # own_stdout=False: nothing a command meets (a broken pipe) may touch fd 1
            status = main(argv, own_stdout=False)
        except SystemExit as exc:  # argparse's --help/--version
            status = exc.code if isinstance(exc.code, int) else 0
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


def answer(line: str | bytes) -> dict[str, Any]:
    """The answer to one request line, whatever it holds: never an exception."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, nested too deep
        return _error(2, f"not a JSON request: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return handle(request)
    except RecursionError:
        return _error(2, "request nested too deeply")
    except Exception as exc:  # a bug in a command: say so, keep serving
        return _error(1, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")


def _lines(inp: IO[Any]) -> Iterator[tuple[Any, bool]]:
    """(line, too_long) for each line of `inp`; a line longer than MAX_LINE is read on
    to its end in MAX_LINE pieces and dropped, so memory stays at one piece."""
    while True:
        line = inp.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) <= MAX_LINE or line[-1:] in ("\n", b"\n"):
            yield line, False
            continue
        while line and line[-1:] not in ("\n", b"\n"):
            line = inp.readline(MAX_LINE)
        yield line, True


def _private_stdout(out: IO[str]) -> IO[str]:
    """Answers go to a private copy of descriptor 1, and descriptor 1 itself to
    /dev/null: nothing a command does to stdout can redirect or corrupt the channel."""
    if out is not sys.__stdout__ or out is None:
        return out
    try:
        out.flush()
        private = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        return out
    return os.fdopen(private, "w", encoding="utf-8", closefd=True)


def serve(inp: IO[Any], out: IO[str]) -> int:
    import xsmig.cli  # noqa: F401  (import once, before the hello: requests find it warm)

    out = _private_stdout(out)
    # Requests are read as bytes where possible, so invalid UTF-8 is one bad request,
    # not the end of the loop.
    source = getattr(inp, "buffer", inp)
    out.write(json.dumps({"agent": PROTOCOL, "commands": sorted(COMMANDS)}) + "\n")
    out.flush()
    for line, too_long in _lines(source):
        if too_long:
            reply = _error(2, f"request line longer than {MAX_LINE} bytes")
        elif not line.strip():
            continue
        else:
            reply = answer(line)
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
