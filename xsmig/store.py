"""A host's store of domains: lookup, naming, and atomic publication.

New domains (create, restore) are written into incoming/<name>.<pid>.<token>
and renamed into domains/<name> only when complete, so a failure or a kill
never leaves a half-written domain visible. Leftovers of dead processes are
reaped the next time the store is opened for writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from xsmig.domain import DomainDir
from xsmig.errors import StateError, UsageError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_store() -> Path:
    env = os.environ.get("XSMIG_STORE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return Path(base) / "xsmig"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name.endswith((".", "..")):
        raise UsageError(
            f"invalid domain name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return name


def pid_alive(pid: int) -> bool:
    if not 0 < pid < 1 << 22:  # no such pid on Linux (pid_max <= 2^22): not a live writer
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _aside_parts(entry_name: str) -> tuple[str, int] | None:
    """(domain name, writer pid) of an incoming/ entry NAME.PID.TOKEN, or None."""
    parts = entry_name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[1].isascii():
        return None
    return parts[0], int(parts[1]) if len(parts[1]) <= 12 else 0


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.domains = root / "domains"
        self.incoming = root / "incoming"

    def _ensure(self) -> None:
        try:
            self.domains.mkdir(parents=True, exist_ok=True)
            self.incoming.mkdir(parents=True, exist_ok=True)
            if not self.domains.is_dir() or not self.incoming.is_dir():
                raise NotADirectoryError(20, "not a directory")
        except OSError as e:
            raise StateError(f"cannot use store {self.root}: {e.strerror}") from None
        self.reap()

    def reap(self) -> None:
        """Remove write-aside entries whose writer process is gone. Entries that are not
        ours (no NAME.PID.TOKEN shape) are left alone and never trip us up."""
        try:
            entries = list(self.incoming.iterdir())
        except OSError as e:
            raise StateError(f"cannot list {self.incoming}: {e.strerror}") from None
        for entry in entries:
            parts = _aside_parts(entry.name)
            if parts is None or pid_alive(parts[1]):
                continue
            if entry.is_dir() and not entry.is_symlink():
                _rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()

    def _reserved(self) -> set[str]:
        """Names being written right now (by live processes: reap ran first)."""
        return {p[0] for e in self.incoming.iterdir() if (p := _aside_parts(e.name))}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time between choosing a name and reserving it, and between
        checking a name is free and publishing onto it; released if we are killed."""
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise StateError(f"cannot lock {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        if not self.domains.is_dir():
            return []
        return sorted(p.name for p in self.domains.iterdir()
                      if NAME_RE.fullmatch(p.name) and (p / "meta.json").is_file())

    def get(self, name: str) -> DomainDir:
        check_name(name)
        path = self.domains / name
        if not (path / "meta.json").is_file():
            raise StateError(f"no domain named {name!r} in store {self.root}")
        return DomainDir(path)

    def exists(self, name: str) -> bool:
        return (self.domains / name).exists()

    def unique_name(self, prefix: str) -> str:
        """A name free right now (not reserved: `writing_as(None, prefix)` reserves one)."""
        taken = self._reserved() if self.incoming.is_dir() else set()
        for i in range(1, 10000):
            candidate = f"{prefix}-{i}"
            if not self.exists(candidate) and candidate not in taken:
                return candidate
        raise StateError(f"no free name with prefix {prefix!r} in store {self.root}")

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[DomainDir]:
        """Yield a fresh write-aside directory; publish it as `name` on success only."""
        with self.writing_as(name) as (_name, domain):
            yield domain

    @contextlib.contextmanager
    def writing_as(self, name: str | None, prefix: str = "restored"
                   ) -> Iterator[tuple[str, DomainDir]]:
        """Reserve `name` (or the first free PREFIX-N) atomically, yield it and a fresh
        write-aside directory, and publish that as the name on success only. Concurrent
        writers never get the same name, and a writer whose name is taken fails before
        it has read anything."""
        if name is not None:
            check_name(name)
        self._ensure()
        with self._locked():
            if name is None:
                name = self.unique_name(prefix)
            elif self.exists(name):
                raise StateError(f"a domain named {name!r} already exists in store {self.root}")
            elif name in self._reserved():
                raise StateError(f"a domain named {name!r} is being written in store "
                                 f"{self.root} by another process")
            aside = self.incoming / f"{name}.{os.getpid()}.{os.urandom(4).hex()}"
            aside.mkdir()
        try:
            yield name, DomainDir(aside)
            with self._locked():
                if self.exists(name):
                    raise StateError(f"a domain named {name!r} already exists in store "
                                     f"{self.root}")
                try:
                    os.rename(aside, self.domains / name)
                except OSError as e:
                    raise StateError(f"cannot publish domain {name!r}: {e.strerror}") from None
        finally:
            if aside.exists():
                _rmtree(aside, ignore_errors=True)

    def destroy(self, name: str) -> None:
        domain = self.get(name)
        self._ensure()
        # Rename first so the domain disappears at once, then delete at leisure.
        doomed = self.incoming / f"{name}.{os.getpid()}.destroy"
        os.rename(domain.path, doomed)
        _rmtree(doomed)


def _rmtree(path: os.PathLike[str] | str, ignore_errors: bool = False) -> None:
    # shutil, imported where it is used: at import time it pulls in bz2 and lzma,
    # which every emulated command would pay for (docs/performance.md)
    import shutil
    shutil.rmtree(path, ignore_errors=ignore_errors)
