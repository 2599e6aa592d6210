"""What the fake hosts and channels of the testbed unit tests share: the connection
surface of testbed.hosts.ssh.Host that they do not exercise, and paramiko's partial send."""

from __future__ import annotations

from typing import Self

from testbed.hosts.facade import HostQueries


class OneConnection(HostQueries):
    """A host that is its own dedicated and bulk connection, with nothing to open,
    hand back or close; files and domains answered as the real host's (HostQueries)."""

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


class PartialSend:
    """paramiko.Channel.send over the fake's sendall: at most one 32 KiB packet per
    call, so the callers' loops over partial sends are exercised."""

    def sendall(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes | memoryview) -> int:
        n = min(len(data), 32768)
        self.sendall(bytes(data[:n]))
        return n
