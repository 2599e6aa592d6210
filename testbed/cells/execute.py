"""Running one cell on the hosts of a run: create, migrate hop by hop, judge, keep artifacts.

The source domain is destroyed only once the destination's canonical digest
matches it; after any failure it stays on the source for inspection.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scenarios.model import Cell, Outcome
from testbed.cells import artifacts, migrate
from testbed.cells.domains import CellError, HostProvider, create_argv
from testbed.cells.oracle import Actual, Observed, classify, judge
from testbed.cells.results import CellResult, HopRecord, repro_command, verdict_for
from testbed.errors import TestbedError
from testbed.hosts.facade import XsmigError
from testbed.hosts.ssh import Host

ARTIFACTS = "artifacts"


def slug(cell_id: str) -> str:
    return cell_id.replace("/", "__")


@dataclass
class _Hop:
    index: int
    src: Host
    dst: Host
    transfers: list[migrate.Transfer] = field(default_factory=list)
    actual: Actual | None = None


def attempt(
    cell: Cell,
    hop: _Hop,
    source_digest: str | Callable[[], str],
    source_width: int | None,
    workdir: Path,
    *,
    before_save: Callable[[], None] | None = None,
    beside_save: Callable[[], None] | None = None,
    early: artifacts.EarlyInspect | None = None,
) -> Actual:
    """One save | restore over the hop, observed and classified.

    before_save/beside_save: the cell's set-up, overlapped with the commands' start-up
    (see migrate.stream); source_digest may then be known only once they ran.
    early: the artifacts are wanted whatever the outcome, so the stream's inspect
    starts as soon as the stream is through.
    """
    name = cell.domain_name
    n = len(hop.transfers) + 1
    tee = workdir / f"hop{hop.index}-try{n}.stream"
    if early is not None:
        early.wait()  # this transfer overwrites the destination's copy it may be reading
    t = migrate.stream(
        hop.src,
        hop.dst,
        migrate.save_argv(
            name,
            cell.encoding,
            no_ext_info=cell.no_ext_info,
            rounds=cell.rounds,
            convert=cell.convert,
        ),
        # The destination keeps its own copy of the stream: artifacts inspect it there.
        artifacts.teed(
            migrate.restore_argv(name, profile=cell.profile, source_width=source_width),
            artifacts.remote_stream(name, hop.dst.scratch),
        ),
        timeout=cell.timeout,
        tee=tee,
        limit=cell.truncate_at,
        patch=cell.patch,
        before_save=before_save,
        beside_save=beside_save,
    )
    if callable(source_digest):
        try:
            source_digest = source_digest()
        except XsmigError as exc:
            raise CellError(f"{exc}: {t.error}") from exc
    hop.transfers.append(t)
    if early is not None:
        early.start(hop.dst.name, name, tee)
    (workdir / f"hop{hop.index}-try{n}-save.stderr").write_text(t.save_stderr)
    (workdir / f"hop{hop.index}-try{n}-restore.stderr").write_text(t.restore_stderr)
    restored = after = unreadable = None
    left = False
    if t.error is None and t.restore_status == 0:
        try:
            restored = hop.dst.digest(name, cell.timeout)
        except XsmigError as exc:
            unreadable = str(exc)
    elif t.restore_status is not None:
        # Two hosts, two questions: ask them at once.
        with ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(hop.src.digest, name, cell.timeout)
            left = hop.dst.has_domain(name, cell.timeout)
            after = later.result()
    return classify(
        Observed(
            t.restore_status,
            t.restore_stderr,
            t.error,
            restored,
            source_digest,
            after,
            left,
            t.save_status,
            t.save_stderr,
            unreadable,
        )
    )


def _run(
    cell: Cell,
    provider: HostProvider,
    workdir: Path,
    result: CellResult,
    early: artifacts.EarlyInspect | None = None,
) -> str | None:
    if cell.faults:  # fault cells break and heal their hosts: testbed/cells/faults.py
        from testbed.cells.faults import run_faults

        return run_faults(cell, provider, workdir, result)
    if cell.live is not None:  # a running guest on the source: testbed/cells/live.py
        from testbed.cells.live import run_live

        return run_live(cell, provider, workdir, result)
    hosts = [provider.host(n) for n in cell.hops]
    name = cell.domain_name
    t0 = time.monotonic()
    source: list[str] = []

    # The set-up overlaps the first hop's start-up: the destination's restore starts
    # (an emulated interpreter start) while the source domain is created, and the save
    # starts while the source's digest is taken. Neither command reads its input first.
    # No canonical dump here: it costs a per-page pass under QEMU on every cell, and a
    # failure keeps the domain on its source, where artifacts.collect dumps it.
    def create() -> None:
        made = hosts[0].xsmig(*create_argv(cell), timeout=cell.timeout)
        if not made.ok:
            raise CellError(
                f"xsmig create on {hosts[0].name}: exit {made.exit_status}: {made.err.strip()}"
            )

    def take_source_digest() -> None:
        source.append(hosts[0].digest(name, cell.timeout))
        result.setup_seconds = round(time.monotonic() - t0, 3)

    def known_source_digest() -> str:
        if not source:
            raise CellError("the first migration failed before the source domain was set up")
        return source[0]

    for i in range(len(hosts) - 1):
        hop = _Hop(i + 1, hosts[i], hosts[i + 1])
        if i == 0:
            try:
                actual = attempt(
                    cell, hop, known_source_digest, None, workdir,
                    before_save=create, beside_save=take_source_digest, early=early,
                )
            except XsmigError as exc:
                return str(exc)
        else:
            actual = attempt(cell, hop, source[0], None, workdir, early=early)
        source_digest = source[0]
        failure = judge(cell.expect, actual)
        text = actual.describe()
        retried = None
        if failure is None and cell.retry is not None:
            retried = f"--source-width {cell.retry.source_width}"
            actual = attempt(
                cell, hop, source_digest, cell.retry.source_width, workdir, early=early
            )
            failure = judge(cell.retry.expect, actual)
            text += f"; retried with {retried}: {actual.describe()}"
        hop.actual = actual
        result.hops.append(_record(cell, hop, text, retried))
        if failure is not None:
            return f"hop {hop.index} {hop.src.name}->{hop.dst.name}: {failure}"
        if actual.outcome is not Outcome.IDENTICAL:
            return None  # refused as expected: the guest stays on its source
        # Only now, with the destination proven identical, may the source go.
        gone = hop.src.xsmig("destroy", name, timeout=cell.timeout)
        if not gone.ok:
            return f"xsmig destroy on {hop.src.name}: exit {gone.exit_status}: {gone.err.strip()}"
    return None


def _record(cell: Cell, hop: _Hop, actual: str, retried: str | None) -> HopRecord:
    last = hop.transfers[-1]
    expected = cell.expect.describe()
    if cell.retry is not None:
        expected += f"; then with --source-width {cell.retry.source_width}: "
        expected += cell.retry.expect.describe()
    return HopRecord(
        hop.src.name,
        hop.dst.name,
        expected,
        actual,
        sum(t.bytes for t in hop.transfers),
        round(sum(t.seconds for t in hop.transfers), 3),
        round(last.mib_per_s, 2),
        last.save_status,
        last.restore_status,
        retried,
    )


def run_cell(
    cell: Cell,
    provider: HostProvider,
    report_dir: Path,
    *,
    refs: dict[str, str] | None = None,
    keep_artifacts: bool = False,
) -> CellResult:
    """Run a cell; never raises for cell-level trouble: that is a failed cell."""
    start = time.monotonic()
    workdir = report_dir / ARTIFACTS / slug(cell.id)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    result = CellResult(
        cell.id,
        cell.scenario,
        cell.pair,
        cell.column,
        list(cell.hops),
        cell.seed,
        _expected_text(cell),
        "",
        "",
        repro=repro_command(cell.id, cell.seed, _own_refs(cell, refs)),
    )
    failure: str | None
    # A repro keeps every artifact: its inspect need not wait for the verdict.
    early = artifacts.EarlyInspect(provider) if keep_artifacts else None
    try:
        failure = _run(cell, provider, workdir, result, early)
    except TestbedError as exc:
        failure = f"could not run: {exc}"
    except Exception as exc:  # a testbed bug must fail the cell, never pass it
        failure = f"testbed error: {exc!r}\n{traceback.format_exc()}"
    result.seconds = round(time.monotonic() - start, 3)
    result.bytes = sum(h.bytes for h in result.hops)
    moving = sum(h.seconds for h in result.hops)
    result.transfer_seconds = round(moving, 3)
    result.check_seconds = round(
        max(0.0, result.seconds - result.setup_seconds - result.transfer_seconds), 3
    )
    result.mib_per_s = round(result.bytes / (1 << 20) / moving, 2) if moving else 0.0
    result.verdict = verdict_for(cell, failure)
    result.message = failure or ""
    result.actual = "; ".join(f"hop {i + 1}: {h.actual}" for i, h in enumerate(result.hops)) or (
        failure or ""
    )
    if failure is not None or keep_artifacts:
        try:
            artifacts.collect(cell, provider, result, workdir, report_dir, early)
        finally:
            if early is not None:
                early.close()
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        artifacts.discard(cell, provider)
    return result


def _own_refs(cell: Cell, refs: dict[str, str] | None) -> dict[str, str]:
    """The refs of the cell's own hosts: `all=REF` when they all run the same one."""
    mine = {h: r for h, r in (refs or {}).items() if h in cell.hops or h == "all"}
    if "all" not in mine and len(set(mine.values())) == 1 and set(mine) == set(cell.hops):
        return {"all": next(iter(mine.values()))}
    return mine


def _expected_text(cell: Cell) -> str:
    text = cell.expect.describe()
    if cell.retry is not None:
        text += f", then identical with --source-width {cell.retry.source_width}"
    return text
