"""The data a scenario declares: cells, their parameters and their expected outcome.

Expectations are data in each scenario module, written out or derived from the two
hosts' ABIs (scenarios/abi.py). Nothing here calls xsmig's own detection code: the
oracle must stay independent of the implementation it judges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

ENCODINGS: tuple[str, ...] = ("native", "escaped", "extended", "v2")
# v2 is written in libxl's framing (what xl sends); "v2-libxc" is the bare libxc stream
# (`--v2-format libxc`), a column of its own scenario (scenarios/v2libxc.py).
V2_LIBXC = "v2-libxc"
GUEST_WIDTHS: tuple[int, ...] = (32, 64)
SMALL_PAGES = 2048  # 8 MiB: big enough for several batches, cheap under QEMU


class Outcome(StrEnum):
    """What a restore did, as seen from outside."""

    IDENTICAL = "identical"  # restored, canonical digest equal to the source's
    REFUSED = "refused"  # clean refusal: expected exit code, one error line, no domain left
    DIFFERENT = "different"  # restored but the digest differs: a silent wrong restore
    ERROR = "error"  # anything else: traceback, wrong exit code, unreachable host, timeout


@dataclass(frozen=True)
class Expect:
    """The expected outcome of one restore attempt."""

    outcome: Outcome
    exit_codes: frozenset[int] = frozenset()  # for REFUSED: the acceptable exit codes
    message_contains: str | None = None  # for REFUSED: text the error line must carry
    # for REFUSED: the saver refuses to write the stream (an encoding its release lacks,
    # testbed/runs/qualify.py), not the restorer to read it
    by_saver: bool = False

    def describe(self) -> str:
        if self.outcome is Outcome.REFUSED:
            codes = "|".join(str(c) for c in sorted(self.exit_codes))
            extra = f" naming {self.message_contains}" if self.message_contains else ""
            who = " by the saver" if self.by_saver else ""
            return f"refused{who} (exit {codes}){extra}"
        return self.outcome.value


IDENTICAL = Expect(Outcome.IDENTICAL)


def refused(*codes: int, naming: str | None = None, by_saver: bool = False) -> Expect:
    return Expect(Outcome.REFUSED, frozenset(codes), naming, by_saver)


@dataclass(frozen=True)
class Domain:
    """`xsmig create` parameters."""

    pages: int = SMALL_PAGES
    guest_width: int = 64
    vcpus: int = 1
    max_vcpu_id: int | None = None
    shape: str = "standard"
    extended_state: bool = True  # xsave/extended vCPU state; needs the ext-info `xcnt` block
    physmap: int = 2  # libxl physmap entries (`create --physmap`); bare libxc v2 carries none


@dataclass(frozen=True)
class Retry:
    """A second restore after an expected refusal, e.g. with `--source-width 64`."""

    source_width: int
    expect: Expect = IDENTICAL


@dataclass(frozen=True)
class Live:
    """A live migration: a guest dirtying pages on the source (`xsmig run`) while
    `xsmig save --live` sends rounds; `stops`: the stop reasons the save may report."""

    dirty_rate: float  # pages per second
    max_rounds: int = 10
    dirty_threshold: int = 50
    max_downtime: float = 0.5
    stops: tuple[str, ...] = ("threshold", "downtime")

    def save_args(self) -> list[str]:
        return ["--live", "--max-rounds", str(self.max_rounds), "--dirty-threshold",
                str(self.dirty_threshold), "--max-downtime", str(self.max_downtime)]


@dataclass(frozen=True)
class Cell:
    """One migration (or chain of migrations) with its expected outcome.

    `hops` lists host names (see scenarios.hosts); a plain migration has two,
    a ping-pong chain more. `expect` applies to every hop.
    """

    scenario: str
    hops: tuple[str, ...]
    encoding: str
    domain: Domain
    expect: Expect
    no_ext_info: bool = False
    rounds: int | None = None
    profile: str = "current"
    truncate_at: int | None = None  # cut the stream after this many bytes
    patch: tuple[int, bytes] | None = None  # (offset, bytes) overwritten in the stream in flight
    retry: Retry | None = None
    faults: tuple[str, ...] = ()  # faults injected mid-migration, in order (scenarios/faults.py)
    convert: tuple[str, ...] = ()  # on the source, pipe the save through `xsmig convert --to`
    live: Live | None = None  # a running guest, a live save (testbed/cells/live.py)
    timeout: float = 300.0
    tags: tuple[str, ...] = field(default=())

    @property
    def pair(self) -> str:
        """Row label of the grid, e.g. `i386-to-amd64` (arch names, not host names)."""
        from scenarios.hosts import arch_of

        return "-to-".join(arch_of(h) for h in self.hops)

    @property
    def column(self) -> str:
        """Column label of the grid: encoding x guest width."""
        return f"{self.encoding}/guest{self.domain.guest_width}"

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.encoding}/guest{self.domain.guest_width}/{self.scenario}"

    @property
    def seed(self) -> int:
        """Deterministic per cell, so a repro re-creates the very same guest."""
        return int.from_bytes(hashlib.sha256(self.id.encode()).digest()[:4], "big") & 0x7FFFFFFF

    @property
    def domain_name(self) -> str:
        """Unique per cell so that concurrent cells can share hosts."""
        return "c" + hashlib.sha256(self.id.encode()).hexdigest()[:12]
