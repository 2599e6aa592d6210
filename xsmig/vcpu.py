"""vCPU contexts: Xen's fixed-layout vcpu_guest_context for each guest width, as data,
and the frame-number fields in them that save and restore rewrite."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from xsmig import pagetypes as pt

EXTENDED_CONTEXT_SIZE = 128
MAX_GDT_ENTS = 8192
GDT_ENTS_PER_FRAME = 512
GDT_FRAMES = 16
MAX_VCPU_ID = 4095  # the legacy vcpu_info chunk allows ids below 4096


class VcpuLayout(NamedTuple):
    guest_width: int  # 32 (PAE) or 64
    size: int
    word: str  # struct code of the guest's register width
    edx: int  # user_regs.edx / rdx: vCPU0's start-info frame
    rip: int
    rsp: int
    gdt_frames: int
    gdt_ents: int
    ctrlreg: int
    pt_levels: int

    @property
    def word_size(self) -> int:
        return struct.calcsize("<" + self.word)

    @property
    def cr1(self) -> int:
        return self.ctrlreg + self.word_size

    @property
    def cr3(self) -> int:
        return self.ctrlreg + 3 * self.word_size

    @property
    def top_level_type(self) -> int:
        return pt.L4TAB if self.pt_levels == 4 else pt.L3TAB

    def frames_per_page(self) -> int:
        """p2m entries per page in the guest's own p2m table (FPP)."""
        return 4096 // self.word_size

    def encode_cr3(self, frame: int) -> int:
        if self.guest_width == 64:
            return frame << 12
        # PAE: the 32-bit frame number rotated left by 12 bits
        return ((frame << 12) | (frame >> 20)) & 0xFFFFFFFF

    def decode_cr3(self, cr3: int) -> int:
        if self.guest_width == 64:
            return cr3 >> 12
        return ((cr3 >> 12) | (cr3 << 20)) & 0xFFFFFFFF


VCPU32 = VcpuLayout(32, 2800, "I", edx=524, rip=548, rsp=560, gdt_frames=2640, gdt_ents=2704,
                    ctrlreg=2716, pt_levels=3)
VCPU64 = VcpuLayout(64, 5168, "Q", edx=616, rip=648, rsp=672, gdt_frames=4832, gdt_ents=4960,
                    ctrlreg=4984, pt_levels=4)
BY_WIDTH = {32: VCPU32, 64: VCPU64}
BY_SIZE = {VCPU32.size: VCPU32, VCPU64.size: VCPU64}


class FrameFieldError(ValueError):
    """A frame field points where it must not; the message names the field."""


class FrameField(NamedTuple):
    name: str
    offset: int
    kind: str  # "plain": word holds a frame; "cr3": encoded cr3; "cr1": cr3-like with bit 0 valid
    wants: str  # page type the referenced pfn must have: "plain" or "top"


def frame_fields(layout: VcpuLayout, ctx: bytes | bytearray, vcpu_id: int) -> list[FrameField]:
    """The fields of this context that hold frame numbers, as Xen 4.5 finds them."""
    fields: list[FrameField] = []
    if vcpu_id == 0:
        fields.append(FrameField("start_info (edx)", layout.edx, "plain", "plain"))
    (gdt_ents,) = struct.unpack_from("<" + layout.word, ctx, layout.gdt_ents)
    if gdt_ents > MAX_GDT_ENTS:
        raise FrameFieldError(f"vcpu {vcpu_id}: gdt_ents {gdt_ents} exceeds {MAX_GDT_ENTS}")
    for j in range(GDT_FRAMES):
        if GDT_ENTS_PER_FRAME * j < gdt_ents:
            fields.append(FrameField(f"gdt_frames[{j}]", layout.gdt_frames + j * layout.word_size,
                                     "plain", "plain"))
    fields.append(FrameField("cr3", layout.cr3, "cr3", "top"))
    if layout.guest_width == 64:
        (cr1,) = struct.unpack_from("<Q", ctx, layout.cr1)
        if cr1 & 1:
            fields.append(FrameField("cr1", layout.cr1, "cr1", "top"))
    return fields


def _read_frame(layout: VcpuLayout, ctx: bytearray, field: FrameField) -> int:
    (value,) = struct.unpack_from("<" + layout.word, ctx, field.offset)
    frame = int(value)
    if field.kind == "cr3":
        return layout.decode_cr3(frame)
    if field.kind == "cr1":
        return frame >> 12
    return frame


def _write_frame(layout: VcpuLayout, ctx: bytearray, field: FrameField, frame: int) -> None:
    if field.kind == "cr3":
        value = layout.encode_cr3(frame)
    elif field.kind == "cr1":
        value = (frame << 12) | 1
    else:
        value = frame
    struct.pack_into("<" + layout.word, ctx, field.offset, value)


def rewrite_frames(
    layout: VcpuLayout,
    ctx: bytearray,
    vcpu_id: int,
    translate: Callable[[int, FrameField], int],
) -> None:
    """Rewrite each frame field in place with translate(frame, field).

    translate raises FrameFieldError to refuse a frame; it is the one place that
    decides what is valid (mfn in this domain on save; pfn in range and of the
    right type on restore)."""
    for field in frame_fields(layout, ctx, vcpu_id):
        _write_frame(layout, ctx, field, translate(_read_frame(layout, ctx, field), field))


def frame_values(layout: VcpuLayout, ctx: bytearray, vcpu_id: int
                 ) -> list[tuple[FrameField, int]]:
    """Each frame field of ctx with the frame it holds (decoded, not translated)."""
    return [(f, _read_frame(layout, ctx, f)) for f in frame_fields(layout, ctx, vcpu_id)]


def summary(layout: VcpuLayout, ctx: bytes | bytearray, vcpu_id: int) -> dict[str, int]:
    """Readable fields for diffs and dumps (frame fields as they stand in ctx)."""
    word = "<" + layout.word
    out = {
        "rip": struct.unpack_from(word, ctx, layout.rip)[0],
        "rsp": struct.unpack_from(word, ctx, layout.rsp)[0],
        "gdt_ents": struct.unpack_from(word, ctx, layout.gdt_ents)[0],
    }
    ba = bytearray(ctx)
    for field in frame_fields(layout, ba, vcpu_id):
        out[field.name] = _read_frame(layout, ba, field)
    return out
