"""A host's store of domains: lookup, naming, and atomic publication.

New domains (create, restore) are written into incoming/<name>.<pid>.<token>
and renamed into domains/<name> only when complete, so a failure or a kill
never leaves a half-written domain visible. Leftovers of dead processes are
reaped the next time the store is opened for writing.

The store never reaches outside itself (docs/security.md): its root may be a symlink
(the user's choice of path), but domains/, incoming/, a domain's directory and the
files in it may not: they are opened with O_NOFOLLOW, and the reaper and destroy work
through directory file descriptors, unlinking entries (never following them).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
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
            self.root.mkdir(parents=True, exist_ok=True)
            for sub in (self.domains, self.incoming):
                with contextlib.suppress(FileExistsError):
                    sub.mkdir()
        except OSError as e:
            raise StateError(f"cannot use store {self.root}: {e.strerror}") from None
        for sub in (self.domains, self.incoming):
            os.close(self._dir_fd(sub))  # a real directory, not a symlink out
        self.reap()

    def _dir_fd(self, path: Path) -> int:
        """An O_NOFOLLOW descriptor of one of the store's own directories."""
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StateError(f"cannot use store {self.root}: {path} is not a directory "
                                 "(a symlink is never followed out of the store)") from None
            raise StateError(f"cannot use store {self.root}: {path}: {e.strerror}") from None

    def reap(self) -> None:
        """Remove write-aside entries whose writer process is gone. Entries that are not
        ours (no NAME.PID.TOKEN shape) are left alone and never trip us up. Everything
        goes through incoming/'s descriptor: a symlink is unlinked, never followed."""
        fd = self._dir_fd(self.incoming)
        try:
            try:
                names = os.listdir(fd)
            except OSError as e:
                raise StateError(f"cannot list {self.incoming}: {e.strerror}") from None
            for entry in names:
                parts = _aside_parts(entry)
                if parts is None or pid_alive(parts[1]):
                    continue
                _remove_at(fd, entry)
        finally:
            os.close(fd)

    def _reserved(self) -> set[str]:
        """Names being written right now (by live processes: reap ran first)."""
        fd = self._dir_fd(self.incoming)
        try:
            return {p[0] for e in os.listdir(fd) if (p := _aside_parts(e))}
        finally:
            os.close(fd)

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
        fd = self._dir_fd(self.domains)
        try:
            return sorted(n for n in os.listdir(fd) if NAME_RE.fullmatch(n)
                          and _is_domain(self.domains / n))
        finally:
            os.close(fd)

    def get(self, name: str) -> DomainDir:
        check_name(name)
        path = self.domains / name
        if self.domains.is_dir():
            os.close(self._dir_fd(self.domains))
        if not _is_domain(path):
            raise StateError(f"no domain named {name!r} in store {self.root}")
        return DomainDir(path)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.domains / name)

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
            fd = self._dir_fd(self.incoming)  # made inside incoming/ itself, never a link
            try:
                os.mkdir(aside.name, 0o777, dir_fd=fd)
            except OSError as e:
                raise StateError(f"cannot write domain {name!r} in store {self.root}: "
                                 f"{e.strerror}") from None
            finally:
                os.close(fd)
        try:
            yield name, DomainDir(aside)
            with self._locked():
                if self.exists(name):
                    raise StateError(f"a domain named {name!r} already exists in store "
                                     f"{self.root}")
                try:
                    os.rename(aside, self.domains / name)
                except OSError as e:
                    raise StateError(f"cannot publish domain {name!r} in store {self.root}: "
                                     f"{e.strerror}") from None
        finally:
            if os.path.lexists(aside):
                fd = self._dir_fd(self.incoming)
                try:
                    _remove_at(fd, aside.name)
                finally:
                    os.close(fd)

    def destroy(self, name: str) -> None:
        self.get(name)
        self._ensure()
        # Rename first so the domain disappears at once, then delete at leisure, through
        # the directories' descriptors (a symlink inside is unlinked, never followed).
        doomed = f"{name}.{os.getpid()}.destroy"
        src, dst = self._dir_fd(self.domains), self._dir_fd(self.incoming)
        try:
            os.rename(name, doomed, src_dir_fd=src, dst_dir_fd=dst)
            _remove_at(dst, doomed, ignore_errors=False)
        except OSError as e:
            raise StateError(f"cannot destroy domain {name!r} in store {self.root}: "
                             f"{e.strerror}") from None
        finally:
            os.close(src)
            os.close(dst)


def _is_domain(path: Path) -> bool:
    """A real directory (not a symlink) holding a regular meta.json (not a symlink)."""
    try:
        return (stat.S_ISDIR(os.lstat(path).st_mode)
                and stat.S_ISREG(os.lstat(path / "meta.json").st_mode))
    except OSError:
        return False


def _remove_at(dir_fd: int, name: str, ignore_errors: bool = True) -> None:
    """Remove the entry `name` of the directory `dir_fd`: a directory tree through
    descriptors (shutil's fd-based walk, which never follows a symlink), anything else
    unlinked."""
    # shutil, imported where it is used: at import time it pulls in bz2 and lzma,
    # which every emulated command would pay for (docs/performance.md)
    import shutil
    try:
        is_dir = stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode)
        if is_dir:
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise
