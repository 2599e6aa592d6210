"""A host's machine frames: which mfn backs each pfn of a domain on this host.

Every host hands out different machine frames (that is what canonicalisation is
for), but storing a p2m array per domain would make every lookup a file access.
Instead each domain gets an affine bijection pfn -> base + (a*pfn + b) mod 2^k,
seeded by the host id and a per-domain salt: cheap both ways, and frames stay
below 2^31 so they fit PAE's 32-bit frame fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from xsmig import lanes, words

LANE_SPAN = 1 << 28  # the largest map the lane methods take: p2m_size <= MAX_P2M_SIZE

# CPython's own SHA-256: `hashlib` would load OpenSSL's libcrypto, which costs every
# emulated command about 0.1 s (docs/performance.md); the digest is the same.
try:
    from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.12+
except ImportError:
    from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]


class FrameMap:
    __slots__ = ("_base", "_inverse", "_lanes", "_mask", "_mult", "_offset", "host_id",
                 "p2m_size", "salt")

    def __init__(self, host_id: int, salt: int, p2m_size: int) -> None:
        self.host_id = host_id
        self.salt = salt
        self.p2m_size = p2m_size
        span = 1 << max(p2m_size - 1, 1).bit_length()
        digest = sha256(f"xsmig-frames:{host_id}:{salt}".encode()).digest()
        self._mask = span - 1
        self._mult = (int.from_bytes(digest[0:8], "little") | 1) & self._mask or 1
        self._offset = int.from_bytes(digest[8:16], "little") & self._mask
        self._base = 0x100000 + (int.from_bytes(digest[16:20], "little") % 0x3F00) * 0x10000
        self._inverse = pow(self._mult, -1, span)
        self._lanes: dict[int, tuple[int, ...]] = {}

    def mfn(self, pfn: int) -> int:
        return self._base + ((pfn * self._mult + self._offset) & self._mask)

    def mfns(self, pfns: Iterable[int]) -> list[int]:
        """mfn() of many pfns at once, -1 for those beyond p2m_size: one comprehension,
        no call per frame (restoring page tables and p2m tables)."""
        base, mask, off, mult, size = (self._base, self._mask, self._offset, self._mult,
                                       self.p2m_size)
        if isinstance(pfns, list) and pfns and min(pfns) >= 0 and max(pfns) < size:
            # every pfn in range (the usual page): C-level min/max, no test per entry
            return [base + ((p * mult + off) & mask) for p in pfns]
        return [base + ((p * mult + off) & mask) if 0 <= p < size else -1 for p in pfns]

    def pfn(self, mfn: int) -> int | None:
        """The pfn an mfn backs, or None when the frame is not this domain's."""
        x = mfn - self._base
        if not 0 <= x <= self._mask:
            return None
        pfn = ((x - self._offset) * self._inverse) & self._mask
        return pfn if pfn < self.p2m_size else None

    def pfns(self, mfns: Iterable[int]) -> list[int]:
        """pfn() of many frames at once, -1 for those not this domain's: one comprehension
        with the arithmetic inline, no call per frame (validating page tables)."""
        base, mask, off, inv, size = (self._base, self._mask, self._offset, self._inverse,
                                      self.p2m_size)
        if isinstance(mfns, list) and mfns and min(mfns) >= base and max(mfns) <= base + mask:
            # every frame in the map's span (the usual page): one test per page, not per
            # entry; a pfn beyond p2m_size sends the page down the checking path
            start = base + off
            pfns = [((m - start) * inv) & mask for m in mfns]
            if max(pfns) < size:
                return pfns
        return [p if 0 <= (x := m - base) <= mask and (p := ((x - off) * inv) & mask) < size
                else -1 for m in mfns]

    # -- whole pages at once, as lanes of one int (xsmig/lanes.py) --
    #
    # Exact because no lane overflows: a frame is checked below p2m_size (<= 2^28, as are
    # mult, offset and the span) before it is multiplied, and a machine frame (< 2^40:
    # page-table frame fields) is checked inside the map's span before it is turned back.
    # A larger map (no stream or store has one) takes the per-frame paths.

    def _consts(self, n: int) -> tuple[int, ...] | None:
        if self._mask >= LANE_SPAN:
            return None
        c = self._lanes.get(n)
        if c is None:
            one = lanes.ones(n)
            span = self._mask + 1
            c = self._lanes[n] = (
                (lanes.TOP - self.p2m_size) * one,  # + a pfn: bit 63 set iff >= p2m_size
                lanes.TOP * one,
                self._mask * one, self._offset * one, self._base * one,
                ((1 << 62) - self._base) * one,  # + an mfn: 2^62 + (mfn - base)
                (((1 << 63) - 1) & ~self._mask) * one,  # bits 62..k: (1 << 62) iff in span
                (1 << 62) * one,
                (span - self._offset) * one)
        return c

    def mfn_lanes(self, pfns: int, n: int = lanes.PAGE_LANES) -> int | None:
        """mfn() of n pfns given as lanes, as lanes; None when one is beyond p2m_size
        (the per-frame mfns() then says which)."""
        c = self._consts(n)
        if c is None:
            return None
        below, top, mask, off, base, _, _, _, _ = c
        if (pfns + below) & top:
            return None
        return ((pfns * self._mult + off) & mask) + base

    def mfn_range(self, pfns: range) -> int:
        """mfn() of consecutive pfns below p2m_size (a page of the guest's p2m table), as
        lanes."""
        n = len(pfns)
        mfns = self.mfn_lanes(lanes.iota(pfns.start, n), n)
        if mfns is None:  # -1 for a pfn beyond p2m_size, as mfns() gives it
            return lanes.from_bytes(words.dump(self.mfns(list(pfns)), "q"))
        return mfns

    def pfn_lanes(self, mfns: int, n: int = lanes.PAGE_LANES) -> int | None:
        """pfn() of n frames (each below 2^40) given as lanes, as lanes; None when one is
        not this domain's (the per-frame pfns() then says which)."""
        c = self._consts(n)
        if c is None:
            return None
        below, top, mask, _, _, shift, high, in_span, back = c
        x = mfns + shift
        if x & high != in_span:
            return None
        pfns = (((x & mask) + back) * self._inverse) & mask
        return None if (pfns + below) & top else pfns
