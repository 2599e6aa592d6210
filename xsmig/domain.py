"""The domain model: what a host keeps about one guest, and how it sits on disk.

A domain directory holds:
  meta.json        metadata (width, p2m size, vCPU ids, TSC, toolstack records, ...)
  types.bin        one byte per pfn: the page type nibble (pagetypes); XTAB = hole
  memory.bin       p2m_size * 4096 bytes, sparse; page tables hold machine frames
  vcpus/N.ctx      vCPU N's context, frames as machine frames; N.ext, N.xsave beside it
                   (N.xsave: Xen's xsave buffer, u64 xcr0, u64 xcr0_accum, then the area;
                   format 1 domains kept u64 xcr0 and the area, xcr0_accum being xcr0)
  shared_info.bin  4096 bytes
Machine frames come from a FrameMap(host_id, frame_salt, p2m_size).

Files are opened with O_NOFOLLOW and read only when they are regular files within their
size bound (a hand-edited store may hold a symlink out of it, a FIFO or a device):
anything else is a StateError naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

from xsmig.errors import StateError
from xsmig.frames import FrameMap
from xsmig.vcpu import BY_WIDTH, VcpuLayout

PAGE_SIZE = 4096
META_FORMAT = 2  # written; 1 (before xcr0_accum was kept) is read too
META_FORMATS = (1, 2)
_XSAVE_HDR = struct.Struct("<QQ")  # xcr0, xcr0_accum: Xen's xsave buffer starts so
# Offset of arch.pfn_to_mfn_frame_list_list in shared_info, per guest width: a machine
# frame the saver zeroes, so canonical state leaves it out.
SHARED_INFO_FLL_OFFSET = {32: 2320, 64: 3096}
MAX_META_BYTES = 16 << 20  # meta.json holds at most ~2 MiB of frame list for the largest guest
MAX_TYPES_BYTES = 0x0FFFFFFF  # one byte per pfn, p2m_size's bound (stream.format.MAX_P2M_SIZE)
MAX_VCPU_FILE = (1 << 20) + 8  # the largest of ctx (5168), ext (128), xsave (8 + area)
_NOFOLLOW = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us


def open_regular(path: Path, flags: int = os.O_RDONLY, limit: int | None = None) -> int:
    """A descriptor of `path` if it is a regular file (not a symlink, FIFO, device or
    directory) of at most `limit` bytes; FileNotFoundError if it is missing."""
    try:
        fd = os.open(path, flags | _NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        what = "is a symlink" if e.errno == errno.ELOOP else e.strerror  # O_NOFOLLOW
        raise StateError(f"domain file {path} {what}: not read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"domain file {path} is not a regular file: not read")
        if limit is not None and st.st_size > limit:
            raise StateError(f"domain file {path} is larger than {limit} bytes: not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    fd = open_regular(path, limit=limit)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)[:limit]


class PhysmapEntry(NamedTuple):
    """libxl's physmap record, carried in the toolstack chunk (-18)."""

    phys_offset: int
    start_addr: int
    size: int
    name: bytes

    def to_json(self) -> dict[str, Any]:
        return {"phys_offset": self.phys_offset, "start_addr": self.start_addr,
                "size": self.size, "name": self.name.hex()}

    @staticmethod
    def from_json(d: dict[str, Any]) -> PhysmapEntry:
        return PhysmapEntry(d["phys_offset"], d["start_addr"], d["size"], bytes.fromhex(d["name"]))


class TscInfo(NamedTuple):
    mode: int = 0
    nsec: int = 0
    khz: int = 0
    incarnation: int = 0


class DomainMeta(NamedTuple):
    name: str
    guest_width: int
    p2m_size: int
    host_id: int
    frame_salt: int
    vcpu_ids: list[int]
    p2m_frames: list[int]  # pfns of the pages holding the guest's own p2m table
    extended_contexts: bool = True
    xsave_size: int = 0  # 0: no vCPU uses xsave (no xcnt block)
    tsc: TscInfo = TscInfo()
    toolstack_version: int | None = None  # None: no toolstack chunk
    physmap: Sequence[PhysmapEntry] = ()
    format: int = META_FORMAT

    @property
    def vcpu_layout(self) -> VcpuLayout:
        return BY_WIDTH[self.guest_width]

    def frame_map(self) -> FrameMap:
        return FrameMap(self.host_id, self.frame_salt, self.p2m_size)

    def to_json(self) -> str:
        d = self._asdict()
        d["tsc"] = self.tsc._asdict()
        d["physmap"] = [p.to_json() for p in self.physmap]
        return json.dumps(d, indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> DomainMeta:
        d = json.loads(text)
        if d.get("format") not in META_FORMATS:
            raise ValueError(f"unsupported domain format {d.get('format')!r}")
        d["tsc"] = TscInfo(**d["tsc"])
        d["physmap"] = [PhysmapEntry.from_json(p) for p in d["physmap"]]
        return DomainMeta(**d)


class VcpuState(NamedTuple):
    context: bytes
    extended: bytes | None = None
    xsave: bytes = b""  # Xen's buffer: u64 xcr0, u64 xcr0_accum, the area; b"": no xsave

    @property
    def xcr0(self) -> int:
        return _XSAVE_HDR.unpack_from(self.xsave)[0] if self.xsave else 0

    @property
    def xcr0_accum(self) -> int:
        return _XSAVE_HDR.unpack_from(self.xsave)[1] if self.xsave else 0

    @property
    def area(self) -> bytes:
        return self.xsave[_XSAVE_HDR.size:]


def xsave_buffer(xcr0: int, xcr0_accum: int, area: bytes) -> bytes:
    return _XSAVE_HDR.pack(xcr0, xcr0_accum) + area


class DomainDir:
    """Files of one domain (complete, or being written aside before it is published)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def types_path(self) -> Path:
        return self.path / "types.bin"

    @property
    def memory_path(self) -> Path:
        return self.path / "memory.bin"

    @property
    def shared_info_path(self) -> Path:
        return self.path / "shared_info.bin"

    def vcpu_path(self, vcpu_id: int, suffix: str) -> Path:
        return self.path / "vcpus" / f"{vcpu_id}.{suffix}"

    def read_meta(self) -> DomainMeta:
        return DomainMeta.from_json(read_regular(self.meta_path, MAX_META_BYTES).decode())

    def read_types(self) -> bytearray:
        return bytearray(read_regular(self.types_path, MAX_TYPES_BYTES))

    def read_shared_info(self) -> bytes:
        return read_regular(self.shared_info_path, PAGE_SIZE)

    def read_vcpu_file(self, vcpu_id: int, suffix: str) -> bytes:
        return read_regular(self.vcpu_path(vcpu_id, suffix), MAX_VCPU_FILE)

    def open_memory(self, mode: str = "rb") -> BinaryIO:
        flags = os.O_RDWR if "+" in mode else os.O_RDONLY
        return cast(BinaryIO, os.fdopen(open_regular(self.memory_path, flags), mode))

    def read_vcpu(self, meta: DomainMeta, vcpu_id: int) -> VcpuState:
        ctx = self.read_vcpu_file(vcpu_id, "ctx")
        ext = self.read_vcpu_file(vcpu_id, "ext") if meta.extended_contexts else None
        xsave = b""
        if meta.xsave_size:
            xsave = self.read_vcpu_file(vcpu_id, "xsave")
            if meta.format == 1:  # u64 xcr0, then the area: xcr0_accum was xcr0
                xsave = xsave[:8] + xsave
        return VcpuState(ctx, ext, xsave)

    # -- writing (only ever into a directory that is not yet published) --

    def create_empty(self, p2m_size: int) -> None:
        (self.path / "vcpus").mkdir(parents=True)
        with open(self.memory_path, "wb") as f:
            f.truncate(p2m_size * PAGE_SIZE)  # sparse: holes cost nothing

    def write_meta(self, meta: DomainMeta) -> None:
        self.meta_path.write_text(meta.to_json())

    def write_types(self, types: bytes | bytearray) -> None:
        self.types_path.write_bytes(types)

    def write_vcpu(self, meta: DomainMeta, vcpu_id: int, state: VcpuState) -> None:
        self.write_vcpu_state(vcpu_id, state, extended=meta.extended_contexts,
                              xsave=bool(meta.xsave_size))

    def write_vcpu_state(self, vcpu_id: int, state: VcpuState, *, extended: bool,
                         xsave: bool) -> None:
        self.vcpu_path(vcpu_id, "ctx").write_bytes(state.context)
        if extended:
            self.vcpu_path(vcpu_id, "ext").write_bytes(state.extended or bytes(128))
        if xsave:
            self.vcpu_path(vcpu_id, "xsave").write_bytes(state.xsave)

    def write_shared_info(self, data: bytes) -> None:
        self.shared_info_path.write_bytes(data)
