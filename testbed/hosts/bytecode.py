"""Bytecode for the hosts' interpreter cache, so a fresh host's first command compiles nothing.

The image sets PYTHONPYCACHEPREFIX (the xsmig sources are mounted read-only), and
with a prefix CPython looks for *all* bytecode under it, the stdlib's too: a fresh
host recompiled the ~60 stdlib modules xsmig imports, and xsmig's own, on its first
command (about 1 s of emulated CPU per host), ignoring the bytecode Debian ships.
Once a host is up, `seed_script` copies Debian's bytecode into the prefix's layout
(one tar pipe, ~0.1 s) and unpacks xsmig's, compiled here natively by `xsmig_tar`,
when this interpreter writes the same bytecode format as the host's (same magic
number and cache tag, e.g. any 3.11 for Debian bookworm's 3.11); otherwise the host
compiles xsmig itself, as before. Bytecode is architecture-independent; each .pyc
records its source's mtime and size, which the bind mount shows unchanged, so a
source edited after this still gets recompiled on the host.
"""

from __future__ import annotations

import importlib.util
import io
import marshal
import shlex
import struct
import sys
import tarfile
import time
from pathlib import Path

PREFIX = "/var/cache/xsmig/pycache"  # the image's PYTHONPYCACHEPREFIX (images/Dockerfile)


def pyc(py: Path, there: str) -> bytes | None:
    """`py`'s bytecode as the host's interpreter would write it for the source at
    `there` (same mtime and size in the header); None when it does not compile."""
    st = py.stat()
    try:
        code = compile(py.read_bytes(), there, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):  # the host reports it when it imports it
        return None
    header = struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    return importlib.util.MAGIC_NUMBER + header + marshal.dumps(code)


def xsmig_tar(package: Path, mount_point: str) -> bytes:
    """A tar of the package's bytecode, laid out as the prefix wants it on the host."""
    tag = sys.implementation.cache_tag
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for py in sorted(package.rglob("*.py")):
            rel = py.relative_to(package)
            there = f"{mount_point}/{rel.as_posix()}"
            data = pyc(py, there)
            if data is None:
                continue
            info = tarfile.TarInfo(f"{there.lstrip('/').rsplit('/', 1)[0]}/{py.stem}.{tag}.pyc")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seed_script() -> str:
    """Shell: Debian's stdlib bytecode into the prefix; then xsmig's from stdin if the
    host's interpreter reads this one's format, else stdin is discarded."""
    tag = sys.implementation.cache_tag
    magic = importlib.util.MAGIC_NUMBER.hex()
    p = shlex.quote(PREFIX)
    return (
        "for d in /usr/lib/python3.*; do [ -d \"$d\" ] || continue; "
        f'mkdir -p {p}"$d" && (cd "$d" && '
        "find . -path '*/__pycache__/*.pyc' | tar -cf - -T - | "
        f'tar -xf - -C {p}"$d" --transform "s|__pycache__/||") || exit 1; done; '
        f"f=$(ls /usr/lib/python3.*/__pycache__/os.{tag}.pyc 2>/dev/null | head -n 1); "
        f'if [ -n "$f" ] && [ "$(head -c 4 "$f" | od -An -tx1 | tr -d " \\n")" = {magic} ]; '
        f"then tar -xf - -C {p}; else cat >/dev/null; fi"
    )
