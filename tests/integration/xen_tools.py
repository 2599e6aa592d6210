"""Xen's own migration tools, as Debian ships them: `verify-stream-v2` and
`convert-legacy-stream` with their `xen.migration` package, from the xen-utils package
of the host's release.

The package is fetched with `apt-get download` (a package registry, no container
registry) and unpacked with `dpkg-deb -x`: nothing is installed, no Xen service starts.
The tools are pure Python and run on the runner's own python3.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

PACKAGE = re.compile(r"^xen-utils-(\d+)\.(\d+)$")
XEN_PY3_DEFECT = "Data not NUL terminated"  # verify-stream-v2, EMULATOR_XENSTORE_DATA
XEN_PY3_XL_DEFECT = "No xl header"  # convert-legacy-stream -x
# Xen's script, run with Python 2's semantics for the two things its Python 3 port gets
# wrong: EMULATOR_XENSTORE_DATA's body (an index is a 1-character string, split takes a
# string) and xl's magic (bytes). Everything else is Xen's code.
PY2 = """
import runpy, sys
from xen.migration import libxl, xl
class Py2Bytes(bytes):
    def __getitem__(self, k):
        r = bytes.__getitem__(self, k)
        return chr(r) if isinstance(k, int) else Py2Bytes(r)
    def split(self, sep=None, maxsplit=-1):
        sep = sep.encode("latin-1") if isinstance(sep, str) else sep
        return [p.decode("latin-1") for p in bytes.split(self, sep, maxsplit)]
rtype = libxl.REC_TYPE_emulator_xenstore_data
xen_check = libxl.record_verifiers[rtype]
libxl.record_verifiers[rtype] = lambda self, content: xen_check(self, Py2Bytes(content))
if isinstance(xl.MAGIC, str):
    xl.MAGIC = xl.MAGIC.encode("latin-1")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class XenTools(NamedTuple):
    package: str  # e.g. xen-utils-4.17_4.17.7+...deb
    bin: Path
    pythonpath: Path

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._python(str(self.bin / tool), *args)

    def run_py2(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The tool run by the prelude PY2 (Python 2 semantics where Xen's Python 3
        port is wrong)."""
        return self._python("-c", PY2, str(self.bin / tool), *args)

    def _python(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(self.pythonpath)}
        # Debian's python3, the interpreter the package is built for, when there is one
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (
            shutil.which("python3") or "python3")
        return subprocess.run([python, *argv], env=env, capture_output=True, text=True,
                              timeout=300)


class XenToolsMissing(RuntimeError):
    pass


def _candidates() -> list[str]:
    out = subprocess.run(["apt-cache", "pkgnames", "xen-utils-"], capture_output=True,
                         text=True, timeout=120).stdout.split()
    found = [(tuple(map(int, m.groups())), name) for name in out
             if (m := PACKAGE.match(name))]
    return [name for _, name in sorted(found, reverse=True)]


def fetch(into: Path) -> XenTools:
    """The newest xen-utils-X.Y of the host's apt sources, unpacked under `into`."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise XenToolsMissing("Xen's tools come from Debian's xen-utils package: apt-get "
                              "and dpkg-deb are needed")
    names = _candidates()
    if not names and os.geteuid() == 0:  # no package lists yet (a fresh machine)
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        names = _candidates()
    if not names:
        raise XenToolsMissing("no xen-utils-X.Y package in the apt sources (run apt-get "
                              "update as root)")
    into.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "-q", names[0]], cwd=into,
                         capture_output=True, text=True, timeout=600)
    debs = sorted(into.glob(f"{names[0]}_*.deb"))
    if got.returncode or not debs:
        raise XenToolsMissing(f"apt-get download {names[0]} failed: "
                              f"{(got.stderr or got.stdout).strip()[-300:]}")
    root = into / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True, timeout=300)
    version = names[0].removeprefix("xen-utils-")
    lib = root / "usr" / "lib" / f"xen-{version}"
    tools = XenTools(debs[0].name, lib / "bin", lib / "lib" / "python")
    for tool in ("verify-stream-v2", "convert-legacy-stream"):
        if not (tools.bin / tool).is_file():
            raise XenToolsMissing(f"{debs[0].name} has no {tool}")
    if not (tools.pythonpath / "xen" / "migration" / "libxc.py").is_file():
        raise XenToolsMissing(f"{debs[0].name} has no xen.migration package")
    return tools
