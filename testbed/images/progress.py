"""Progress of long steps (image builds): rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class Reporter(Protocol):
    def step(self, scope: str, what: str) -> AbstractContextManager[None]: ...

    def note(self, scope: str, text: str) -> None: ...


class SilentReporter:
    @contextmanager
    def step(self, scope: str, what: str) -> Iterator[None]:
        yield

    def note(self, scope: str, text: str) -> None:
        pass


class PlainReporter:
    """One line when a step starts and one when it ends: readable in CI logs."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream, flush=True)

    @contextmanager
    def step(self, scope: str, what: str) -> Iterator[None]:
        start = time.monotonic()
        self._print(f"[{scope}] {what} ...")
        try:
            yield
        except BaseException:
            self._print(f"[{scope}] {what} FAILED after {time.monotonic() - start:.1f}s")
            raise
        self._print(f"[{scope}] {what} done in {time.monotonic() - start:.1f}s")

    def note(self, scope: str, text: str) -> None:
        self._print(f"[{scope}] {text}")


class RichReporter:
    """A live line per scope (current step, elapsed time), and a log line per step."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._console = Console()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[scope]:<6}[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _task(self, scope: str) -> Any:
        with self._lock:
            if scope not in self._tasks:
                self._tasks[scope] = self._progress.add_task("", total=None, scope=scope)
            return self._tasks[scope]

    @contextmanager
    def step(self, scope: str, what: str) -> Iterator[None]:
        task = self._task(scope)
        self._progress.update(task, description=what)
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self._console.log(
                f"[red]✗[/] {scope}: {what} failed after {time.monotonic() - start:.1f}s"
            )
            raise
        self._console.log(f"[green]✓[/] {scope}: {what} ({time.monotonic() - start:.1f}s)")

    def note(self, scope: str, text: str) -> None:
        self._console.log(f"  {scope}: {text}")


def make_reporter(quiet: bool) -> PlainReporter | RichReporter:
    """Rich on an interactive terminal (if rich is installed); plain lines for -q or CI."""
    if not quiet and sys.stdout.isatty():
        try:
            return RichReporter()
        except ImportError:
            pass
    return PlainReporter()
