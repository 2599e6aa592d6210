"""Bytecode shipped to the hosts: the layout PYTHONPYCACHEPREFIX looks up, valid headers."""

from __future__ import annotations

import importlib.util
import io
import marshal
import os
import struct
import sys
import tarfile
from pathlib import Path

from testbed.hosts import bytecode


def test_every_module_is_compiled_where_the_prefix_looks_for_it(tmp_path: Path) -> None:
    pkg = tmp_path / "xsmig"
    (pkg / "stream").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stream" / "writer.py").write_text("def f():\n    return 42\n")
    (pkg / "broken.py").write_text("def (:\n")  # left to the host, which reports it
    os.utime(pkg / "stream" / "writer.py", (1_700_000_000, 1_700_000_000))
    tag = sys.implementation.cache_tag
    where = "opt/xsmig/xsmig"
    with tarfile.open(fileobj=io.BytesIO(bytecode.xsmig_tar(pkg, "/opt/xsmig/xsmig"))) as tar:
        names = sorted(tar.getnames())
        assert names == [f"{where}/__init__.{tag}.pyc", f"{where}/stream/writer.{tag}.pyc"]
        member = tar.extractfile(f"{where}/stream/writer.{tag}.pyc")
        assert member is not None
        data = member.read()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    flags, mtime, size = struct.unpack("<III", data[4:16])
    assert (flags, mtime, size) == (0, 1_700_000_000, (pkg / "stream" / "writer.py").stat().st_size)
    code = marshal.loads(data[16:])
    assert code.co_filename == "/opt/xsmig/xsmig/stream/writer.py"  # tracebacks name the host path
    scope: dict[str, object] = {}
    exec(code, scope)
    assert scope["f"]() == 42  # type: ignore[operator]


def test_the_seed_unpacks_only_for_the_same_bytecode_format() -> None:
    script = bytecode.seed_script()
    assert importlib.util.MAGIC_NUMBER.hex() in script and sys.implementation.cache_tag in script
    assert "else cat >/dev/null" in script  # a mismatch drains stdin, unpacks nothing
