"""Architectures the testbed can host, as data.

Adding one is one more ``Arch(...)`` entry in ``ARCHES`` (plus its ABI in
``xsmig.layout.ABIS``, which says word size, uint64 alignment and byte order: the
facts the host report must prove and the matrix derives its expectations from).
The names and their order are the ABIs' (scenarios.arches); this adds how to build
and run each one.
An architecture whose binaries the build machine's CPU cannot run needs binfmt_misc
(see ``needs_binfmt``): the image's /bin/sh, sshd and coreutils are then foreign
binaries too. i386 and amd64 binaries run on an x86_64 kernel as they are, so
there emulation is imposed only on the Python interpreter, by an explicit
``qemu-*-static`` wrapper.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from scenarios import arches as names
from testbed.errors import TestbedError
from xsmig.layout import ABIS, Layout


@dataclass(frozen=True)
class Arch:
    name: str
    debian_arch: str
    qemu_binary: str
    """Name of the qemu-user-static binary in /usr/bin that emulates this arch."""
    uname_machine: str
    """What ``platform.machine()`` reports under emulation (and in native mode)."""
    native_on: tuple[str, ...]
    """Kernel machines (``os.uname().machine``) that run this arch's binaries directly."""
    native_setarch: str | None = None
    """``setarch`` personality for native mode, so that a 32-bit interpreter on a 64-bit
    kernel reports the same machine as a 32-bit kernel (and as QEMU) would."""
    binfmt: str = ""
    """Name of QEMU's binfmt_misc entry (/usr/lib/binfmt.d/<binfmt>.conf); default
    derived from ``qemu_binary``."""

    @property
    def abi(self) -> Layout:
        """The toolstack ABI of this architecture's interpreter (xsmig.layout)."""
        return ABIS[self.name]

    @property
    def sizeof_long(self) -> int:
        """``struct.calcsize("L")``: the C toolstack's unsigned long."""
        return self.abi.ulong_size

    @property
    def uint64_align(self) -> int:
        """Alignment of a uint64 inside a native struct: ``struct.calcsize("@IQ") - 8``."""
        return self.abi.u64_align

    @property
    def byte_order(self) -> str:
        """``sys.byteorder`` of the interpreter."""
        return self.abi.byte_order

    @property
    def binfmt_entry(self) -> str:
        return self.binfmt or self.qemu_binary.removesuffix("-static")

    def runs_natively_on(self, machine: str | None = None) -> bool:
        return (machine or os.uname().machine) in self.native_on

    def needs_binfmt(self, machine: str | None = None) -> bool:
        """True when the image's own binaries (sh, sshd) need binfmt_misc + QEMU here."""
        return not self.runs_natively_on(machine)

    def definition(self) -> dict[str, object]:
        """Stable description that goes into the image input hash."""
        return {**asdict(self), "sizeof_long": self.sizeof_long,
                "uint64_align": self.uint64_align, "byte_order": self.byte_order}


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            name="i386",
            debian_arch="i386",
            qemu_binary="qemu-i386-static",
            uname_machine="i686",
            native_on=("x86_64", "i686"),
            native_setarch="i686",
        ),
        Arch(
            name="amd64",
            debian_arch="amd64",
            qemu_binary="qemu-x86_64-static",
            uname_machine="x86_64",
            native_on=("x86_64",),
        ),
        Arch(
            name="armhf",
            debian_arch="armhf",
            qemu_binary="qemu-arm-static",
            uname_machine="armv7l",
            native_on=(),
        ),
        Arch(
            name="arm64",
            debian_arch="arm64",
            qemu_binary="qemu-aarch64-static",
            uname_machine="aarch64",
            native_on=(),
        ),
        Arch(
            name="s390x",
            debian_arch="s390x",
            qemu_binary="qemu-s390x-static",
            uname_machine="s390x",
            native_on=(),
        ),
    )
}
NIGHTLY = names.NIGHTLY  # the default --arches: what every CI night runs


class UnknownArchError(TestbedError):
    pass


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHES))
        raise UnknownArchError(f"unknown architecture {name!r}; known: {known}") from None


def parse_arches(text: str) -> list[str]:
    """``--arches`` value: comma-separated names, or ``all``; order as in ARCHES."""
    try:
        return names.parse_arches(text)
    except names.UnknownArch as exc:
        raise UnknownArchError(str(exc)) from None
