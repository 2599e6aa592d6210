"""A host's store of domains: lookup, naming, and atomic publication.

New domains (create, restore) are written into incoming/<name>.<pid>.<token>
and renamed into domains/<name> only when complete, so a failure or a kill
never leaves a half-written domain visible. Leftovers of dead processes are
reaped the next time the store is opened for writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.domains = root / "domains"
        self.incoming = root / "incoming"

    def _ensure(self) -> None:
        try:
            self.domains.mkdir(parents=True, exist_ok=True)
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot use store {self.root}: {e.strerror}") from None
        self.reap()

    def reap(self) -> None:
        """Remove write-aside directories whose writer process is gone."""
        for entry in self.incoming.iterdir():
            parts = entry.name.rsplit(".", 2)
            if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                shutil.rmtree(entry, ignore_errors=True)

    def names(self) -> list[str]:
        if not self.domains.is_dir():
            return []
        return sorted(p.name for p in self.domains.iterdir() if NAME_RE.fullmatch(p.name))

    def get(self, name: str) -> DomainDir:
        check_name(name)
        path = self.domains / name
        if not (path / "meta.json").is_file():
            raise StateError(f"no domain named {name!r} in store {self.root}")
        return DomainDir(path)

    def exists(self, name: str) -> bool:
        return (self.domains / name).exists()

    def unique_name(self, prefix: str) -> str:
        for i in range(1, 10000):
            candidate = f"{prefix}-{i}"
            if not self.exists(candidate):
                return candidate
        raise StateError(f"no free name with prefix {prefix!r}")

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[DomainDir]:
        """Yield a fresh write-aside directory; publish it as `name` on success only."""
        check_name(name)
        self._ensure()
        if self.exists(name):
            raise StateError(f"a domain named {name!r} already exists in store {self.root}")
        aside = self.incoming / f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            yield DomainDir(aside)
            try:
                os.rename(aside, self.domains / name)
            except OSError as e:
                raise StateError(f"cannot publish domain {name!r}: {e.strerror}") from None
        finally:
            if aside.exists():
                shutil.rmtree(aside, ignore_errors=True)

    def destroy(self, name: str) -> None:
        domain = self.get(name)
        self._ensure()
        # Rename first so the domain disappears at once, then delete at leisure.
        doomed = self.incoming / f"{name}.{os.getpid()}.destroy"
        os.rename(domain.path, doomed)
        shutil.rmtree(doomed)
