"""The one definition of a valid domain.

`validate(domain)` is what restore runs on the domain it built aside before it
publishes it, and what digest, diff and save run before they read a domain: so a
restore exits 0 exactly when every later command accepts what it published. The
frame checks (`pt_target`, `vcpu_target`, `check_vcpu_pfn`) are also what the
canonicaliser and the saver call per entry, so there is one rule for each.

A failure is an `Invalid` naming the part it concerns (a pfn and entry, a vCPU,
a frame-list index); restore turns that into a StreamError at the offset of the
record it blames, the other commands into a StateError naming the domain."""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Callable
from typing import Any

from xsmig import lanes, pagetable
from xsmig import pagetypes as pt
from xsmig.domain import (
    MAX_META_BYTES,
    META_FORMATS,
    PAGE_SIZE,
    DomainDir,
    DomainMeta,
    PhysmapEntry,
    TscInfo,
    read_regular,
)
from xsmig.frames import FrameMap
from xsmig.stream.format import MAX_P2M_SIZE, MAX_PHYSMAP_NAME
from xsmig.vcpu import (
    BY_WIDTH,
    EXTENDED_CONTEXT_SIZE,
    MAX_VCPU_ID,
    FrameField,
    FrameFieldError,
    VcpuLayout,
    frame_values,
)

MAX_XSAVE = (1 << 20) - 32  # xcnt's bound, less xfeature_mask, size, xcr0, xcr0_accum
_VALID_NIBBLE = bytes(1 if t in pt.VALID_TYPES else 0 for t in range(256))
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1


class Invalid(Exception):
    """Why a domain is not valid, and which part of it is to blame."""

    def __init__(self, message: str, part: str = "meta", pfn: int | None = None,
                 entry: int | None = None, vcpu: int | None = None,
                 frame: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.part = part  # meta | types | frame_list | memory | page_table | vcpu | shared_info
        self.pfn = pfn
        self.entry = entry  # page-table entry index, or frame-list index
        self.vcpu = vcpu
        self.frame = frame  # page_table: the machine frame the entry maps

    def __str__(self) -> str:
        return self.message


def _uint(value: object, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def load_meta(domain: DomainDir) -> DomainMeta:
    """meta.json, every field of the right type and in range (a hand-edited or foreign
    store must not become a traceback later)."""
    try:
        if _size(domain.meta_path, "meta.json", "meta") > MAX_META_BYTES:
            raise Invalid(f"meta.json is larger than {MAX_META_BYTES} bytes")
        d: Any = json.loads(read_regular(domain.meta_path, MAX_META_BYTES))
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise Invalid(f"meta.json is not JSON: {e}") from None
    if not isinstance(d, dict) or d.get("format") not in META_FORMATS:
        raise Invalid("meta.json is not an xsmig domain (format 1 or 2)")
    try:
        tsc, physmap = d["tsc"], d["physmap"]
        if not isinstance(tsc, dict) or not isinstance(physmap, list):
            raise TypeError("tsc or physmap")
        d = {**d, "tsc": TscInfo(**tsc), "physmap": [PhysmapEntry.from_json(p) for p in physmap]}
        meta = DomainMeta(**d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Invalid(f"meta.json has a bad field: {type(e).__name__}: {e}") from None
    _check_meta_fields(meta)
    return meta


def _check_meta_fields(m: DomainMeta) -> None:
    if not isinstance(m.name, str) or m.guest_width not in BY_WIDTH:
        raise Invalid("meta.json: bad name or guest_width")
    if not _uint(m.p2m_size, MAX_P2M_SIZE) or m.p2m_size == 0:
        raise Invalid(f"meta.json: p2m_size {m.p2m_size!r} out of range")
    if not _uint(m.host_id, _U64) or not _uint(m.frame_salt, _U64):
        raise Invalid("meta.json: host_id and frame_salt must be unsigned integers")
    ids = m.vcpu_ids
    if (not isinstance(ids, list) or not ids or not all(_uint(i, MAX_VCPU_ID) for i in ids)
            or ids[0] != 0 or any(a >= b for a, b in itertools.pairwise(ids))):
        raise Invalid(f"meta.json: vcpu_ids must be increasing ids 0..{MAX_VCPU_ID} from 0")
    if not isinstance(m.extended_contexts, bool) or not _uint(m.xsave_size, MAX_XSAVE):
        raise Invalid("meta.json: bad extended_contexts or xsave_size")
    t = m.tsc
    if not (_uint(t.mode, _U32) and _uint(t.nsec, _U64) and _uint(t.khz, _U32)
            and _uint(t.incarnation, _U32)):
        raise Invalid("meta.json: tsc fields out of range")
    if m.toolstack_version is not None and not _uint(m.toolstack_version, _U32):
        raise Invalid("meta.json: toolstack_version out of range")
    if len(m.physmap) > _U32 or not all(
            _uint(p.phys_offset, _U64) and _uint(p.start_addr, _U64) and _uint(p.size, _U64)
            and len(p.name) <= MAX_PHYSMAP_NAME for p in m.physmap):
        raise Invalid("meta.json: bad physmap entry")
    if not isinstance(m.p2m_frames, list) or not all(_uint(p, _U64) for p in m.p2m_frames):
        raise Invalid("meta.json: p2m_frames must be a list of pfns")


def check_types(meta: DomainMeta, types: bytes | bytearray) -> None:
    """types.bin against meta: its size, every nibble known, the p2m frame list."""
    if len(types) != meta.p2m_size:
        raise Invalid(f"types.bin has {len(types)} entries for a p2m_size of {meta.p2m_size}",
                      "types")
    flags = types.translate(_VALID_NIBBLE)
    if 0 in flags:
        pfn = flags.index(0)
        raise Invalid(f"pfn {pfn:#x} has unknown page type {types[pfn]:#x}", "types", pfn=pfn)
    check_frame_list(meta.p2m_frames, meta.p2m_size, BY_WIDTH[meta.guest_width], types)


def check_frame_list(frames: list[int], p2m_size: int, vl: VcpuLayout,
                     types: bytes | bytearray) -> None:
    """The guest's p2m table: one distinct plain page per FPP pfns."""
    want = -(-p2m_size // vl.frames_per_page())
    if len(frames) != want:
        raise Invalid(f"p2m frame list has {len(frames)} entries, a p2m_size of {p2m_size} "
                      f"needs {want}", "frame_list", entry=min(len(frames), want))
    seen: set[int] = set()
    for index, pfn in enumerate(frames):
        if pfn >= p2m_size:
            raise Invalid(f"p2m frame list entry {index} is pfn {pfn:#x}, beyond p2m_size",
                          "frame_list", pfn=pfn, entry=index)
        if types[pfn] != pt.NOTAB:
            raise Invalid(f"p2m frame list entry {index} names pfn {pfn:#x} of type "
                          f"{pt.type_name(types[pfn])}, not a plain page", "frame_list",
                          pfn=pfn, entry=index)
        if pfn in seen:
            raise Invalid(f"p2m frame list entry {index} repeats pfn {pfn:#x}", "frame_list",
                          pfn=pfn, entry=index)
        seen.add(pfn)


def pt_target(frames: FrameMap, types: bytes | bytearray) -> Callable[[int], int | None]:
    """A page-table entry's machine frame -> the pfn it maps, or None: not a frame of
    this domain, or a pfn that is a hole (never sent, or listed unmapped)."""
    def to_pfn(mfn: int) -> int | None:
        pfn = frames.pfn(mfn)
        return pfn if pfn is not None and types[pfn] != pt.XTAB else None
    return to_pfn


def pt_targets(frames: FrameMap, types: bytes | bytearray) -> pagetable.Translate:
    """pt_target over a page's frames at once (-1 for refused): what rewrite takes."""
    def to_pfns(mfns: list[int]) -> list[int]:
        pfns = frames.pfns(mfns)
        # The usual case, every frame the domain's and no target a hole, in C-level scans;
        # the comprehension only for a table that has a refused entry.
        if -1 not in pfns and pt.XTAB not in bytes(map(types.__getitem__, pfns)):
            return pfns
        return [p if p >= 0 and types[p] != pt.XTAB else -1 for p in pfns]
    return to_pfns


def pt_targets_lanes(frames: FrameMap, types: bytes | bytearray) -> pagetable.TranslateLanes:
    """pt_targets for a dense table, its frames as lanes (pagetable.rewrite); None when
    one is refused, and the per-entry path names it."""
    def to_pfns(mfns: int) -> int | None:
        pfns = frames.pfn_lanes(mfns)
        # no hole in the domain (one memchr): no target can be one, no gather needed
        if pfns is None or pt.XTAB not in types or pt.XTAB not in bytes(
                map(types.__getitem__, lanes.to_array(pfns))):
            return pfns
        return None
    return to_pfns


def check_vcpu_pfn(vl: VcpuLayout, types: bytes | bytearray, vcpu_id: int, pfn: int | None,
                   field: FrameField, raw: int) -> int:
    """The rule for a vCPU frame field: a pfn of this domain, of the type the field needs
    (a plain page for start_info and the GDT, the top-level table for cr3/cr1)."""
    where = f"vCPU {vcpu_id} {field.name}"
    if pfn is None or pfn >= len(types):
        raise FrameFieldError(f"{where} names frame {raw:#x}, not one of the domain's pages")
    t = types[pfn]
    if field.wants == "plain" and t != pt.NOTAB:
        raise FrameFieldError(f"{where} names pfn {pfn:#x} of type {pt.type_name(t)}, "
                              "not a plain page")
    if field.wants == "top" and t & ~pt.LPINTAB != vl.top_level_type:
        raise FrameFieldError(f"{where} names pfn {pfn:#x} of type {pt.type_name(t)}, "
                              f"not an L{vl.pt_levels} page table")
    return pfn


def vcpu_target(vl: VcpuLayout, frames: FrameMap, types: bytes | bytearray, vcpu_id: int
                ) -> Callable[[int, FrameField], int]:
    """rewrite_frames' translate for a stored context: machine frame -> checked pfn."""
    def translate(mfn: int, field: FrameField) -> int:
        return check_vcpu_pfn(vl, types, vcpu_id, frames.pfn(mfn), field, mfn)
    return translate


def _size(path: os.PathLike[str], what: str, part: str, vcpu: int | None = None) -> int:
    """The size of a regular file of the domain; a symlink, FIFO or device is corrupt."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Invalid(f"{what} is missing", part, vcpu=vcpu) from None
    if not stat.S_ISREG(st.st_mode):
        raise Invalid(f"{what} is not a regular file", part, vcpu=vcpu)
    return st.st_size


def check_files(domain: DomainDir, meta: DomainMeta) -> None:
    vl = BY_WIDTH[meta.guest_width]
    if _size(domain.memory_path, "memory.bin", "memory") != meta.p2m_size * PAGE_SIZE:
        raise Invalid("memory.bin does not hold p2m_size pages", "memory")
    if _size(domain.shared_info_path, "shared_info.bin", "shared_info") != PAGE_SIZE:
        raise Invalid("shared_info.bin is not one page", "shared_info")
    for vcpu_id in meta.vcpu_ids:
        if _size(domain.vcpu_path(vcpu_id, "ctx"), f"vCPU {vcpu_id} context", "vcpu",
                 vcpu_id) != vl.size:
            raise Invalid(f"vCPU {vcpu_id} context is not {vl.size} bytes", "vcpu", vcpu=vcpu_id)
        if meta.extended_contexts and _size(domain.vcpu_path(vcpu_id, "ext"),
                                            f"vCPU {vcpu_id} extended context", "vcpu",
                                            vcpu_id) != EXTENDED_CONTEXT_SIZE:
            raise Invalid(f"vCPU {vcpu_id} extended context is not {EXTENDED_CONTEXT_SIZE} "
                          "bytes", "vcpu", vcpu=vcpu_id)
        # format 1: xcr0, the area; 2: Xen's buffer (xcr0, xcr0_accum, the area), or empty
        # for a vCPU that never used xsave
        header = 8 if meta.format == 1 else 16
        size = (_size(domain.vcpu_path(vcpu_id, "xsave"), f"vCPU {vcpu_id} xsave area", "vcpu",
                      vcpu_id) if meta.xsave_size else 0)
        if meta.xsave_size and not header <= size <= header + meta.xsave_size and \
                not (size == 0 and meta.format != 1):
            raise Invalid(f"vCPU {vcpu_id} xsave area exceeds xsave_size", "vcpu", vcpu=vcpu_id)


def first_hole(page: memoryview, level: int, pt_levels: int, to_pfns: pagetable.Translate,
               types: bytes | bytearray,
               to_pfn_lanes: pagetable.TranslateLanes | None = None) -> tuple[int, int] | None:
    """(entry index, frame) of a page table's first present entry, Xen-owned slots
    normalised away as the canonical form does, whose frame is no page of the domain:
    to_pfns refuses it (-1) or its pfn is a hole. Present entries are picked by C-level
    scans, their frames mapped by one comprehension, the pfns' types gathered by a C-level
    map; the entry-by-entry walk only runs to name the entry to blame. A dense table
    that `to_pfn_lanes` (pt_targets_lanes) accepts whole has none."""
    pagetable.normalise(page, level, pt_levels)
    mask = pagetable.present_mask(page)
    if (to_pfn_lanes is not None and 0 not in mask
            and to_pfn_lanes(pagetable.frame_lanes(page, pt_levels)) is not None):
        return None
    index, values = pagetable.present_entries(page, mask)
    fmask = pagetable.frame_mask(pt_levels)
    frames = [(e >> 12) & fmask for e in values]
    targets = to_pfns(frames)
    if not targets or (min(targets) >= 0
                       and pt.XTAB not in bytes(map(types.__getitem__, targets))):
        return None
    k = next(k for k, t in enumerate(targets) if t < 0 or types[t] == pt.XTAB)
    return index[k], frames[k]


def hole_message(pfn: int, entry: int, what: str) -> str:
    """One wording for a page-table entry that maps no page of the domain (restore,
    verify and the validator): `what` names the frame ("frame 0x..", "pfn 0x..")."""
    return (f"page table at pfn {pfn:#x}: entry {entry} maps {what}, which is no page of the "
            "domain (a pfn never sent, unmapped, or beyond p2m_size)")


def check_page_tables(domain: DomainDir, meta: DomainMeta, types: bytes | bytearray) -> None:
    """Every present entry of every page table maps a pfn of this domain that is not a
    hole (first_hole)."""
    vl = BY_WIDTH[meta.guest_width]
    frames = meta.frame_map()
    to_pfn_lanes = pt_targets_lanes(frames, types)
    buf = bytearray(PAGE_SIZE)
    page = memoryview(buf)
    with domain.open_memory() as mem:
        for match in pt.PAGETABLE.finditer(types):
            pfn = match.start()
            mem.seek(pfn * PAGE_SIZE)
            if mem.readinto(page) != PAGE_SIZE:  # type: ignore[attr-defined]
                raise Invalid("memory.bin is short", "memory", pfn=pfn)
            hit = first_hole(page, pt.pt_level(types[pfn]), vl.pt_levels, frames.pfns, types,
                             to_pfn_lanes)
            if hit:
                entry, frame = hit
                raise Invalid(hole_message(pfn, entry, f"frame {frame:#x}"), "page_table",
                              pfn=pfn, entry=entry, frame=frame)


def check_vcpus(domain: DomainDir, meta: DomainMeta, types: bytes | bytearray) -> None:
    vl = BY_WIDTH[meta.guest_width]
    frames = meta.frame_map()
    for vcpu_id in meta.vcpu_ids:
        ctx = bytearray(domain.read_vcpu_file(vcpu_id, "ctx"))
        translate = vcpu_target(vl, frames, types, vcpu_id)
        try:
            for field, frame in frame_values(vl, ctx, vcpu_id):
                translate(frame, field)
        except FrameFieldError as e:
            raise Invalid(str(e), "vcpu", vcpu=vcpu_id) from None


def validate(domain: DomainDir, *, page_tables: bool = True) -> tuple[DomainMeta, bytearray]:
    """Check a whole domain; return its meta and types. Raises Invalid.

    page_tables=False leaves the page-table entries to a caller that translates every
    present entry itself with this module's rule (`pt_targets`) and fails on the first it
    refuses: the saver, whose rewrite is that translation (one per entry, not two)."""
    meta = load_meta(domain)
    if _size(domain.types_path, "types.bin", "types") != meta.p2m_size:
        raise Invalid(f"types.bin does not hold p2m_size ({meta.p2m_size}) entries", "types")
    try:
        vcpus_dir = stat.S_ISDIR(os.lstat(domain.path / "vcpus").st_mode)
    except FileNotFoundError:
        vcpus_dir = False
    if not vcpus_dir:
        raise Invalid("vcpus/ is missing or not a directory (never followed as a symlink)",
                      "vcpu")
    types = domain.read_types()
    check_types(meta, types)
    check_files(domain, meta)
    if page_tables:
        check_page_tables(domain, meta, types)
    check_vcpus(domain, meta, types)
    return meta, types

