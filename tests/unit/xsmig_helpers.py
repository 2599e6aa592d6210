"""Shared helpers for the xsmig unit tests: build guests, save and restore in memory,
run the CLI, and look at what a domain keeps on disk."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from xsmig import pagetypes as pt
from xsmig.canonical import CanonicalDomain
from xsmig.domain import PAGE_SIZE, DomainDir, DomainMeta
from xsmig.errors import XsmigError
from xsmig.layout import Layout
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.format import Encoding, V2Format
from xsmig.stream.writer import SaveOptions, save
from xsmig.synth import GuestSpec, create

REPO = Path(__file__).resolve().parents[2]
ENCODINGS = tuple(Encoding)


@dataclass(frozen=True)
class Guest:
    """Parameters of a synthetic guest (GuestSpec without the name)."""

    pages: int = 64
    width: int = 64
    vcpus: int = 1
    max_vcpu_id: int | None = None
    seed: int = 1
    shape: str = "standard"
    extended: bool = True
    physmap: int = 2

    def spec(self, name: str) -> GuestSpec:
        return GuestSpec(name, self.pages, self.width, self.vcpus, self.max_vcpu_id, self.seed,
                         self.shape, self.extended, self.physmap)


def make(store: Store, name: str, guest: Guest, host_id: int = 1) -> DomainDir:
    with store.writing(name) as domain:
        create(guest.spec(name), domain, host_id)
    return store.get(name)


def save_bytes(domain: DomainDir, encoding: Encoding | str, layout: Layout, *,
               ext_info: bool = True, rounds: int = 1, word_size: int | None = None,
               v2_format: V2Format = V2Format.LIBXL) -> bytes:
    buf = io.BytesIO()
    save(domain, buf, SaveOptions(Encoding(encoding), layout, ext_info=ext_info, rounds=rounds,
                                  word_size=word_size, v2_format=v2_format))
    return buf.getvalue()


def restore_bytes(store: Store, data: bytes, name: str, *, host_id: int = 2,
                  own: Layout | None = None, profile: str = "current",
                  source_width: int | None = None, max_pages: int = 1 << 20) -> DomainDir:
    restore(store, io.BytesIO(data), name=name, host_id=host_id, profile=profile,
            source_width=source_width, own=own, max_pages=max_pages)
    return store.get(name)


def digest(domain: DomainDir) -> str:
    return CanonicalDomain(domain).digest()


def page(domain: DomainDir, pfn: int) -> bytes:
    with domain.open_memory() as mem:
        mem.seek(pfn * PAGE_SIZE)
        return mem.read(PAGE_SIZE)


def pfns_of(domain: DomainDir, wanted: frozenset[int]) -> list[int]:
    return [p for p, t in enumerate(domain.read_types()) if t in wanted]


PAGETABLE_TYPES = frozenset(t for t in pt.VALID_TYPES if pt.pt_level(t))


def snapshot(domain: DomainDir) -> dict[str, bytes]:
    """Every file of a domain, by relative path: to prove an operation changed nothing."""
    return {str(p.relative_to(domain.path)): p.read_bytes()
            for p in sorted(domain.path.rglob("*")) if p.is_file()}


def assert_nothing_left(store: Store, names_before: list[str]) -> None:
    assert store.names() == names_before
    leftovers = list(store.incoming.iterdir()) if store.incoming.exists() else []
    assert leftovers == []


def expect_error(exc_type: type[XsmigError], store: Store, data: bytes, **kw: object
                 ) -> XsmigError:
    """Restore must fail with exc_type, as one line, leaving the store as it was."""
    before = store.names()
    try:
        restore_bytes(store, data, "victim", **kw)  # type: ignore[arg-type]
    except exc_type as e:
        assert "\n" not in str(e)
        assert_nothing_left(store, before)
        return e
    raise AssertionError(f"restore did not raise {exc_type.__name__}")


def meta(domain: DomainDir) -> DomainMeta:
    return domain.read_meta()


def cli(store: Path, *args: str, stdin: bytes | None = None, host_id: int = 1
        ) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m xsmig` as a user would (a fresh process, the repo on sys.path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XSMIG_STORE": str(store),
           "XSMIG_HOST_ID": str(host_id)}
    env.pop("XSMIG_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "xsmig", *args], input=stdin,
                          capture_output=True, env=env, timeout=60, check=False)


def assert_cli_error(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    """One `xsmig: error:` line on stderr, no traceback, the documented exit status."""
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xsmig: error: "), err
    return lines[0]
