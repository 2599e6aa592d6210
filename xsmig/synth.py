"""Deterministic synthetic guests: same seed and parameters, same canonical state on
any host. Page contents come from a seeded pool, stamped per page, a batch at a time."""

from __future__ import annotations

import struct
import zlib
from array import array
from typing import TYPE_CHECKING, NamedTuple

from xsmig import p2mtable, pagetable, words
from xsmig import pagetypes as pt
from xsmig.domain import (
    PAGE_SIZE,
    SHARED_INFO_FLL_OFFSET,
    DomainDir,
    DomainMeta,
    PhysmapEntry,
    TscInfo,
    VcpuState,
    xsave_buffer,
)
from xsmig.errors import StateError, UsageError
from xsmig.frames import FrameMap
from xsmig.vcpu import BY_WIDTH, GDT_ENTS_PER_FRAME, MAX_VCPU_ID, VcpuLayout, rewrite_frames

if TYPE_CHECKING:
    import random

SHAPES = ("standard", "sparse", "pt-heavy")
MIN_PAGES = 64
MAX_PAGES = 0x0FFFFFFF
P2M_TABLE_BASE = 16  # pfn of the guest's first p2m-table page (not 0, as in a real kernel)
START_INFO_PFN = 1
XSAVE_AREA = 832  # legacy area + xsave header + AVX state
# Features a vCPU enabled once and dropped since (MPX's BNDREGS, BNDCSR): on some vCPUs
# xcr0_accum is strictly wider than xcr0, as Xen's buffer then says.
DROPPED_FEATURES = 0x18
POOL_BYTES = 8 << 20
MAX_PHYSMAP = 256
PHYSMAP_NAMES = [b"vga", b"rom.bios", b"option-rom.0", b"pv-console"]
BATCH_PAGES = 1024
PTE_FLAGS = 0x27  # present, rw, user, accessed
NX = 1 << 63
L4_USABLE = [*range(0, 256), *range(272, 512)]


class GuestSpec(NamedTuple):
    name: str
    pages: int = 2048
    guest_width: int = 64
    vcpus: int = 2
    max_vcpu_id: int | None = None
    seed: int = 0
    shape: str = "standard"
    extended_state: bool = True  # False: no extended vCPU contexts or xsave, as the oldest guests
    physmap: int = 2  # entries in libxl's physmap (toolstack chunk); 0: no toolstack data

    def check(self) -> None:
        if self.guest_width not in BY_WIDTH:
            raise UsageError("--guest-width must be 32 or 64")
        if not MIN_PAGES <= self.pages <= MAX_PAGES:
            raise UsageError(f"--pages must be between {MIN_PAGES} and {MAX_PAGES:#x}")
        if self.shape not in SHAPES:
            raise UsageError(f"--shape must be one of {', '.join(SHAPES)}")
        top = self.vcpus - 1 if self.max_vcpu_id is None else self.max_vcpu_id
        if not 1 <= self.vcpus <= top + 1 or top > MAX_VCPU_ID:
            raise UsageError(f"need 1 <= --vcpus <= --max-vcpu-id + 1 <= {MAX_VCPU_ID + 1}")
        if self.vcpus > self.pages // 16:
            raise UsageError("too many vCPUs for so few pages")
        if not 0 <= self.physmap <= MAX_PHYSMAP:
            raise UsageError(f"--physmap must be between 0 and {MAX_PHYSMAP}")


class _PfnPool:
    """Free pfns, handed out in order (after a seeded shuffle where asked)."""

    def __init__(self, free: list[int]) -> None:
        self._free = free

    def take(self, n: int) -> list[int]:
        if n > len(self._free):
            raise UsageError("--pages too small for this guest's page tables and vCPUs")
        out, self._free = self._free[:n], self._free[n:]
        return out


def _tree_pages(n_targets: int, levels: int, fanout: int) -> int:
    total, n = 1, n_targets
    for _ in range(levels - 1):
        n = -(-n // fanout)
        total += n
    return total


def _build_tree(
    targets: list[int], levels: int, fanout: int, pool: _PfnPool, rng: random.Random,
    tables: dict[int, tuple[int, array[int]]],
) -> int:
    """Page tables mapping `targets`; returns the root pfn. tables: pfn -> (level, entries)."""
    children = targets
    for level in range(1, levels):
        groups = [children[i:i + fanout] for i in range(0, len(children), fanout)]
        parents = pool.take(len(groups))
        for pfn, group in zip(parents, groups, strict=True):
            entries = array("Q", bytes(PAGE_SIZE))
            slots = range(len(group)) if fanout == 512 else sorted(rng.sample(range(512),
                                                                              len(group)))
            for slot, child in zip(slots, group, strict=True):
                flags = PTE_FLAGS | (0x40 if rng.random() < 0.3 else 0)
                if level == 1 and rng.random() < 0.25:
                    flags |= NX
                entries[slot] = (child << 12) | flags
            if level == 1:  # a few non-present (swapped-out) entries: must survive untouched
                for slot in range(0, 512, 37):
                    if entries[slot] == 0:
                        entries[slot] = rng.getrandbits(62) << 1
            tables[pfn] = (level, entries)
        children = parents
    root: int = pool.take(1)[0]
    entries = array("Q", bytes(PAGE_SIZE))
    root_slots: list[int]
    if levels == 3:
        root_slots = list(range(len(children)))  # PAE L3: 4 slots, flags cleared
        flags = pagetable.PRESENT
    else:
        root_slots = sorted(rng.sample(L4_USABLE, len(children)))
        flags = PTE_FLAGS
    for slot, child in zip(root_slots, children, strict=True):
        entries[slot] = (child << 12) | flags
    tables[root] = (levels, entries)
    return root


def _capacity(levels: int, fanout: int) -> int:
    root_slots = 4 if levels == 3 else len(L4_USABLE)
    return root_slots * fanout ** (levels - 1)  # type: ignore[no-any-return]


def create(spec: GuestSpec, domain: DomainDir, host_id: int) -> DomainMeta:
    spec.check()
    _check_room(domain, spec.pages)
    vl = BY_WIDTH[spec.guest_width]
    import random  # here, not at import: every command imports this module (the CLI)
    rng = random.Random(f"xsmig-synth:{spec.seed}:{spec.pages}:{spec.guest_width}:"
                        f"{spec.vcpus}:{spec.max_vcpu_id}:{spec.shape}")
    pages = spec.pages
    top_id = spec.vcpus - 1 if spec.max_vcpu_id is None else spec.max_vcpu_id
    vcpu_ids = [0, *sorted(rng.sample(range(1, top_id + 1), spec.vcpus - 1))]

    types = bytearray(pages)  # all plain to begin with
    n_p2m = -(-pages // vl.frames_per_page())
    p2m_frames = list(range(P2M_TABLE_BASE, P2M_TABLE_BASE + n_p2m))
    reserved = {0, START_INFO_PFN, *p2m_frames}
    if P2M_TABLE_BASE + n_p2m >= pages:
        raise UsageError("--pages too small")
    free = [p for p in range(pages) if p not in reserved]

    if spec.shape == "sparse":
        free = _make_holes(free, types, rng)

    fanout = 8 if spec.shape == "pt-heavy" else 512
    n_spaces = {"standard": min(spec.vcpus, 2), "sparse": 1, "pt-heavy": 4}[spec.shape]
    # Page tables come out of the same pfns they map: size them for the worst case.
    levels = vl.pt_levels
    capacity = _capacity(levels, fanout)
    per_space = [min(len(free) // (2 if i else 1), capacity) for i in range(n_spaces)]
    budget = sum(_tree_pages(n, levels, fanout) for n in per_space)
    rng.shuffle(free)
    table_pool = _PfnPool(free[:budget])
    targets = sorted(free[budget:])
    if len(targets) < 4 * spec.vcpus:
        raise UsageError("--pages too small for this guest's page tables and vCPUs")

    tables: dict[int, tuple[int, array[int]]] = {}
    roots = []
    for i in range(n_spaces):
        mapped = targets if i == 0 else sorted(rng.sample(targets, len(targets) // 2))
        roots.append(_build_tree(mapped[:capacity], levels, fanout, table_pool, rng, tables))
    for pfn, (level, _) in tables.items():
        types[pfn] = level
    for root in roots:
        types[root] = levels | pt.LPINTAB
    # pfns budgeted for tables but not needed stay plain pages
    contexts = _make_vcpus(vl, vcpu_ids, roots, targets, rng)

    fm = FrameMap(host_id, zlib.crc32(spec.name.encode()), pages)
    meta = DomainMeta(
        name=spec.name, guest_width=spec.guest_width, p2m_size=pages, host_id=host_id,
        frame_salt=fm.salt, vcpu_ids=vcpu_ids, p2m_frames=p2m_frames,
        extended_contexts=spec.extended_state,
        xsave_size=XSAVE_AREA if spec.extended_state and spec.shape != "sparse" else 0,
        tsc=TscInfo(rng.choice([0, 1, 2]), rng.getrandbits(62), rng.randint(1_000_000, 4_000_000),
                    rng.randint(0, 1000)),
        toolstack_version=1 if spec.physmap else None,
        physmap=_physmap(spec.physmap, rng),
    )
    domain.create_empty(pages)
    _write_memory(domain, meta, types, tables, fm, rng)
    domain.write_types(types)
    for index, (vcpu_id, ctx) in enumerate(zip(vcpu_ids, contexts, strict=True)):
        rewrite_frames(vl, ctx, vcpu_id, lambda frame, _f: fm.mfn(frame))
        area = rng.randbytes(meta.xsave_size) if meta.xsave_size else b""
        ext = rng.randbytes(128)
        xsave = b""
        if area:
            xcr0 = rng.choice([0x3, 0x7])
            # odd seeds on vCPU 0, every other vCPU after it: accum wider than xcr0
            dropped = DROPPED_FEATURES if (index + spec.seed) % 2 else 0
            xsave = xsave_buffer(xcr0, xcr0 | dropped, area)
        domain.write_vcpu(meta, vcpu_id, VcpuState(bytes(ctx), ext, xsave))
    shared = bytearray(rng.randbytes(PAGE_SIZE))
    struct.pack_into("<" + vl.word, shared, SHARED_INFO_FLL_OFFSET[spec.guest_width],
                     fm.mfn(p2m_frames[0]))
    domain.write_shared_info(bytes(shared))
    domain.write_meta(meta)
    return meta


def _check_room(domain: DomainDir, pages: int) -> None:
    """Refuse, before writing, a guest the store's filesystem cannot hold (every page
    but the holes is written)."""
    import os
    need = pages * PAGE_SIZE
    try:
        st = os.statvfs(domain.path.parent)
    except OSError:
        return  # no figure: the writes themselves will say (exit 5, named)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise StateError(f"cannot create domain {domain.path.name.rsplit('.', 2)[0]!r}: "
                         f"{pages} pages need {need} bytes, the store at "
                         f"{domain.path.parent.parent} has {free} free")


def _physmap(n: int, rng: random.Random) -> list[PhysmapEntry]:
    """n entries at distinct phys_offsets (xenstore keys are per phys_offset); the default
    two are drawn as they always were, so default guests keep their physmap."""
    names = (rng.sample(PHYSMAP_NAMES, 2) if n == 2 else
             [PHYSMAP_NAMES[i % 4] + (b".%d" % i if i >= 4 else b"") for i in range(n)])
    entries: dict[int, PhysmapEntry] = {}
    for name in names:
        offset = rng.getrandbits(40) << 12
        while offset in entries:
            offset = rng.getrandbits(40) << 12
        entries[offset] = PhysmapEntry(offset, rng.getrandbits(40) << 12,
                                       rng.randint(1, 64) << 12, name + b"\0")
    return list(entries.values())


def _make_holes(free: list[int], types: bytearray, rng: random.Random) -> list[int]:
    """Sparse guests: runs of holes (~30%), some allocate-only pages, two broken ones."""
    left = []
    i = 0
    while i < len(free):
        run = rng.randint(1, 48)
        if rng.random() < 0.3:
            for p in free[i:i + run]:
                types[p] = pt.XTAB
        else:
            left.extend(free[i:i + run])
        i += run
    for p in rng.sample(left, len(left) // 25):
        types[p] = pt.XALLOC
    for p in rng.sample(left, 2):
        types[p] = pt.BROKEN
    return [p for p in left if types[p] == pt.NOTAB]


def _make_vcpus(vl: VcpuLayout, vcpu_ids: list[int], roots: list[int], targets: list[int],
                rng: random.Random) -> list[bytearray]:
    word = "<" + vl.word
    contexts = []
    for index, vcpu_id in enumerate(vcpu_ids):
        ctx = bytearray(rng.randbytes(vl.size))
        gdt_ents = rng.choice([16, 128, 512, 700, 1024, 2000])
        struct.pack_into(word, ctx, vl.gdt_ents, gdt_ents)
        n_frames = -(-gdt_ents // GDT_ENTS_PER_FRAME)
        for j, frame in enumerate(rng.sample(targets, n_frames)):
            struct.pack_into(word, ctx, vl.gdt_frames + j * vl.word_size, frame)
        struct.pack_into(word, ctx, vl.cr3, vl.encode_cr3(roots[index % len(roots)]))
        if vcpu_id == 0:
            struct.pack_into(word, ctx, vl.edx, START_INFO_PFN)
        if vl.guest_width == 64:
            user_l4 = (roots[(index + 1) % len(roots)] << 12) | 1 if index % 2 else 0
            struct.pack_into(word, ctx, vl.cr1, user_l4)
        contexts.append(ctx)
    return contexts


def _write_memory(domain: DomainDir, meta: DomainMeta, types: bytearray,
                  tables: dict[int, tuple[int, array[int]]], fm: FrameMap,
                  rng: random.Random) -> None:
    pool = rng.randbytes(POOL_BYTES)
    key = rng.getrandbits(64)
    buf = bytearray(BATCH_PAGES * PAGE_SIZE)
    view = memoryview(buf)
    with domain.open_memory("r+b") as mem:
        for run in pt.PLAIN_RUN.finditer(types):
            for first in range(run.start(), run.end(), BATCH_PAGES):
                n = min(BATCH_PAGES, run.end() - first)
                start = ((first * 2654435761) % (POOL_BYTES // 2 // 8)) * 8
                view[:n * PAGE_SIZE] = pool[start:start + n * PAGE_SIZE]
                # A per-page stamp keeps every page distinct: misplaced pages change the digest.
                stamps = words.dump([(key ^ (p * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF
                                     for p in range(first, first + n)], "Q")  # x86: LE
                view[:n * PAGE_SIZE].cast("Q")[::512] = memoryview(stamps).cast("Q")
                mem.seek(first * PAGE_SIZE)
                mem.write(view[:n * PAGE_SIZE])
        for pfn, (_level, entries) in tables.items():
            page = memoryview(bytearray(words.dump(entries, "Q")))  # little-endian
            pagetable.rewrite(page, meta.vcpu_layout.pt_levels, fm.mfns)
            mem.seek(pfn * PAGE_SIZE)
            mem.write(page)
        p2mtable.write_table(mem, meta, types, fm.mfn_range)
