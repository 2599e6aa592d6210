"""A host's machine frames: which mfn backs each pfn of a domain on this host.

Every host hands out different machine frames (that is what canonicalisation is
for), but storing a p2m array per domain would make every lookup a file access.
Instead each domain gets an affine bijection pfn -> base + (a*pfn + b) mod 2^k,
seeded by the host id and a per-domain salt: cheap both ways, and frames stay
below 2^31 so they fit PAE's 32-bit frame fields.
"""

from __future__ import annotations

from collections.abc import Iterable

# CPython's own SHA-256: `hashlib` would load OpenSSL's libcrypto, which costs every
# emulated command about 0.1 s (docs/performance.md); the digest is the same.
try:
    from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.12+
except ImportError:
    from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]


class FrameMap:
    __slots__ = ("_base", "_inverse", "_mask", "_mult", "_offset", "host_id", "p2m_size", "salt")

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
