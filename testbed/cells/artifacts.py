"""Artifacts of a failing (or reproduced) cell: what a developer needs to see the bug.

The stream and both stderrs are written while the cell runs; this adds an
`xsmig inspect` dump of the stream (as the destination reads it), an `xsmig
diff` of the restored state against the source, the hosts' log tails, the
cell's result and its repro command. Every step is best effort: a missing
artifact must not hide the failure that asked for it.

Bounded time for any cell, 256 MiB ones included: nothing big goes back through
the runner. The destination keeps its own copy of the stream as it arrives (a
`tee` in front of the restore, see `teed`), so `xsmig inspect` reads it where it
already is; the diff dumps both domains where they are, concurrently, brings only
the two dumps (a few bytes per page) to the runner and compares them there,
natively; a cell whose digests matched needs no diff at all.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scenarios.model import Cell, Outcome
from testbed.cells.domains import HostProvider
from testbed.cells.results import CellResult


def source_dump_path(name: str, scratch: str = "/tmp") -> str:
    """Where the source host writes the canonical dump of the domain (for diffs)."""
    return f"{scratch}/{name}.source.dump"


INSPECT_TIMEOUT = 300.0
INSPECT_BYTES = 256 << 10  # inspect.txt keeps this much (xsmig already elides long chunk lists)
UPLOAD_LIMIT = 64 << 20  # a stream with no copy on the destination is sent back only below this
DIFF_LINES = 40  # first differing records shown in diff.txt


def remote_stream(name: str, scratch: str = "/tmp") -> str:
    """Where the destination keeps the stream it was sent (the last attempt's), in its
    scratch directory (Host.scratch)."""
    return f"{scratch}/{name}.stream"


def teed(restore: Sequence[str], path: str) -> list[str]:
    """`restore` with a copy of its input kept at `path` on the destination.

    `tee -p` keeps writing the file after the restore stopped reading (a refusal),
    so the copy is whole; its messages go to /dev/null so the restore's stderr stays
    exactly what xsmig printed; the pipeline's status is the restore's.
    """
    line = f"tee -p {shlex.quote(path)} 2>/dev/null | {shlex.join(restore)}"
    return ["sh", "-c", line]


def discard(cell: Cell, provider: HostProvider) -> None:
    """Remove the destination copies of a passing cell's streams (best effort)."""
    for name in dict.fromkeys(cell.hops[1:]):
        try:
            host = provider.host(name)
            host.run(["rm", "-f", remote_stream(cell.domain_name, host.scratch)], timeout=60)
        except Exception:
            continue


def _write(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") or not text else text + "\n")


def _hop_hosts(cell: Cell, result: CellResult) -> tuple[str, str]:
    if result.hops:
        return result.hops[-1].src, result.hops[-1].dst
    return cell.hops[0], cell.hops[1]


def inspect_text(provider: HostProvider, dst: str, name: str, local: Path | None) -> str:
    """`xsmig inspect` on the destination, of the copy it kept; output bounded. Never raises."""
    try:
        host = provider.host(dst)
        remote = remote_stream(name, host.scratch)
        if not host.exists(remote):
            if local is None or local.stat().st_size > UPLOAD_LIMIT:
                return f"# no copy of the stream on {dst}; the runner keeps it: {local}"
            host.put(remote, local.read_bytes())
        script = (
            f"xsmig inspect {shlex.quote(remote)} > {shlex.quote(remote)}.inspect 2>&1; "
            f'echo "# exit $?"; head -c {INSPECT_BYTES} {shlex.quote(remote)}.inspect'
        )
        r = host.run(["sh", "-c", script], timeout=INSPECT_TIMEOUT)
        status, _, text = r.out.partition("\n")
        return f"# xsmig inspect {remote} on {dst}: {status.lstrip('# ')}\n{text}{r.err}"
    except Exception as exc:
        return f"# xsmig inspect on {dst} could not run: {exc}"


class EarlyInspect:
    """Inspects of streams started as soon as each transfer ended (a repro keeps
    everything anyway), so the emulated `xsmig inspect` overlaps the cell's checks
    instead of following them. One at a time: the next transfer to the same
    destination overwrites the copy being read."""

    def __init__(self, provider: HostProvider) -> None:
        self._provider = provider
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspect")
        self._last: tuple[str, Path, Future[str]] | None = None

    def start(self, dst: str, name: str, local: Path) -> None:
        self.wait()
        fut = self._pool.submit(inspect_text, self._provider, dst, name, local)
        self._last = (dst, local, fut)

    def wait(self) -> None:
        if self._last is not None:
            self._last[2].result()

    def take(self, dst: str, local: Path | None) -> str | None:
        """The inspect of this stream, if it is the one started last."""
        if self._last is None or (self._last[0], self._last[1]) != (dst, local):
            self.wait()
            return None
        return self._last[2].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _dump(provider: HostProvider, host: str, name: str, path: str) -> dict[str, Any]:
    """`xsmig digest --dump` where the domain is, then only the dump comes to the runner."""
    h = provider.host(host)
    h.digest(name, INSPECT_TIMEOUT, dump=path)
    data: dict[str, Any] = json.loads(h.get(path))
    return data


def _diff(
    provider: HostProvider,
    cell: Cell,
    result: CellResult,
    hop: tuple[str, str],
    out: Path,
    dump: Path,
) -> None:
    """The restored domain's canonical dump against its source's, compared on the runner.

    A failed hop keeps the domain on its source (execute.py), so both dumps are taken
    now, where the domains are; only the dumps (a few bytes per page) travel.
    """
    name = cell.domain_name
    src, dst = hop
    try:
        if result.ok and cell.expect.outcome is Outcome.IDENTICAL:
            _write(
                out, f"# {name} on {dst}: same (its digest equals the source's: the cell's check)"
            )
            return
        if not provider.host(dst).has_domain(name):
            _write(out, f"# no domain {name} on {dst}: nothing was restored, nothing to diff")
            return
        with ThreadPoolExecutor(max_workers=2) as pool:
            theirs_f = pool.submit(_dump, provider, src, name,
                                   source_dump_path(name, provider.host(src).scratch))
            mine_f = pool.submit(_dump, provider, dst, name,
                                 f"{provider.host(dst).scratch}/{name}.restored.dump")
            theirs, mine = theirs_f.result(), mine_f.result()
        dump.write_text(json.dumps(theirs, sort_keys=True))
        from xsmig.canonical import diff_dumps  # the runner's own copy: native speed

        lines = diff_dumps(mine, theirs, limit=DIFF_LINES)
        verdict = "DIFFERENT" if lines else "same"
        _write(
            out,
            f"# {name} restored on {dst} vs its source on {src}: {verdict}\n" + "\n".join(lines),
        )
    except Exception as exc:
        _write(out, f"# diff could not run: {exc}")


def collect(
    cell: Cell,
    provider: HostProvider,
    result: CellResult,
    workdir: Path,
    report_dir: Path,
    early: EarlyInspect | None = None,
) -> None:
    src, dst = _hop_hosts(cell, result)
    streams = sorted(workdir.glob("*.stream"))
    last = streams[-1] if streams else None
    text = early.take(dst, last) if early is not None else None
    with ThreadPoolExecutor(max_workers=1) as pool:  # the inspect beside the diff's dumps
        inspecting = None
        if text is None:
            inspecting = pool.submit(inspect_text, provider, dst, cell.domain_name, last)
        _diff(provider, cell, result, (src, dst), workdir / "diff.txt", workdir / "source.dump")
        if inspecting is not None:
            text = inspecting.result()
    _write(workdir / "inspect.txt", text or "")
    for name in dict.fromkeys(cell.hops):
        try:
            _write(workdir / f"{name}.log", provider.log_tail(name))
        except Exception as exc:
            _write(workdir / f"{name}.log", f"(no log: {exc})")
    _write(workdir / "repro.txt", result.repro)
    result.artifacts = sorted(str(p.relative_to(report_dir)) for p in workdir.iterdir())
    _write(workdir / "result.json", json.dumps(result.to_json(), indent=2))
    result.artifacts.append(str((workdir / "result.json").relative_to(report_dir)))
