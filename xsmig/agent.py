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
import sys
from typing import Any, TextIO

PROTOCOL = 1
COMMANDS = frozenset({"create", "digest", "diff", "list", "destroy", "host-info"})


def handle(request: Any) -> dict[str, Any]:
    """Run one request; a bad request is an answer with status 2, never an exit."""
    from xsmig.cli import main

    argv = request.get("argv") if isinstance(request, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return {"status": 2, "stdout": "", "stderr": "xsmig agent: error: argv must be a "
                "non-empty list of strings\n"}
    if argv[0] not in COMMANDS:
        return {"status": 2, "stdout": "", "stderr": f"xsmig agent: error: {argv[0]!r} is not "
                f"served here (only {', '.join(sorted(COMMANDS))})\n"}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's --help/--version
            status = exc.code if isinstance(exc.code, int) else 0
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve(inp: TextIO, out: TextIO) -> int:
    import xsmig.cli  # noqa: F401  (import once, before the hello: requests find it warm)

    out.write(json.dumps({"agent": PROTOCOL, "commands": sorted(COMMANDS)}) + "\n")
    out.flush()
    for line in inp:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            answer = {"status": 2, "stdout": "", "stderr": f"xsmig agent: error: {exc}\n"}
        else:
            answer = handle(request)
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
