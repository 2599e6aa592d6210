"""Ping-pong chain i386 -> amd64 -> i386 -> amd64 across four distinct hosts.

The canonical digest must equal the original one after every hop.
"""

from __future__ import annotations

from scenarios.hosts import PING_PONG
from scenarios.model import IDENTICAL, Cell, Domain, Expect

NAME = "pingpong"
DESCRIPTION = "three hops across widths, digest unchanged at every hop"

# encoding -> expected outcome of every hop (guest width 64 and 32).
EXPECTED: dict[str, Expect] = {
    "native": IDENTICAL,
    "escaped": IDENTICAL,
    "extended": IDENTICAL,
    "v2": IDENTICAL,
}
WIDTHS = (64, 32)


def cells() -> list[Cell]:
    return [
        Cell(NAME, PING_PONG, encoding, Domain(guest_width=width), expect, timeout=600.0)
        for encoding, expect in EXPECTED.items()
        for width in WIDTHS
    ]
