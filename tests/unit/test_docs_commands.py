"""Every command example in README.md and docs/*.md runs as written: each concrete
command line in a fenced block is parsed by the real CLI parser (testbed, xsmig,
./run), cell ids and selections must name real cells, and README's "xsmig by hand"
block is run for real, in a temporary store. Synopsis lines (with `[...]`, `A|B`
alternatives or `...`) describe syntax and are not examples."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import scenarios
from testbed.__main__ import build_parser as _testbed_parser
from testbed.runs.selection import select
from xsmig.cli import build_parser as _xsmig_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(
    r"^(?:\$ )?((?:[A-Z_]+=\S+ )*)(python3? -m (?:testbed|xsmig)\b|xsmig |\./run )"
)
SYNOPSIS = re.compile(r"\[|\.\.\.|[A-Za-z0-9]\|[A-Za-z0-9-]|\$\{\{|──|->")


def _examples() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in DOCS:
        for n, raw in _block_lines(path):
            line = raw.strip()
            if SYNOPSIS.search(line.split(" #", 1)[0]):
                continue
            for part in re.split(r"\s&&\s", line.split("  #", 1)[0].split(" # ", 1)[0]):
                if COMMAND.match(part.strip()):
                    found.append((f"{path.name}:{n}", part.strip()))
    return found


def _block_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) inside fenced blocks, diagrams (box lines, lone pipes) left out."""
    out: list[tuple[int, str]] = []
    block: list[tuple[int, str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.lstrip().startswith("```"):
            if block is not None and not any(DIAGRAM.search(t) for _, t in block):
                out += block
            block = None if block is not None else []
        elif block is not None:
            block.append((n, raw))
    return out


DIAGRAM = re.compile(r"^\s*\|\s*$|──")
EXAMPLES = _examples()


def _argv(command: str) -> tuple[str, list[str]]:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    if words[0] == "$":
        words.pop(0)
    if words[0].startswith("python"):
        return words[2], words[3:]
    if words[0] == "./run":
        return "run", words[1:]
    return "xsmig", words[1:]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the parser refuses it: {err.getvalue().strip().splitlines()[-1]}")
    raise AssertionError("unreachable")


def _check_testbed(argv: list[str]) -> None:
    args = _parse(_testbed_parser(), argv)
    cells = scenarios.all_cells()
    if args.command == "repro":
        assert args.cell_id in {c.id for c in cells}, f"no cell {args.cell_id!r}"
    if getattr(args, "select", None):
        assert select(cells, args.select), f"--select {args.select!r} names no cell"


@pytest.mark.parametrize(("where", "command"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_command_example_parses(where: str, command: str) -> None:
    tool, argv = _argv(command)
    if tool == "testbed":
        _check_testbed(argv)
    elif tool == "xsmig":
        _parse(_xsmig_parser(), argv)
    else:
        assert argv and argv[0] in ("matrix", "tests"), "./run takes matrix or tests"
        if argv[0] == "matrix":
            _check_testbed(["matrix", *argv[1:]])


def test_there_are_examples_to_check() -> None:
    assert len(EXAMPLES) >= 20


def test_readme_xsmig_by_hand_block_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("## xsmig by hand", 1)[1].split("```", 2)[1]
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) >= 5
    env = {**os.environ, "XSMIG_STORE": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    for line in lines:
        cmd = line.replace("python -m", f"{shlex.quote(sys.executable)} -m")
        proc = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{line}: exit {proc.returncode}: {proc.stderr.strip()}"
