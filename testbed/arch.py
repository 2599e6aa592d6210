"""Architectures the testbed can host, as data.

Adding one (say arm64) is one more ``Arch(...)`` entry in ``ARCHES``. An
architecture whose binaries the build machine's CPU cannot run needs binfmt_misc
(see ``needs_binfmt``): the image's /bin/sh, sshd and coreutils are then foreign
binaries too. i386 and amd64 binaries run on an x86_64 kernel as they are, so
there emulation is imposed only on the Python interpreter, by an explicit
``qemu-*-static`` wrapper.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from testbed.errors import TestbedError


@dataclass(frozen=True)
class Arch:
    name: str
    debian_arch: str
    qemu_binary: str
    """Name of the qemu-user-static binary in /usr/bin that emulates this arch."""
    uname_machine: str
    """What ``platform.machine()`` reports under emulation (and in native mode)."""
    sizeof_long: int
    """``struct.calcsize("L")``: the C toolstack's unsigned long."""
    uint64_align: int
    """Alignment of a uint64 inside a native struct: ``struct.calcsize("@IQ") - 8``."""
    native_on: tuple[str, ...]
    """Kernel machines (``os.uname().machine``) that run this arch's binaries directly."""
    native_setarch: str | None = None
    """``setarch`` personality for native mode, so that a 32-bit interpreter on a 64-bit
    kernel reports the same machine as a 32-bit kernel (and as QEMU) would."""

    def runs_natively_on(self, machine: str | None = None) -> bool:
        return (machine or os.uname().machine) in self.native_on

    def needs_binfmt(self, machine: str | None = None) -> bool:
        """True when the image's own binaries (sh, sshd) need binfmt_misc + QEMU here."""
        return not self.runs_natively_on(machine)

    def definition(self) -> dict[str, object]:
        """Stable description that goes into the image input hash."""
        return asdict(self)


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            name="i386",
            debian_arch="i386",
            qemu_binary="qemu-i386-static",
            uname_machine="i686",
            sizeof_long=4,
            uint64_align=4,
            native_on=("x86_64", "i686"),
            native_setarch="i686",
        ),
        Arch(
            name="amd64",
            debian_arch="amd64",
            qemu_binary="qemu-x86_64-static",
            uname_machine="x86_64",
            sizeof_long=8,
            uint64_align=8,
            native_on=("x86_64",),
        ),
    )
}


class UnknownArchError(TestbedError):
    pass


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHES))
        raise UnknownArchError(f"unknown architecture {name!r}; known: {known}") from None
