"""The stream family's constants and record layouts, described as data.

Legacy facts follow Xen 4.5's libxc (see docs/stream-format.md); the extended-info
section is xsmig's design of the mail's second proposal; v2 follows Xen's
libxc-migration-stream spec, revision 3. Every chunk id and record type has a name
here and is described once, in `LEGACY_CHUNKS` and `V2_RECORDS`: the reader, the
writers, inspect, verify, the golden tests and the scenarios use these tables."""

from __future__ import annotations

import struct
from enum import Enum, StrEnum
from typing import NamedTuple

ESCAPE = 0xFFFFFFFF  # first 4 bytes of escaped and extended streams
MAX_P2M_SIZE = 0x0FFFFFFF  # Xen's saver refuses more: why an escape can never be a p2m_size
MAX_BATCH = 1024
PAGE_SIZE = 4096


class Encoding(StrEnum):
    NATIVE = "native"
    ESCAPED = "escaped"
    EXTENDED = "extended"
    V2 = "v2"


LEGACY_ENCODINGS = (Encoding.NATIVE, Encoding.ESCAPED, Encoding.EXTENDED)
# The detection table (docs/stream-format.md, section 7 and 9): rule id -> what it
# decides. detect.py and byteorder.py name every decision by these rows, and
# `xsmig --version --json` lists them, so a release's rules are data, not prose.
DETECTION_RULES: dict[str, str] = {
    "L": "legacy profile, own width assumed",
    "R0": "v2 image header (marker, XENF): bare libxc",
    "R0L": "libxl header (LibxlFmt), the libxc stream inside",
    "R0X": "xl save file header",
    "R1": "escape then sinf block",
    "R2": "escape then 64-bit p2m_size",
    "R3": "bytes 4-7 are the 32-bit ext-info signature",
    "R4": "bytes 4-7 zero, then the 64-bit ext-info signature",
    "R5": "bytes 4-7 non-zero: 32-bit, no ext-info",
    "R6": "bytes 4-7 zero, no extended info",
    "R7": "width from --source-width",
    "B1": "byte order: the one in which the first bytes make sense as a native stream",
    "B2": "escape then big-endian 64-bit p2m_size",
    "B3": "big-endian 32-bit, ext-info signature",
    "B4": "big-endian, bytes 0-3 zero: 64-bit",
    "B5": "big-endian 32-bit, no ext-info",
}


def rule(rule_id: str) -> str:
    """A detection row as decisions name it: `R0: v2 image header (marker, XENF)`."""
    return f"{rule_id}: {DETECTION_RULES[rule_id]}"


I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
# tsc_info is packed: uint32 mode, uint64 nsec, uint32 khz, uint32 incarnation (20 bytes)
TSC_INFO = struct.Struct("<IQII")
XSAVE_HEADER = struct.Struct("<QQ")  # xfeature_mask, size; then Xen's xsave buffer (below)
# The `size` bytes after XSAVE_HEADER are the buffer XEN_DOMCTL_getvcpuextstate returns:
# u64 xcr0, u64 xcr0_accum (every feature the vCPU ever enabled: a superset of xcr0), then
# the xsave area. xcnt = size + 16. v2's X86_PV_VCPU_XSAVE body is the same buffer.
XSAVE_BUFFER_HDR = struct.Struct("<QQ")  # xcr0, xcr0_accum
XSAVE_RECORD_HDR = 32  # xcnt less the area: xfeature_mask, size, xcr0, xcr0_accum
XCR0_X87 = 0x1  # architecturally always set in xcr0 (XSETBV faults otherwise)
# The simulated hosts' XCR0 feature mask (x87, SSE, AVX, MPX bounds/csr, AVX-512 x3, PKRU):
# what a legacy saver writes as xfeature_mask. Xen 4.5 takes it from the hypervisor.
HOST_XFEATURE_MASK = 0x2FF
# Legacy PV extended-info: char id[4], uint32 size, then size bytes
EXT_BLOCK = struct.Struct("<4sI")
EXT_VCPU = b"vcpu"
EXT_EXTV = b"extv"
EXT_XCNT = b"xcnt"
MAX_EXT_INFO = 1 << 20

# -- Legacy body chunks: a negative int32 id, then a payload of a fixed kind --


class Payload(Enum):
    NONE = "none"  # nothing follows the id
    VCPU_INFO = "int32 max_vcpu_id, u64 map[max_vcpu_id / 64 + 1]"
    TSC_INFO = "packed u32 mode, u64 nsec, u32 khz, u32 incarnation"
    TOOLSTACK = "u32 length, then libxl's physmap records"
    HVM_VALUE = "u32 pad, u64 value"
    COMPRESSED = "ulong length, then compressed pages (Remus)"


class Chunk(NamedTuple):
    id: int
    name: str
    payload: Payload
    supported: bool = True  # False: understood but refused (Remus compression)


CHUNK_ENABLE_VERIFY_MODE = -1
CHUNK_VCPU_INFO = -2
CHUNK_HVM_IDENT_PT = -3
CHUNK_HVM_VM86_TSS = -4
CHUNK_TSC_INFO = -7
CHUNK_HVM_CONSOLE_PFN = -8
CHUNK_LAST_CHECKPOINT = -9
CHUNK_HVM_ACPI_IOPORTS_LOCATION = -10
CHUNK_HVM_VIRIDIAN = -11
CHUNK_COMPRESSED_DATA = -12
CHUNK_ENABLE_COMPRESSION = -13
CHUNK_HVM_GENERATION_ID_ADDR = -14
CHUNK_HVM_PAGING_RING_PFN = -15
CHUNK_HVM_MONITOR_RING_PFN = -16
CHUNK_HVM_SHARING_RING_PFN = -17
CHUNK_TOOLSTACK = -18
CHUNK_HVM_IOREQ_SERVER_PFN = -19
CHUNK_HVM_NR_IOREQ_SERVER_PAGES = -20
BODY_END = 0  # a zero count ends the body

LEGACY_CHUNKS: dict[int, Chunk] = {c.id: c for c in [
    Chunk(CHUNK_ENABLE_VERIFY_MODE, "enable_verify_mode", Payload.NONE),
    Chunk(CHUNK_VCPU_INFO, "vcpu_info", Payload.VCPU_INFO),
    Chunk(CHUNK_HVM_IDENT_PT, "hvm_ident_pt", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_VM86_TSS, "hvm_vm86_tss", Payload.HVM_VALUE),
    Chunk(CHUNK_TSC_INFO, "tsc_info", Payload.TSC_INFO),
    Chunk(CHUNK_HVM_CONSOLE_PFN, "hvm_console_pfn", Payload.HVM_VALUE),
    Chunk(CHUNK_LAST_CHECKPOINT, "last_checkpoint", Payload.NONE),
    Chunk(CHUNK_HVM_ACPI_IOPORTS_LOCATION, "hvm_acpi_ioports_location", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_VIRIDIAN, "hvm_viridian", Payload.HVM_VALUE),
    Chunk(CHUNK_COMPRESSED_DATA, "compressed_data", Payload.COMPRESSED, supported=False),
    Chunk(CHUNK_ENABLE_COMPRESSION, "enable_compression", Payload.NONE, supported=False),
    Chunk(CHUNK_HVM_GENERATION_ID_ADDR, "hvm_generation_id_addr", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_PAGING_RING_PFN, "hvm_paging_ring_pfn", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_MONITOR_RING_PFN, "hvm_monitor_ring_pfn", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_SHARING_RING_PFN, "hvm_sharing_ring_pfn", Payload.HVM_VALUE),
    Chunk(CHUNK_TOOLSTACK, "toolstack", Payload.TOOLSTACK),
    Chunk(CHUNK_HVM_IOREQ_SERVER_PFN, "hvm_ioreq_server_pfn", Payload.HVM_VALUE),
    Chunk(CHUNK_HVM_NR_IOREQ_SERVER_PAGES, "hvm_nr_ioreq_server_pages", Payload.HVM_VALUE),
]}
# Kept for readers of the older names.
CHUNK_NAMES: dict[int, str] = {i: c.name for i, c in LEGACY_CHUNKS.items()
                               if c.payload is not Payload.HVM_VALUE}
HVM_CHUNKS = frozenset(i for i, c in LEGACY_CHUNKS.items() if c.payload is Payload.HVM_VALUE)
HVM_CHUNK = struct.Struct("<IQ")  # uint32 pad, uint64 value
NO_PAYLOAD_CHUNKS = frozenset(i for i, c in LEGACY_CHUNKS.items() if c.payload is Payload.NONE)

# What a sink is told, whatever the encoding: names of the events that carry domain state.
EV_VCPU_INFO = "vcpu_info"  # value: sorted list of online vCPU ids
EV_TSC_INFO = "tsc_info"  # value: TscInfo
EV_TOOLSTACK = "toolstack"  # value: (version, [PhysmapEntry])
EV_VCPU_MSRS = "x86_pv_vcpu_msrs"  # value: (vcpu_id, number of MSR entries)
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
# sinf required features: what a reader must understand to restore the stream right; a
# reader refuses any bit it does not know (so did every earlier release), which is how
# the extended-info block keeps a staged roll-out safe (the mail's "feature flags").
SINF_REQ_XEN_XSAVE = 0x0001  # the xsave buffers are Xen's (xcr0, xcr0_accum, then the
# area), written since 0.3.0; 0.1.0 and 0.2.0 read the area alone, would misread the
# buffer and refuse the bit instead. Set whenever the stream carries xsave state.
REQUIRED_FEATURES_KNOWN = SINF_REQ_XEN_XSAVE


# -- Migration v2 (Xen 4.6+; libxc-migration-stream.pandoc, revision 3) --
# Image header, always big-endian: u64 marker, u32 id, u32 version, u16 options,
# u16 + u32 reserved. Domain header and records: the byte order the options say
# (xsmig writes and reads little-endian; big-endian is refused).
V2_IHDR = struct.Struct(">QIIHHI")
V2_MARKER = 0xFFFFFFFFFFFFFFFF
V2_ID = 0x58454E46  # "XENF"
# Written: version 2, as the simulated Xen 4.6 wrote (and Xen's own verify-stream-v2 of
# that era accepts no other); 2 and 3 are read. A v2 stream has no STATIC_DATA_END: the
# restorer infers it at X86_PV_P2M_FRAMES.
V2_VERSION = 2
V2_VERSIONS = (2, 3)
V2_OPT_BIG_ENDIAN = 0x0001
V2_OPT_RESERVED = 0xFFFE
V2_DHDR = struct.Struct("<IHHII")  # type, page_shift, reserved, xen_major, xen_minor
V2_DOMAIN_X86_PV = 1
V2_DOMAIN_TYPES = {0x1: "x86 PV", 0x2: "x86 HVM", 0x3: "x86 PVH", 0x4: "ARM"}
V2_PAGE_SHIFT = 12
# The simulated hypervisor of a v2 save is Xen 4.6, the first release writing v2. The
# converter writes xen_major 0 and its own version as xen_minor, as the spec asks.
V2_XEN_VERSION = (4, 6)
V2_CONVERTER_VERSION = (0, 1)
V2_RHDR = struct.Struct("<II")  # type, body_length; then body, zero padding to 8
V2_ALIGN = 8
V2_OPTIONAL = 0x80000000  # bit 31 of a record type: a reader may ignore the record

REC_END = 0x00
REC_PAGE_DATA = 0x01
REC_X86_PV_INFO = 0x02
REC_X86_PV_P2M_FRAMES = 0x03
REC_X86_PV_VCPU_BASIC = 0x04
REC_X86_PV_VCPU_EXTENDED = 0x05
REC_X86_PV_VCPU_XSAVE = 0x06
REC_SHARED_INFO = 0x07
REC_X86_TSC_INFO = 0x08
REC_HVM_CONTEXT = 0x09
REC_HVM_PARAMS = 0x0A
REC_TOOLSTACK = 0x0B
REC_X86_PV_VCPU_MSRS = 0x0C
REC_VERIFY = 0x0D
REC_CHECKPOINT = 0x0E
REC_CHECKPOINT_DIRTY_PFN_LIST = 0x0F
REC_STATIC_DATA_END = 0x10
REC_X86_CPUID_POLICY = 0x11
REC_X86_MSR_POLICY = 0x12
# Read, never written: earlier xsmig versions carried libxl's toolstack data (physmap) in
# this private optional record (u32 version, u32 count, physmap records packed to 28 +
# namelen bytes). Xen's verifier refuses any record it does not know, so xsmig now
# writes the physmap as libxl does (EMULATOR_XENSTORE_DATA, below); reading the old
# record keeps those streams restoring whole.
REC_XSMIG_TOOLSTACK = V2_OPTIONAL | 0x78736D  # "xsm"


class Role(Enum):
    """What a record means for an x86 PV stream (the reader's dispatch)."""

    END = "end"
    PAGES = "pages"
    PV_INFO = "pv_info"
    P2M_FRAMES = "p2m_frames"
    VCPU = "vcpu"
    SHARED_INFO = "shared_info"
    TSC_INFO = "tsc_info"
    SIGNAL = "signal"  # zero-length markers: VERIFY, CHECKPOINT
    STATIC_END = "static_end"
    STATIC = "static"  # static data the simulated host accepts as is (CPU policies)
    TOOLSTACK = "toolstack"  # earlier xsmig versions' physmap record (read only)
    NOT_PV = "not_pv"  # valid in the spec, not in an x86 PV forward stream
    DEPRECATED = "deprecated"


class Record(NamedTuple):
    type: int
    name: str
    role: Role
    body: struct.Struct | None = None  # fixed part of the body, when there is one
    exact: int | None = None  # the body's exact length, when fixed
    max_length: int = 1 << 20  # a bound checked before reading


V2_VCPU_HDR = struct.Struct("<II")  # vcpu_id, reserved
V2_PAGE_DATA_HDR = struct.Struct("<II")  # count, reserved
V2_PV_INFO = struct.Struct("<BBHI")  # guest_width (bytes), pt_levels, reserved, reserved
V2_P2M_FRAMES_HDR = struct.Struct("<II")  # p2m_start_pfn, p2m_end_pfn; then u64 pfns
V2_TSC_INFO = struct.Struct("<IIQII")  # mode, khz, nsec, incarnation, reserved
V2_XSAVE_HDR = struct.Struct("<QQ")  # xcr0, xcr0_accum: Xen's PV_XSAVE_HDR, then the area
V2_MSR = struct.Struct("<IIQ")  # index, reserved, value
V2_TYPE_SHIFT = 60  # PAGE_DATA pfn words: type nibble in bits 63-60
V2_PFN_MASK = (1 << 52) - 1  # pfn in bits 51-0
V2_PFN_RESERVED = ((1 << 60) - 1) & ~V2_PFN_MASK  # bits 59-52
MAX_V2_VCPU_BYTES = 64 << 20  # vCPU records are kept until END: bound them all

V2_RECORDS: dict[int, Record] = {r.type: r for r in [
    Record(REC_END, "END", Role.END, exact=0),
    # No fixed bound: the length must equal 8 + 8 * count + 4096 * pages-with-data, checked
    # once the pfns are read (count bounded by the p2m first), before any page is read.
    Record(REC_PAGE_DATA, "PAGE_DATA", Role.PAGES, V2_PAGE_DATA_HDR, max_length=0xFFFFFFFF),
    Record(REC_X86_PV_INFO, "X86_PV_INFO", Role.PV_INFO, V2_PV_INFO, exact=V2_PV_INFO.size),
    Record(REC_X86_PV_P2M_FRAMES, "X86_PV_P2M_FRAMES", Role.P2M_FRAMES, V2_P2M_FRAMES_HDR,
           max_length=V2_P2M_FRAMES_HDR.size + 8 * (MAX_P2M_SIZE // 512 + 1)),
    Record(REC_X86_PV_VCPU_BASIC, "X86_PV_VCPU_BASIC", Role.VCPU, V2_VCPU_HDR,
           max_length=8 + 5168),
    Record(REC_X86_PV_VCPU_EXTENDED, "X86_PV_VCPU_EXTENDED", Role.VCPU, V2_VCPU_HDR,
           max_length=8 + 128),
    Record(REC_X86_PV_VCPU_XSAVE, "X86_PV_VCPU_XSAVE", Role.VCPU, V2_VCPU_HDR,
           max_length=8 + MAX_EXT_INFO),
    Record(REC_SHARED_INFO, "SHARED_INFO", Role.SHARED_INFO, exact=PAGE_SIZE),
    Record(REC_X86_TSC_INFO, "X86_TSC_INFO", Role.TSC_INFO, V2_TSC_INFO, exact=V2_TSC_INFO.size),
    Record(REC_HVM_CONTEXT, "HVM_CONTEXT", Role.NOT_PV),
    Record(REC_HVM_PARAMS, "HVM_PARAMS", Role.NOT_PV),
    Record(REC_TOOLSTACK, "TOOLSTACK", Role.DEPRECATED),
    Record(REC_X86_PV_VCPU_MSRS, "X86_PV_VCPU_MSRS", Role.VCPU, V2_VCPU_HDR,
           max_length=8 + 4096 * V2_MSR.size),
    Record(REC_VERIFY, "VERIFY", Role.SIGNAL, exact=0),
    Record(REC_CHECKPOINT, "CHECKPOINT", Role.SIGNAL, exact=0),
    Record(REC_CHECKPOINT_DIRTY_PFN_LIST, "CHECKPOINT_DIRTY_PFN_LIST", Role.NOT_PV),
    Record(REC_STATIC_DATA_END, "STATIC_DATA_END", Role.STATIC_END, exact=0),
    Record(REC_X86_CPUID_POLICY, "X86_CPUID_POLICY", Role.STATIC),
    Record(REC_X86_MSR_POLICY, "X86_MSR_POLICY", Role.STATIC),
    Record(REC_XSMIG_TOOLSTACK, "XSMIG_TOOLSTACK", Role.TOOLSTACK, max_length=MAX_TOOLSTACK),
]}


def v2_record_name(rtype: int) -> str:
    record = V2_RECORDS.get(rtype)
    if record:
        return record.name
    return f"{'optional' if rtype & V2_OPTIONAL else 'mandatory'} record {rtype:#x}"


def v2_padding(length: int) -> int:
    return -length % V2_ALIGN


# -- The libxl stream around the libxc one (libxl-migration-stream.pandoc, version 2) --
# What `xl migrate` and `xl save` send: a header, then records framed as v2's are (u32
# type, u32 body_length, body, zero padding to 8). LIBXC_CONTEXT (empty) hands the stream
# to libxc: its whole stream follows, up to and including its END; then libxl's records
# resume. The legacy toolstack chunk's physmap travels as EMULATOR_XENSTORE_DATA.


class V2Format(StrEnum):
    """The framing of a v2 stream: `--v2-format`."""

    LIBXL = "libxl"  # what xl sends: the libxc stream inside libxl records (the default)
    LIBXC = "libxc"  # the bare libxc stream: no physmap


V2_DEFAULT_FORMAT = V2Format.LIBXL  # what a v2 save or convert writes without --v2-format


LIBXL_HDR = struct.Struct(">QII")  # ident, version, options: always big-endian
LIBXL_IDENT = 0x4C6962786C466D74  # "LibxlFmt"
LIBXL_VERSION = 2
LIBXL_OPT_BIG_ENDIAN = 0x1
LIBXL_OPT_LEGACY = 0x2  # the stream was converted from a legacy one
LIBXL_OPT_RESERVED = 0xFFFFFFFC
LIBXL_EMULATOR_HDR = struct.Struct("<II")  # emulator_id, index
EMULATOR_UNKNOWN = 0  # "in the case of a legacy stream": what Xen's converter writes
EMULATOR_IDS = {0: "unknown", 1: "qemu-traditional", 2: "qemu-upstream"}

LREC_END = 0x0
LREC_LIBXC_CONTEXT = 0x1
LREC_EMULATOR_XENSTORE_DATA = 0x2
LREC_EMULATOR_CONTEXT = 0x3
LREC_CHECKPOINT_END = 0x4
LREC_CHECKPOINT_STATE = 0x5


class LibxlRole(Enum):
    END = "end"
    LIBXC = "libxc"  # the libxc stream follows
    XENSTORE = "xenstore"  # emulator header, then NUL-terminated key, value, key, value...
    NOT_PV = "not_pv"  # an emulator's context: HVM only
    CHECKPOINT = "checkpoint"  # Remus/COLO: refused, as the legacy compressed chunks are


class LibxlRecord(NamedTuple):
    type: int
    name: str
    role: LibxlRole
    exact: int | None = None
    min_length: int = 0
    max_length: int = 1 << 20


LIBXL_RECORDS: dict[int, LibxlRecord] = {r.type: r for r in [
    LibxlRecord(LREC_END, "END", LibxlRole.END, exact=0),
    LibxlRecord(LREC_LIBXC_CONTEXT, "LIBXC_CONTEXT", LibxlRole.LIBXC, exact=0),
    LibxlRecord(LREC_EMULATOR_XENSTORE_DATA, "EMULATOR_XENSTORE_DATA", LibxlRole.XENSTORE,
                min_length=LIBXL_EMULATOR_HDR.size, max_length=MAX_TOOLSTACK),
    LibxlRecord(LREC_EMULATOR_CONTEXT, "EMULATOR_CONTEXT", LibxlRole.NOT_PV,
                min_length=LIBXL_EMULATOR_HDR.size),
    LibxlRecord(LREC_CHECKPOINT_END, "CHECKPOINT_END", LibxlRole.CHECKPOINT, exact=0),
    LibxlRecord(LREC_CHECKPOINT_STATE, "CHECKPOINT_STATE", LibxlRole.CHECKPOINT),
]}

# The physmap as xenstore keys, as Xen's convert-legacy-stream writes them: per entry, in
# the toolstack chunk's order, `physmap/<phys_offset hex>/start_addr` = start (hex),
# `.../size` = size (hex), `.../name` = the name without its NUL. Lower-case hex, no 0x.
PHYSMAP_KEY = "physmap/{:x}/{}"
PHYSMAP_FIELDS_KV = ("start_addr", "size", "name")
PHYSMAP_TOOLSTACK_VERSION = 1  # libxl's toolstack data version: the only one it wrote

# -- An `xl save` file: xl's header, the domain config, then the stream --
# char magic[32]; then u32 byteorder (0x01020304 in the writer's order), mandatory_flags,
# optional_flags, optional_data_len (xl_saverestore.c); then optional_data_len bytes:
# u32 config_len and the config (JSON when mandatory flag 1). Mandatory flag 2: the
# stream is a libxl (v2) one; without it, a legacy stream.
XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
XL_HDR = struct.Struct("<IIII")
XL_BYTEORDER = 0x01020304
XL_FLAG_JSON = 0x1
XL_FLAG_STREAMV2 = 0x2
XL_FLAGS_KNOWN = XL_FLAG_JSON | XL_FLAG_STREAMV2
MAX_XL_OPTIONAL = 1 << 20


def libxl_record_name(rtype: int) -> str:
    record = LIBXL_RECORDS.get(rtype)
    return record.name if record else f"libxl record {rtype:#x}"
