"""Error kinds, each with the exit code the CLI gives it (documented in docs/cli.md)."""

from __future__ import annotations


class XsmigError(Exception):
    """Base of every error xsmig reports as one line, without a traceback."""

    exit_code = 1


class UsageError(XsmigError):
    """The command line asked for something impossible."""

    exit_code = 2


class _AtOffset(XsmigError):
    """An error about a stream, naming the byte offset it concerns when known."""

    where = " at byte {}"

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message + (self.where.format(offset) if offset is not None else ""))


class StreamError(_AtOffset):
    """The stream is malformed, truncated or hostile."""

    exit_code = 3


class StreamRefused(_AtOffset):
    """The stream is understood but this restorer must not restore it (profile, width)."""

    exit_code = 4
    where = " (at byte {})"


class StateError(XsmigError):
    """The store or a domain in it is not as the command needs (missing, taken, corrupt)."""

    exit_code = 5


class DomainsDiffer(XsmigError):
    """`xsmig diff` found differences: not an error as such, but a distinct exit status."""

    exit_code = 1
