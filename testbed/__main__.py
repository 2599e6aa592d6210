"""``python -m testbed SUBCOMMAND``: a table of subcommands, each defined by a module.

To add a subcommand, add a line to ``COMMANDS``. The module must provide:

    HELP: str                                             # one line for --help
    def configure(parser: argparse.ArgumentParser) -> None  # add its options
    def run(args: argparse.Namespace) -> int               # exit status

Every module is imported to build the parser, so keep heavy or optional imports
(docker, paramiko, rich) inside functions: a missing library then breaks only the
subcommand that needs it, and ``doctor`` can still run to report it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from testbed.errors import TestbedError

COMMANDS: dict[str, str] = {
    "bisect": "testbed.runs.bisect",
    "build-images": "testbed.images.images",
    "doctor": "testbed.images.doctor",
    "host-check": "testbed.hosts.hostcheck",
    "matrix": "testbed.runs.matrix",
    "merge": "testbed.reports.merge",
    "qualify": "testbed.runs.qualify",
    "repro": "testbed.runs.repro",
    "soak": "testbed.runs.soak",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _load(name)
        module.configure(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = _load(args.command).run(args)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader left (`... --list | head`): not an error, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
