"""The invariant every input must keep, as one function: the fuzzer's target and the
property tests' oracle.

For any bytes: restore and inspect either succeed or raise an XsmigError subclass
(nothing else), a stream error names an offset within the input, a failed restore
leaves the store exactly as it was, and a domain restore publishes is accepted by
digest (the one validator)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from xsmig.canonical import CanonicalDomain
from xsmig.errors import StreamError, StreamRefused, XsmigError
from xsmig.inspect import inspect_stream, render_text
from xsmig.layout import Layout
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save

MAX_PAGES = 1 << 14  # sparse memory.bin of at most 64 MiB per try


def _offset_ok(e: XsmigError, size: int) -> None:
    """Stream errors (exit 3) and refusals (exit 4) name an offset inside the input;
    anything else must be a usage or state error, never a bare exception."""
    if isinstance(e, StreamError | StreamRefused):
        assert e.offset is not None, f"a stream error without an offset: {e}"
        assert 0 <= e.offset <= size, f"offset {e.offset} outside the {size}-byte input: {e}"


def _contents(root: Path) -> set[str]:
    """Every path in the store but the skeleton a writer creates (and its lock)."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")} - {"domains", "incoming",
                                                                  ".lock"}


def check_one(data: bytes, store_root: Path, source_width: int | None = None) -> str:
    """Run the invariants on one input; return 'restored', or the error class name."""
    store = Store(store_root)
    before = _contents(store_root)
    outcome = "restored"
    try:
        restore(store, io.BytesIO(data), name="fuzzed", host_id=2, source_width=source_width,
                max_pages=MAX_PAGES)
    except XsmigError as e:
        outcome = type(e).__name__
        _offset_ok(e, len(data))
        after = _contents(store_root)
        assert after == before, f"a failed restore changed the store: {after ^ before}"
    else:
        # Restore's verdict is digest's and save's: the domain digests, saves, and
        # round-trips through another encoding to the same canonical state.
        digest = CanonicalDomain(store.get("fuzzed")).digest()
        again = io.BytesIO()
        save(store.get("fuzzed"), again, SaveOptions(Encoding.EXTENDED, Layout.native()))
        store.destroy("fuzzed")
        restore(store, io.BytesIO(again.getvalue()), name="fuzzed", host_id=3,
                max_pages=MAX_PAGES)
        assert CanonicalDomain(store.get("fuzzed")).digest() == digest, "round trip differs"
        store.destroy("fuzzed")
    try:
        report = inspect_stream(io.BytesIO(data), source_width=source_width)
        render_text(report)
        json.dumps(report)
    except XsmigError as e:
        _offset_ok(e, len(data))
    return outcome
