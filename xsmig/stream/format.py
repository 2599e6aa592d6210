"""The stream family's constants and record layouts, described as data.

Legacy facts follow Xen 4.5's libxc (see docs/stream-format.md); the extended-info
section is xsmig's design of the mail's second proposal."""

from __future__ import annotations

import struct
from enum import StrEnum

ESCAPE = 0xFFFFFFFF  # first 4 bytes of escaped and extended streams
MAX_P2M_SIZE = 0x0FFFFFFF  # Xen's saver refuses more: why an escape can never be a p2m_size
MAX_BATCH = 1024
PAGE_SIZE = 4096


class Encoding(StrEnum):
    NATIVE = "native"
    ESCAPED = "escaped"
    EXTENDED = "extended"


I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
# tsc_info is packed: uint32 mode, uint64 nsec, uint32 khz, uint32 incarnation (20 bytes)
TSC_INFO = struct.Struct("<IQII")
XSAVE_HEADER = struct.Struct("<QQ")  # xfeature_mask, size
# Legacy PV extended-info: char id[4], uint32 size, then size bytes
EXT_BLOCK = struct.Struct("<4sI")
EXT_VCPU = b"vcpu"
EXT_EXTV = b"extv"
EXT_XCNT = b"xcnt"
MAX_EXT_INFO = 1 << 20

# Body chunk ids (negative counts). Payload sizes of the fixed ones; others parsed by code.
CHUNK_NAMES: dict[int, str] = {
    -1: "enable_verify_mode",
    -2: "vcpu_info",
    -7: "tsc_info",
    -9: "last_checkpoint",
    -12: "compressed_data",
    -13: "enable_compression",
    -18: "toolstack",
}
HVM_CHUNKS = frozenset({-3, -4, -8, -10, -11, -14, -15, -16, -17, -19, -20})
HVM_CHUNK = struct.Struct("<IQ")  # uint32 pad, uint64 value
NO_PAYLOAD_CHUNKS = frozenset({-1, -9, -13})
MAX_TOOLSTACK = 1 << 20

# The toolstack chunk's payload: libxl's {uint32 version, uint32 count} then, per entry,
# struct libxl__physmap_info {uint64 phys_offset, start_addr, size; uint32 namelen;
# char name[]} padded by the writer's ABI (28 bytes on i386, 32 on amd64).
TOOLSTACK_HEADER = struct.Struct("<II")
PHYSMAP_FIELDS = struct.Struct("<QQQI")
MAX_PHYSMAP_NAME = 256

# -- The extended-info section (encoding "extended") --
# After the escape: blocks of {char id[4], uint16 flags, uint16 reserved, uint32 length},
# then length bytes. The first block must be "sinf"; the section ends with "end ".
XBLOCK = struct.Struct("<4sHHI")
XBLOCK_OPTIONAL = 0x0001  # a reader that does not know this block may skip it
XBLOCK_KNOWN_FLAGS = XBLOCK_OPTIONAL
MAX_XBLOCK = 1 << 16
MAX_XBLOCKS = 64
SINF = b"sinf"
XEND = b"end "
WRITER = b"wrtr"  # optional: JSON describing the writer (xsmig version, ABI, machine)

# sinf payload, version 1: uint8 word_size, uint8 byte_order, uint16 version,
# uint32 required_features, uint32 optional_features, uint32 guest_type.
SINF_V1 = struct.Struct("<BBHIII")
SINF_VERSION = 1
BYTE_ORDER_LITTLE = 0
BYTE_ORDER_BIG = 1
BYTE_ORDERS = ("little", "big")  # indexed by the sinf byte_order field
GUEST_X86_PV = 1
REQUIRED_FEATURES_KNOWN = 0  # no required feature is defined yet: any bit set is refused
