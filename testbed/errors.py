"""Expected failures of the testbed: the CLI prints them as one line, no traceback."""

from __future__ import annotations


class TestbedError(Exception):
    """A failure with a message meant for the user (what went wrong, and the fix)."""

    __test__ = False  # not a pytest test class, despite the name
