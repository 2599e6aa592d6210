"""Arrays of fixed-size integers stored in a stated byte order.

Streams carry their writer's byte order (or, for v2 and guest memory, little-endian on
every host); the running interpreter works in its own. Every conversion between the
two goes through these two functions: one C-level array call each way, one byteswap()
when the orders differ, never a loop over the values.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable

LITTLE = "little"


def load(code: str, data: bytes | bytearray | memoryview, order: str = LITTLE) -> array[int]:
    """The integers of `data` (array type `code`, written in `order`), as host values."""
    values = array(code)
    values.frombytes(data)  # array(code, view) would iterate a memoryview item by item
    if order != sys.byteorder:
        values.byteswap()
    return values


def dump(values: array[int] | Iterable[int], code: str, order: str = LITTLE) -> bytes:
    """`values` as array type `code` written in `order`; the argument is not changed."""
    out = array(code, values)
    if order != sys.byteorder:
        out.byteswap()
    return out.tobytes()
