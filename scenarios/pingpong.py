"""Ping-pong chain through the selected architectures, round their ring twice.

The ring (scenarios.abi.ring) orders the selected architectures so that every step
changes ABI where it can; the chain visits the ring on the `a` hosts, then on the `b`
hosts: i386-a -> amd64-a -> i386-b -> amd64-b on the nightly set, ten hosts and nine
hops with all five. The canonical digest must equal the original one after every hop.
The expectation of every hop is derived from its two ABIs (scenarios.abi.expect); an
encoding some hop would refuse has no chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from scenarios.abi import chain, expect
from scenarios.arches import ARCHES
from scenarios.hosts import arch_of
from scenarios.model import ENCODINGS, Cell, Domain, Expect

NAME = "pingpong"
DESCRIPTION = "round the ring of architectures twice, digest unchanged at every hop"

WIDTHS = (64, 32)


def hop_expectation(hops: tuple[str, ...], encoding: str) -> Expect | None:
    """The one expectation every hop has, or None when the hops disagree or one needs a
    retry (a chain cannot carry on past a refusal)."""
    found = {expect(arch_of(a), arch_of(b), encoding) for a, b in itertools.pairwise(hops)}
    if len(found) != 1:
        return None
    outcome, retry = found.pop()
    return outcome if retry is None else None


def cells(arches: Iterable[str] = tuple(ARCHES)) -> list[Cell]:
    hops = chain(arches)
    if not hops:
        return []
    out = []
    for encoding in ENCODINGS:
        outcome = hop_expectation(hops, encoding)
        if outcome is None:
            continue
        out += [Cell(NAME, hops, encoding, Domain(guest_width=width), outcome, timeout=600.0)
                for width in WIDTHS]
    return out
