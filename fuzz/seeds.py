"""Small valid streams of every encoding: the fuzz corpus seeds and the property tests'
starting points. Plain pages nothing points at become allocate-only (no data), so a
64-page guest's stream is a few page tables and a handful of plain pages (~20-40 KiB)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from xsmig import pagetypes as pt
from xsmig.domain import DomainDir
from xsmig.layout import AMD64, I386, Layout
from xsmig.store import Store
from xsmig.stream.format import Encoding
from xsmig.stream.writer import SaveOptions, save
from xsmig.synth import GuestSpec, create
from xsmig.vcpu import frame_values

# name -> (encoding, saving ABI, guest width, shape, max vCPU id (2 vCPUs) or None (1),
#          extended vCPU state, ext-info)
KINDS: dict[str, tuple[Encoding, Layout, int, str, int | None, bool, bool]] = {
    "native-amd64-64": (Encoding.NATIVE, AMD64, 64, "standard", None, True, True),
    "native-i386-32": (Encoding.NATIVE, I386, 32, "standard", 70, True, True),
    "native-i386-32-noext": (Encoding.NATIVE, I386, 32, "sparse", None, False, False),
    "native-amd64-32": (Encoding.NATIVE, AMD64, 32, "sparse", None, True, True),
    "escaped-64": (Encoding.ESCAPED, I386, 64, "standard", 3, True, True),
    "extended-i386-64": (Encoding.EXTENDED, I386, 64, "sparse", None, True, True),
    "extended-amd64-32": (Encoding.EXTENDED, AMD64, 32, "standard", None, True, True),
}


def _thin(domain: DomainDir) -> None:
    """Turn plain pages that no frame field or p2m frame needs into allocate-only pages."""
    meta = domain.read_meta()
    types = domain.read_types()
    keep = set(meta.p2m_frames)
    frames = meta.frame_map()
    for vcpu_id in meta.vcpu_ids:
        ctx = bytearray(domain.read_vcpu(meta, vcpu_id).context)
        for _field, frame in frame_values(meta.vcpu_layout, ctx, vcpu_id):
            pfn = frames.pfn(frame)
            if pfn is not None:
                keep.add(pfn)
    for pfn, t in enumerate(types):
        if t == pt.NOTAB and pfn not in keep:
            types[pfn] = pt.XALLOC
    domain.write_types(types)


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="xsmig-seeds-") as tmp:
        store = Store(Path(tmp))
        for name, (enc, layout, width, shape, top, extended, ext_info) in KINDS.items():
            with store.writing(name) as domain:
                create(GuestSpec(name, 64, width, 1 if top is None else 2, top, 7, shape,
                                 extended), domain, 1)
                _thin(domain)
            buf = io.BytesIO()
            save(store.get(name), buf, SaveOptions(enc, layout, ext_info=ext_info))
            out[name] = buf.getvalue()
    return out
