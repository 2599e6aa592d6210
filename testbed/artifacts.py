"""Artifacts of a failing (or reproduced) cell: what a developer needs to see the bug.

The stream and both stderrs are written while the cell runs; this adds an
`xsmig inspect` dump of the stream (as the destination reads it), an `xsmig
diff` of the restored state against the source, the hosts' log tails, the
cell's result and its repro command. Every step is best effort: a missing
artifact must not hide the failure that asked for it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from scenarios.model import Cell
from testbed.results import CellResult

if TYPE_CHECKING:
    from testbed.execute import HostProvider

INSPECT_TIMEOUT = 600.0


def _write(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") or not text else text + "\n")


def _hop_hosts(cell: Cell, result: CellResult) -> tuple[str, str]:
    if result.hops:
        return result.hops[-1].src, result.hops[-1].dst
    return cell.hops[0], cell.hops[1]


def _inspect(provider: HostProvider, dst: str, stream: Path, out: Path) -> None:
    try:
        host = provider.host(dst)
        r = host.run(["xsmig", "inspect", "-"], timeout=INSPECT_TIMEOUT, stdin=stream.read_bytes())
        _write(out, f"# xsmig inspect on {dst}: exit {r.exit_status}\n{r.out}{r.err}")
    except Exception as exc:
        _write(out, f"# xsmig inspect on {dst} could not run: {exc}")


def _diff(provider: HostProvider, cell: Cell, dst: str, out: Path, dump: Path) -> None:
    """Diff the restored domain against the dump the source wrote right after `create`."""
    from testbed.execute import source_dump_path

    name = cell.domain_name
    src = cell.hops[0]
    remote = source_dump_path(name)
    try:
        s, d = provider.host(src), provider.host(dst)
        fetched = s.run(["cat", remote])
        if not fetched.ok:
            _write(out, f"# no source dump on {src} ({remote}): {fetched.err.strip()}")
            return
        dump.write_bytes(fetched.stdout)
        if f'"{name}"' not in d.xsmig("list", "--json").out:
            _write(out, f"# no domain {name} on {dst}: nothing was restored, nothing to diff")
            return
        d.run(["sh", "-c", f"cat > {shlex.quote(remote)}"], stdin=fetched.stdout)
        r = d.xsmig("diff", name, remote)
        verdict = {0: "same", 1: "DIFFERENT"}.get(r.exit_status, f"exit {r.exit_status}")
        _write(
            out,
            f"# xsmig diff: {name} restored on {dst} vs its source dump from {src}: {verdict}\n"
            f"{r.out}{r.err}",
        )
    except Exception as exc:
        _write(out, f"# diff could not run: {exc}")


def collect(
    cell: Cell, provider: HostProvider, result: CellResult, workdir: Path, report_dir: Path
) -> None:
    _, dst = _hop_hosts(cell, result)
    streams = sorted(workdir.glob("*.stream"))
    if streams:
        _inspect(provider, dst, streams[-1], workdir / "inspect.txt")
    _diff(provider, cell, dst, workdir / "diff.txt", workdir / "source.dump")
    for name in dict.fromkeys(cell.hops):
        try:
            _write(workdir / f"{name}.log", provider.log_tail(name))
        except Exception as exc:
            _write(workdir / f"{name}.log", f"(no log: {exc})")
    _write(workdir / "repro.txt", result.repro)
    result.artifacts = sorted(str(p.relative_to(report_dir)) for p in workdir.iterdir())
    _write(workdir / "result.json", json.dumps(result.to_json(), indent=2))
    result.artifacts.append(str((workdir / "result.json").relative_to(report_dir)))
