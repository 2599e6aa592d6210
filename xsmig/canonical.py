"""Canonical state: everything about a domain that does not depend on the host.

Frame numbers become pfns (page tables, vCPU registers, the guest's p2m table),
host-specific values are left out (name, host id, machine frames, the shared-info
frame-list-list field). Two domains are the same guest iff their digests match.
The digest is BLAKE2s-256 over a fixed serialisation, fed in blocks of up to 4 MiB:
under QEMU user emulation it hashes 4-5 times faster than SHA-256 on both i386 and
amd64 hosts (docs/performance.md), with the same 256-bit strength."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from xsmig import p2mtable, pagetable
from xsmig import pagetypes as pt
from xsmig.domain import PAGE_SIZE, SHARED_INFO_FLL_OFFSET, DomainDir
from xsmig.errors import StateError
from xsmig.validate import Invalid, pt_targets, pt_targets_lanes, validate, vcpu_target
from xsmig.vcpu import FrameFieldError, rewrite_frames, summary

CANONICAL_VERSION = "xsmig-canonical-1"
DUMP_FORMAT = "xsmig-dump-1"
BLOCK_PAGES = 1024


def _fingerprint(data: bytes | memoryview) -> str:
    """A short per-item fingerprint for dumps (not the digest): 64 bits is plenty to
    point at which pfn or field differs."""
    return hashlib.blake2s(data, digest_size=8).hexdigest()


class CanonicalDomain:
    def __init__(self, domain: DomainDir) -> None:
        self.domain = domain
        try:
            self.meta, self.types = validate(domain)  # the same rule restore applied
        except Invalid as e:
            raise StateError(f"domain at {domain.path} is corrupt: {e}") from None
        self.frames = self.meta.frame_map()
        self.p2m_index = {pfn: i for i, pfn in enumerate(self.meta.p2m_frames)}
        self._to_pfns = pt_targets(self.frames, self.types)
        self._to_pfn_lanes = pt_targets_lanes(self.frames, self.types)

    def metadata(self) -> dict[str, Any]:
        m = self.meta
        return {
            "canonical": CANONICAL_VERSION,
            "guest_width": m.guest_width,
            "p2m_size": m.p2m_size,
            "vcpu_ids": m.vcpu_ids,
            "p2m_frames": m.p2m_frames,
            "extended_contexts": m.extended_contexts,
            "xsave_size": m.xsave_size,
            "tsc": m.tsc._asdict(),
            # An empty physmap is no guest state, and v2 carries none (Xen's converter drops
            # it): the version of empty toolstack data is left out.
            "toolstack_version": m.toolstack_version if m.physmap else None,
            "physmap": [p.to_json() for p in m.physmap],
        }

    def page_blocks(self) -> Iterator[tuple[list[int], memoryview]]:
        """(pfns, their canonical pages) for every page with data, in pfn order."""
        buf = bytearray(BLOCK_PAGES * PAGE_SIZE)
        view = memoryview(buf)
        levels = self.meta.vcpu_layout.pt_levels
        with self.domain.open_memory() as mem:
            for run in pt.DATA_RUN.finditer(self.types):
                for first in range(run.start(), run.end(), BLOCK_PAGES):
                    n = min(BLOCK_PAGES, run.end() - first)
                    block = view[:n * PAGE_SIZE]
                    mem.seek(first * PAGE_SIZE)
                    if mem.readinto(block) != len(block):  # type: ignore[attr-defined]
                        raise StateError(f"domain {self.meta.name!r}: memory.bin is short")
                    special = [m.start() for m in pt.PAGETABLE.finditer(self.types, first,
                                                                         first + n)]
                    special += [p for p in self.p2m_index if first <= p < first + n]
                    for pfn in special:
                        page = block[(pfn - first) * PAGE_SIZE:(pfn - first + 1) * PAGE_SIZE]
                        self._canonical_page(pfn, page, levels)
                    yield list(range(first, first + n)), block

    def _canonical_page(self, pfn: int, page: memoryview, levels: int) -> None:
        level = pt.pt_level(self.types[pfn])
        if level:
            pagetable.normalise(page, level, levels)
            try:
                pagetable.rewrite(page, levels, self._to_pfns, self._to_pfn_lanes)
            except pagetable.EntryError as e:
                raise StateError(f"domain {self.meta.name!r}: page table at pfn {pfn:#x}: "
                                 f"{e}, not the domain's") from None
        else:
            page[:] = p2mtable.page_content(self.meta, self.types, self.p2m_index[pfn],
                                            p2mtable.identity)

    def vcpus(self) -> Iterator[tuple[int, bytes, bytes, int, int, bytes]]:
        """(id, canonical context, extended context, xcr0, xcr0_accum, xsave area)."""
        vl = self.meta.vcpu_layout
        for vcpu_id in self.meta.vcpu_ids:
            state = self.domain.read_vcpu(self.meta, vcpu_id)
            ctx = bytearray(state.context)
            translate = vcpu_target(vl, self.frames, self.types, vcpu_id)
            try:
                rewrite_frames(vl, ctx, vcpu_id, translate)
            except FrameFieldError as e:
                raise StateError(f"domain {self.meta.name!r}: {e}") from None
            yield (vcpu_id, bytes(ctx), state.extended or b"", state.xcr0, state.xcr0_accum,
                   state.area)

    def shared_info(self) -> bytes:
        data = bytearray(self.domain.read_shared_info())
        at = SHARED_INFO_FLL_OFFSET[self.meta.guest_width]
        width = self.meta.vcpu_layout.word_size
        data[at:at + width] = bytes(width)
        return bytes(data)

    def digest(self) -> str:
        h = hashlib.blake2s(digest_size=32)
        h.update(json.dumps(self.metadata(), sort_keys=True).encode())
        h.update(self.types)
        for _pfns, block in self.page_blocks():
            h.update(block)
        for vcpu_id, ctx, ext, xcr0, accum, xsave in self.vcpus():
            h.update(vcpu_id.to_bytes(4, "little") + ctx + ext + xcr0.to_bytes(8, "little"))
            if accum != xcr0:
                # Only then: a domain whose vCPUs all have xcr0_accum == xcr0 (every domain
                # before xcr0_accum was kept) keeps the digest it had.
                h.update(b"accum" + accum.to_bytes(8, "little"))
            h.update(len(xsave).to_bytes(8, "little") + xsave)
        h.update(self.shared_info())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        counts = Counter(pt.type_name(t) for t in self.types)
        return {"name": self.meta.name, "guest_width": self.meta.guest_width,
                "p2m_size": self.meta.p2m_size, "memory_bytes": self.meta.p2m_size * PAGE_SIZE,
                "vcpus": len(self.meta.vcpu_ids), "vcpu_ids": self.meta.vcpu_ids,
                "pages": dict(sorted(counts.items()))}

    def dump(self) -> dict[str, Any]:
        """Per-page and per-field fingerprints, for `xsmig diff` across hosts."""
        pages: dict[str, str] = {}
        for pfns, block in self.page_blocks():
            for i, pfn in enumerate(pfns):
                page = block[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
                pages[str(pfn)] = _fingerprint(page)
        vl = self.meta.vcpu_layout
        vcpus = {}
        for vcpu_id, ctx, ext, xcr0, accum, xsave in self.vcpus():
            fields: dict[str, Any] = summary(vl, ctx, vcpu_id)
            fields["context"] = _fingerprint(ctx)
            fields["extended"] = _fingerprint(ext)
            masks = f"{xcr0:#x}/" if accum == xcr0 else f"{xcr0:#x}/{accum:#x}/"  # as digest()
            fields["xsave"] = masks + _fingerprint(xsave)
            vcpus[str(vcpu_id)] = fields
        return {"format": DUMP_FORMAT, "name": self.meta.name, "digest": self.digest(),
                "metadata": self.metadata(), "types": self.types.hex(), "pages": pages,
                "vcpus": vcpus,
                "shared_info": _fingerprint(self.shared_info())}


def diff_dumps(a: dict[str, Any], b: dict[str, Any], limit: int = 20) -> list[str]:
    """Readable differences between two dumps; empty when the domains are the same."""
    out: list[str] = []
    for key in sorted(set(a["metadata"]) | set(b["metadata"])):
        va, vb = a["metadata"].get(key), b["metadata"].get(key)
        if va != vb:
            out.append(f"metadata {key}: {json.dumps(va)} != {json.dumps(vb)}")
    ta, tb = bytes.fromhex(a["types"]), bytes.fromhex(b["types"])
    typed = [p for p in range(min(len(ta), len(tb))) if ta[p] != tb[p]]
    for p in typed[:limit]:
        out.append(f"pfn {p:#x}: type {pt.type_name(ta[p])} != {pt.type_name(tb[p])}")
    if len(typed) > limit:
        out.append(f"... {len(typed) - limit} more pfns differ in type")
    pa, pb = a["pages"], b["pages"]
    content = sorted(int(p) for p in set(pa) & set(pb) if pa[p] != pb[p])
    for p in content[:limit]:
        out.append(f"pfn {p:#x}: contents differ")
    if len(content) > limit:
        out.append(f"... {len(content) - limit} more pfns differ in contents")
    for vid in sorted(set(a["vcpus"]) | set(b["vcpus"]), key=int):
        fa, fb = a["vcpus"].get(vid), b["vcpus"].get(vid)
        if fa is None or fb is None:
            out.append(f"vCPU {vid}: only in {'second' if fa is None else 'first'}")
            continue
        for field in sorted(set(fa) | set(fb)):
            if fa.get(field) != fb.get(field):
                out.append(f"vCPU {vid} {field}: {fa.get(field)} != {fb.get(field)}")
    if a["shared_info"] != b["shared_info"]:
        out.append("shared info differs")
    return out

