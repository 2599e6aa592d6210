"""What the fake hosts of the testbed unit tests share: the connection surface of
testbed.ssh.Host that they do not exercise."""

from __future__ import annotations

from typing import Self


class OneConnection:
    """A host that is its own dedicated and bulk connection, with nothing to open,
    hand back or close."""

    def dedicated(self) -> Self:
        return self

    def bulk(self) -> Self:
        return self

    def connect(self) -> None:
        pass

    def release_bulk(self, twin: Self, carried: int, reusable: bool) -> None:
        pass

    def close(self) -> None:
        pass
