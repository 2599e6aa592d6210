"""Which architectures a run covers, named as xsmig names their ABIs.

One vocabulary: an architecture is a key of ``xsmig.layout.ABIS`` (its word size,
uint64 alignment and byte order live there); the testbed adds how to build and run
each one (testbed/images/arch.py: Debian architecture, QEMU binary, binfmt), keyed by
the same names in the same order. Scenarios need only the names, so they import
xsmig, never testbed.
"""

from __future__ import annotations

from xsmig.layout import ABIS

ARCHES: tuple[str, ...] = tuple(ABIS)  # every architecture the matrix knows, in matrix order
NIGHTLY = ("i386", "amd64")  # the default --arches: what every CI night runs


class UnknownArch(ValueError):
    pass


def check(name: str) -> str:
    if name not in ABIS:
        known = ", ".join(sorted(ABIS))
        raise UnknownArch(f"unknown architecture {name!r}; known: {known}")
    return name


def parse_arches(text: str) -> list[str]:
    """``--arches`` value: comma-separated names, or ``all``; order as in ARCHES."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return list(ARCHES)
    if not names:
        raise UnknownArch("--arches needs at least one architecture (or all)")
    for name in names:
        check(name)
    return [n for n in ARCHES if n in names]
