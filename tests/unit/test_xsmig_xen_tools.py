"""xsmig's streams through Xen's own tooling, ported for the tests (xen_convert.py, and
v2_spec.xen_check for verify-stream-v2's strictness): a Xen-style conversion of xsmig's
legacy native streams, from both toolstack widths, into both v2 formats, satisfies Xen's
verifier and restores to the source digest, xsave included; `xl save` files are read;
the legacy xsave buffer of earlier xsmig versions is refused, naming the cause."""

from __future__ import annotations

import io
import struct

import pytest
from v2_spec import L_XENSTORE, libxl_records, split, xen_check, xenstore_pairs
from xen_convert import convert_legacy, xl_file
from xsmig_helpers import Guest, digest, expect_error, make, restore_bytes, save_bytes

from xsmig.convert import convert
from xsmig.domain import DomainDir
from xsmig.errors import StateError, StreamError, StreamRefused
from xsmig.inspect import inspect_stream
from xsmig.layout import AMD64, I386, Layout
from xsmig.store import Store
from xsmig.stream.format import Encoding, V2Format
from xsmig.verify import verify_stream

SAVERS = {32: I386, 64: AMD64}  # the legacy toolstack's width: convert-legacy-stream -w


def _accum_wider(domain: DomainDir) -> bool:
    meta = domain.read_meta()
    states = [domain.read_vcpu(meta, v) for v in meta.vcpu_ids]
    return any(s.xcr0_accum & ~s.xcr0 for s in states)


@pytest.mark.parametrize("fmt", ["libxc", "libxl"])
@pytest.mark.parametrize("guest_width", [32, 64])
@pytest.mark.parametrize("twidth", [32, 64])
def test_xen_conversion_restores_to_the_source(store: Store, twidth: int, guest_width: int,
                                               fmt: str) -> None:
    # libxc carries no physmap (Xen's converter discards it): a guest without one
    src = make(store, "src", Guest(pages=300, width=guest_width, vcpus=3, max_vcpu_id=9,
                                   seed=5, physmap=2 if fmt == "libxl" else 0))
    assert _accum_wider(src)  # xcr0_accum strictly wider than xcr0 on some vCPU
    native = save_bytes(src, Encoding.NATIVE, SAVERS[twidth])
    v2 = convert_legacy(native, twidth, fmt)
    assert xen_check(v2) == []
    restored = restore_bytes(store, v2, "copy")
    assert digest(restored) == digest(src)
    meta = restored.read_meta()
    for vcpu_id in meta.vcpu_ids:  # xsave, both masks, byte for byte
        assert restored.read_vcpu(meta, vcpu_id).xsave == \
            src.read_vcpu(src.read_meta(), vcpu_id).xsave
    if fmt == "libxl":
        (body,) = [b for t, b in libxl_records(v2) if t == L_XENSTORE]
        assert dict(xenstore_pairs(body)) == {
            k: v for pm in src.read_meta().physmap
            for k, v in ((b"physmap/%x/start_addr" % pm.phys_offset, b"%x" % pm.start_addr),
                         (b"physmap/%x/size" % pm.phys_offset, b"%x" % pm.size),
                         (b"physmap/%x/name" % pm.phys_offset, pm.name[:-1]))}


@pytest.mark.parametrize("saver", [I386, AMD64], ids=["i386", "amd64"])
def test_xsmig_v2_matches_the_xen_conversion(store: Store, saver: Layout) -> None:
    """xsmig's own v2 and Xen's conversion of its native stream carry the same libxc
    records, but for the converted headers (Xen 0.1, libxl's legacy bit): the same
    PAGE_DATA, vCPU, xsave and shared-info bytes, and the same physmap strings."""
    src = make(store, "src", Guest(pages=200, width=64, vcpus=2, seed=7))
    ours = split(save_bytes(src, Encoding.V2, saver))
    xen = split(convert_legacy(save_bytes(src, Encoding.NATIVE, saver), saver.bits, "libxl"))
    assert ours.records == xen.records
    assert ours.suffix == xen.suffix  # EMULATOR_XENSTORE_DATA and END
    assert ours.prefix[:12] == xen.prefix[:12] and xen.prefix[12:16] == b"\0\0\0\2"


@pytest.mark.parametrize("inner", ["legacy", "libxc", "libxl", "xsmig-libxl"])
def test_xl_save_files_are_read(store: Store, inner: str) -> None:
    src = make(store, "src", Guest(pages=200, width=32, vcpus=2, seed=3,
                                   physmap=0 if inner == "libxc" else 2))
    native = save_bytes(src, Encoding.NATIVE, AMD64)
    legacy_xl = xl_file(native, libxl=False)
    data = {"legacy": legacy_xl,
            "libxc": convert_legacy(legacy_xl, 64, "libxc", xl=True),
            "libxl": convert_legacy(legacy_xl, 64, "libxl", xl=True),
            "xsmig-libxl": xl_file(save_bytes(src, Encoding.V2, I386), libxl=True)}[inner]
    restored = restore_bytes(store, data, "copy")
    assert digest(restored) == digest(src)
    report = inspect_stream(io.BytesIO(data))
    assert report["detection"].startswith("R0X: xl save file header, then R")
    assert verify_stream(io.BytesIO(data))["valid"]
    out = io.BytesIO()
    convert(io.BytesIO(data), out, Encoding.ESCAPED, abi=I386)
    store.destroy("copy")
    assert digest(restore_bytes(store, out.getvalue(), "copy")) == digest(src)


def test_xl_header_must_match_the_stream(store: Store) -> None:
    src = make(store, "src", Guest(pages=100, width=64, seed=3))
    libxl = save_bytes(src, Encoding.V2, AMD64)
    e = expect_error(StreamError, store, xl_file(libxl, libxl=False))
    assert "xl header says a legacy stream" in str(e)
    bad = bytearray(xl_file(libxl, libxl=True))
    bad[36] |= 0x80  # an unknown mandatory flag
    e = expect_error(StreamRefused, store, bytes(bad))
    assert e.offset == 36 and "mandatory" in str(e)


def _as_earlier_xsmig(native: bytes, mask: int) -> bytes:
    """A 64-bit native stream of one vCPU as xsmig wrote it before the buffer was Xen's:
    xcnt = area + 16, and the area alone after xfeature_mask (the vCPU's mask), size."""
    at = native.index(b"xcnt\x04\x00\x00\x00") + 8
    (xcnt,) = struct.unpack_from("<I", native, at)
    old = bytearray(native)
    struct.pack_into("<I", old, at, xcnt - 16)
    head = struct.pack("<QQ", 0x2FF, xcnt - 16)  # this version's header for vCPU 0
    i = old.index(head)
    old[i:i + 32] = struct.pack("<QQ", mask, xcnt - 32)
    return bytes(old)


def test_earlier_xsmig_xsave_is_refused_naming_the_cause(store: Store) -> None:
    src = make(store, "src", Guest(pages=100, width=64, vcpus=1, seed=2))
    native = save_bytes(src, Encoding.NATIVE, AMD64)
    assert digest(restore_bytes(store, native, "copy")) == digest(src)
    e = expect_error(StreamRefused, store, _as_earlier_xsmig(native, 0x7))
    assert "earlier xsmig versions" in str(e) and "xcr0_accum" in str(e)


def test_libxc_format_refuses_a_physmap(store: Store) -> None:
    src = make(store, "src", Guest(pages=100, width=64, seed=2))
    with pytest.raises(StateError, match=r"physmap entries.*--v2-format libxl"):
        save_bytes(src, Encoding.V2, AMD64, v2_format=V2Format.LIBXC)
    libxl = save_bytes(src, Encoding.V2, AMD64)
    with pytest.raises(StreamRefused, match="physmap entries"):
        convert(io.BytesIO(libxl), io.BytesIO(), Encoding.V2, abi=AMD64,
                v2_format=V2Format.LIBXC)


def test_extended_streams_require_the_xen_xsave_bit(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Roll-out safety: an extended stream carrying xsave state sets required feature bit
    0 (Xen's buffer), which a reader of 0.2.0 (no required feature known) refuses cleanly
    instead of misreading xcr0 and xcr0_accum as the area; without xsave, no bit."""
    from xsmig.stream import format as fmt

    with_xsave = make(store, "x", Guest(pages=100, width=64, vcpus=2, seed=3))
    without = make(store, "n", Guest(pages=100, width=64, vcpus=1, seed=3, extended=False))
    data = save_bytes(with_xsave, Encoding.EXTENDED, AMD64)
    required = struct.unpack_from("<I", data, 16 + 4)[0]  # escape, block head, 4 bytes in
    assert required == fmt.SINF_REQ_XEN_XSAVE
    assert struct.unpack_from("<I", save_bytes(without, Encoding.EXTENDED, AMD64), 20)[0] == 0
    assert digest(restore_bytes(store, data, "copy")) == digest(with_xsave)
    monkeypatch.setattr(fmt, "REQUIRED_FEATURES_KNOWN", 0)  # the reader 0.2.0 was
    e = expect_error(StreamRefused, store, data)
    assert "requires unknown features 0x1" in str(e) and e.offset == 4
