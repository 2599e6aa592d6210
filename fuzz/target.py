"""The invariant every input must keep, as one function: the fuzzer's target and the
property tests' oracle.

For any bytes: restore and inspect either succeed or raise an XsmigError subclass
(nothing else), a stream error names an offset within the input, a failed restore
leaves the store exactly as it was, and a domain restore publishes is accepted by
digest (the one validator).

Differential (issue 16): verify gives restore's verdict, message and byte offset; convert
refuses what restore refuses (with restore's error), and for what restore accepts it
writes a stream that verify accepts and that restores to the same digest."""

from __future__ import annotations

import io
import json
from pathlib import Path

from xsmig.canonical import CanonicalDomain
from xsmig.convert import convert
from xsmig.errors import StreamError, StreamRefused, XsmigError
from xsmig.inspect import inspect_stream, render_text
from xsmig.layout import AMD64, I386, Layout
from xsmig.restore import restore
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save
from xsmig.verify import verify_stream

MAX_PAGES = 1 << 14  # sparse memory.bin of at most 64 MiB per try
# convert's targets: every encoding, legacy ones from both word sizes
TARGETS = [(Encoding.V2, AMD64), (Encoding.NATIVE, I386), (Encoding.EXTENDED, AMD64),
           (Encoding.ESCAPED, I386), (Encoding.NATIVE, AMD64), (Encoding.EXTENDED, I386)]


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


def _restored_digest(store: Store, data: bytes, host_id: int) -> str:
    restore(store, io.BytesIO(data), name="fuzzed", host_id=host_id, max_pages=MAX_PAGES)
    try:
        return CanonicalDomain(store.get("fuzzed")).digest()
    finally:
        store.destroy("fuzzed")


def check_verify(data: bytes, error: XsmigError | None,
                 source_width: int | None = None) -> None:
    """verify == restore: the same verdict, and for a bad stream the same message and
    byte offset."""
    verdict = verify_stream(io.BytesIO(data), source_width=source_width, max_pages=MAX_PAGES)
    if error is None:
        assert verdict["valid"], f"restore accepts, verify refuses: {verdict['error']}"
    else:
        assert not verdict["valid"], f"restore refuses ({error}), verify accepts"
        got = (verdict["error"]["message"], verdict["error"]["offset"])
        assert got == (str(error), getattr(error, "offset", None)), (got, str(error))


def check_convert(data: bytes, store: Store, digest: str | None, error: XsmigError | None,
                  targets: list[tuple[Encoding, Layout]],
                  source_width: int | None = None) -> int:
    """convert is a function on domains; returns how many conversions it checked."""
    for encoding, abi in targets:
        out = io.BytesIO()
        try:
            convert(io.BytesIO(data), out, encoding, abi=abi, source_width=source_width,
                    max_pages=MAX_PAGES)
        except XsmigError as e:
            _offset_ok(e, len(data))
            if error is not None:  # restore's very refusal
                assert (str(e), getattr(e, "offset", None)) == (
                    str(error), getattr(error, "offset", None)), (str(e), str(error))
            else:  # restore accepts: a refusal must be one (exit 4), never "malformed"
                assert isinstance(e, StreamRefused), f"convert to {encoding.value}: {e}"
            continue
        assert error is None, f"convert to {encoding.value} wrote a stream restore refuses"
        written = out.getvalue()
        verdict = verify_stream(io.BytesIO(written), max_pages=MAX_PAGES)
        assert verdict["valid"], f"convert to {encoding.value}/{abi.name}: {verdict['error']}"
        assert _restored_digest(store, written, 4) == digest, (
            f"convert to {encoding.value}/{abi.name} changed the guest")
    return len(targets)


def check_one(data: bytes, store_root: Path, source_width: int | None = None,
              targets: list[tuple[Encoding, Layout]] | None = None) -> str:
    """Run the invariants on one input; return 'restored', or the error class name.
    `targets`: convert's targets to check (default: one, chosen by the input's length)."""
    store = Store(store_root)
    before = _contents(store_root)
    outcome = "restored"
    error: XsmigError | None = None
    digest: str | None = None
    try:
        restore(store, io.BytesIO(data), name="fuzzed", host_id=2, source_width=source_width,
                max_pages=MAX_PAGES)
    except XsmigError as e:
        error = e
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
        assert _restored_digest(store, again.getvalue(), 3) == digest, "round trip differs"
    check_verify(data, error, source_width)
    if targets is None:
        targets = [TARGETS[len(data) % len(TARGETS)]]
    check_convert(data, store, digest, error, targets, source_width)
    try:
        report = inspect_stream(io.BytesIO(data), source_width=source_width)
        render_text(report)
        json.dumps(report)
    except XsmigError as e:
        _offset_ok(e, len(data))
    return outcome
