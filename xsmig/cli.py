"""The xsmig command line. Every expected failure is one line on stderr and a
documented exit status (see docs/cli.md); tracebacks only with XSMIG_DEBUG=1."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from xsmig import __version__
from xsmig.errors import DomainsDiffer, StateError, UsageError, XsmigError
from xsmig.layout import Layout
from xsmig.store import Store, check_name, default_store
from xsmig.stream.format import MAX_P2M_SIZE, Encoding
from xsmig.synth import SHAPES, GuestSpec, create

# canonical, inspect, restore and stream.writer are imported where used, not here: under
# QEMU every module costs start-up time, and a save need not load the restorer, nor a
# restore the saver (docs/performance.md).

PIPE_BYTES = 1 << 20
DEFAULT_MAX_PAGES = 1 << 20  # 4 GiB guests; raise with --max-pages or XSMIG_MAX_PAGES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every usage error
        raise UsageError(message)


def _common() -> _Parser:
    p = _Parser(add_help=False)
    p.add_argument("--store", type=Path, default=argparse.SUPPRESS,
                   help="domain store directory (default: $XSMIG_STORE or ~/.local/state/xsmig)")
    p.add_argument("--host-id", type=int, default=argparse.SUPPRESS,
                   help="this host's identity: which machine frames it hands out "
                        "(default: $XSMIG_HOST_ID or 0)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="xsmig", parents=[common],
                     description="Save and restore simulated Xen PV domains in native, escaped "
                                 "and extended-info streams, across 32- and 64-bit toolstacks.")
    parser.add_argument("--version", action="version", version=f"xsmig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = cmd("create", "create a deterministic synthetic guest")
    p.add_argument("name")
    p.add_argument("--pages", type=int, default=2048)
    p.add_argument("--guest-width", type=int, choices=(32, 64), default=64)
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--max-vcpu-id", type=int, default=None,
                   help="spread the vCPU ids up to this id (a sparse vCPU map)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", choices=SHAPES, default="standard")
    p.add_argument("--no-extended-state", action="store_true",
                   help="no extended vCPU contexts or xsave, as guests of the oldest savers")

    p = cmd("save", "write a domain's save stream")
    p.add_argument("name")
    p.add_argument("--encoding", required=True, choices=[e.value for e in Encoding])
    p.add_argument("-o", "--output", default="-", help="file, or - for stdout (default)")
    p.add_argument("--no-ext-info", action="store_true",
                   help="native only: omit extended info, as the oldest savers did")
    p.add_argument("--rounds", type=int, default=1,
                   help="resend a share of the pages in R-1 later rounds, as live migration")
    p.add_argument("--word-size", type=int, choices=(4, 8), default=None,
                   help="extended only: the width the sinf block declares (default: native)")
    p.add_argument("--toolstack", choices=("native", "i386", "amd64"), default="native",
                   help="ABI to write with (default: this interpreter's own)")

    p = cmd("restore", "restore a domain from a stream, detecting its encoding and width")
    p.add_argument("-i", "--input", default="-", help="file, or - for stdin (default)")
    p.add_argument("--name", default=None, help="name of the new domain (default: restored-N)")
    p.add_argument("--source-width", type=int, choices=(32, 64), default=None,
                   help="width of the toolstack that wrote a native stream, when it cannot be "
                        "told from the stream")
    p.add_argument("--profile", choices=("current", "legacy"), default="current",
                   help="legacy: behave as the toolstack before the fix (own-width native only)")
    p.add_argument("--max-pages", type=int, default=None,
                   help=f"refuse streams of more pages (default: $XSMIG_MAX_PAGES or "
                        f"{DEFAULT_MAX_PAGES})")
    p.add_argument("--toolstack", choices=("native", "i386", "amd64"), default="native")

    p = cmd("digest", "print the canonical digest of a domain")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="add a summary, as JSON")
    p.add_argument("--dump", type=Path, default=None,
                   help="also write a canonical dump usable by `xsmig diff`")

    p = cmd("diff", "list what differs between two domains (or a domain and a dump file)")
    p.add_argument("name")
    p.add_argument("other", help="a domain name, or a dump file written by digest --dump")

    p = cmd("inspect", "decode a stream without restoring it")
    p.add_argument("file", help="file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.add_argument("--source-width", type=int, choices=(32, 64), default=None)

    p = cmd("list", "list the domains in the store")
    p.add_argument("--json", action="store_true")
    p = cmd("destroy", "remove a domain")
    p.add_argument("name")
    p = cmd("host-info", "describe this interpreter's toolstack ABI")
    p.add_argument("--json", action="store_true")
    return parser


def _store(args: argparse.Namespace) -> Store:
    return Store(getattr(args, "store", None) or default_store())


def _host_id(args: argparse.Namespace) -> int:
    value = getattr(args, "host_id", None)
    if value is not None:
        return int(value)
    env = os.environ.get("XSMIG_HOST_ID", "0")
    try:
        return int(env)
    except ValueError:
        raise UsageError(f"XSMIG_HOST_ID={env!r} is not an integer") from None


def _layout(name: str) -> Layout:
    return {"native": Layout.native(), "i386": Layout.for_width(32),
            "amd64": Layout.for_width(64)}[name]


def _widen_pipe(f: BinaryIO) -> BinaryIO:
    """Ask for a 1 MiB pipe buffer (Linux): a 64 KiB pipe makes saver and restorer take
    turns many times per batch. Not a pipe, or not allowed: keep what there is."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return f


@contextlib.contextmanager
def _open_in(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield _widen_pipe(sys.stdin.buffer)
        return
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    with f:
        yield f


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[BinaryIO]:
    """stdout, or a file written aside and renamed, so a failed save leaves nothing."""
    if path == "-":
        yield _widen_pipe(sys.stdout.buffer)
        return
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        f = open(tmp, "wb")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    try:
        with f:
            yield f
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def run(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.command == "create":
        spec = GuestSpec(args.name, args.pages, args.guest_width, args.vcpus, args.max_vcpu_id,
                         args.seed, args.shape, not args.no_extended_state)
        check_name(args.name)
        spec.check()
        with store.writing(args.name) as domain:
            create(spec, domain, _host_id(args))
        print(args.name)
    elif args.command == "save":
        from xsmig.stream.writer import SaveOptions, save

        domain = store.get(args.name)
        opts = SaveOptions(Encoding(args.encoding), _layout(args.toolstack),
                           ext_info=not args.no_ext_info, rounds=args.rounds,
                           word_size=args.word_size)
        started = time.monotonic()
        with _open_out(args.output) as out:
            stats = save(domain, out, opts)
        if args.output != "-":
            print(f"{stats.bytes} bytes, {stats.pages_sent} pages in {stats.batches} batches, "
                  f"{time.monotonic() - started:.2f}s", file=sys.stderr)
    elif args.command == "restore":
        max_pages = args.max_pages
        if max_pages is None:
            env = os.environ.get("XSMIG_MAX_PAGES", str(DEFAULT_MAX_PAGES))
            try:
                max_pages = int(env)
            except ValueError:
                raise UsageError(f"XSMIG_MAX_PAGES={env!r} is not an integer") from None
        if not 0 < max_pages <= MAX_P2M_SIZE:
            raise UsageError(f"--max-pages must be between 1 and {MAX_P2M_SIZE}")
        name = check_name(args.name) if args.name is not None else store.unique_name("restored")
        from xsmig.restore import restore

        with _open_in(args.input) as source:
            restore(store, source, name=name, host_id=_host_id(args), profile=args.profile,
                    source_width=args.source_width, own=_layout(args.toolstack),
                    max_pages=max_pages)
        print(name)
    elif args.command == "digest":
        from xsmig.canonical import CanonicalDomain

        canonical = CanonicalDomain(store.get(args.name))
        if args.dump:
            dump = canonical.dump()
            args.dump.write_text(json.dumps(dump, sort_keys=True))
            digest = dump["digest"]
        else:
            digest = canonical.digest()
        if args.json:
            _emit({"digest": digest, **canonical.summary()})
        else:
            print(digest)
    elif args.command == "diff":
        from xsmig.canonical import CanonicalDomain, diff_dumps

        mine = CanonicalDomain(store.get(args.name)).dump()
        theirs = _load_other(store, args.other)
        differences = diff_dumps(mine, theirs)
        for line in differences:
            print(line)
        if differences:
            raise DomainsDiffer(f"{len(differences)} differences")
        print("same canonical state")
    elif args.command == "inspect":
        from xsmig.inspect import inspect_stream, render_text

        with _open_in(args.file) as source:
            report = inspect_stream(source, source_width=args.source_width)
        print(json.dumps(report, indent=2) if args.json else render_text(report))
    elif args.command == "list":
        rows = []
        for name in store.names():
            meta = store.get(name).read_meta()
            rows.append({"name": name, "guest_width": meta.guest_width,
                         "pages": meta.p2m_size, "vcpus": len(meta.vcpu_ids)})
        if args.json:
            _emit(rows)
        else:
            for row in rows:
                print(f"{row['name']:<32} {row['guest_width']}-bit {row['pages']:>9} pages "
                      f"{row['vcpus']:>4} vCPUs")
    elif args.command == "destroy":
        store.destroy(args.name)
    elif args.command == "host-info":
        info = host_info()
        if args.json:
            _emit(info)
        else:
            for key, value in info.items():
                print(f"{key:<16} {value}")
    return 0


def host_info() -> dict[str, Any]:
    native = Layout.native()
    return {"xsmig": __version__, "machine": platform.machine(),
            "python": platform.python_version(), "ulong_size": struct.calcsize("@L"),
            "u64_align": native.u64_align, "pointer_size": struct.calcsize("@P"),
            "byteorder": sys.byteorder}


def _load_other(store: Store, other: str) -> dict[str, Any]:
    from xsmig.canonical import DUMP_FORMAT, CanonicalDomain

    path = Path(other)
    if path.is_file():
        try:
            dump: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read dump {other}: {e}") from None
        if dump.get("format") != DUMP_FORMAT:
            raise UsageError(f"{other} is not an xsmig dump ({DUMP_FORMAT})")
        return dump
    return CanonicalDomain(store.get(other)).dump()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except XsmigError as e:
        if not isinstance(e, DomainsDiffer):
            print(f"xsmig: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (e.g. the restorer refused the stream): say so, once, and
        # point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("xsmig: error: output closed by the reader", file=sys.stderr)
        return StateError.exit_code
    except KeyboardInterrupt:
        print("xsmig: error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if os.environ.get("XSMIG_DEBUG"):
            raise
        print(f"xsmig: error: {e.strerror or e}", file=sys.stderr)
        return StateError.exit_code
    except Exception as e:  # a bug: still one line, but say it is one
        if os.environ.get("XSMIG_DEBUG"):
            raise
        print(f"xsmig: internal error: {type(e).__name__}: {e} (XSMIG_DEBUG=1 for a "
              "traceback)", file=sys.stderr)
        return 1
