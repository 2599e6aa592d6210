"""The xsmig command line. Every expected failure is one line on stderr and a
documented exit status (see docs/cli.md); tracebacks only with XSMIG_DEBUG=1."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import stat
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

from xsmig import __version__
from xsmig.errors import DomainsDiffer, StateError, UsageError, XsmigError
from xsmig.layout import ABIS, BYTE_ORDERS, Layout, abi, machine
from xsmig.store import Store, check_name, default_store, pid_alive
from xsmig.stream.format import MAX_P2M_SIZE, V2_DEFAULT_FORMAT, Encoding, V2Format
from xsmig.stream.io import PolledInput
from xsmig.synth import SHAPES, GuestSpec, create
from xsmig.validate import Invalid, load_meta

# canonical, inspect, restore and stream.writer are imported where used, not here: under
# QEMU every module costs start-up time, and a save need not load the restorer, nor a
# restore the saver (docs/performance.md).

PIPE_BYTES = 1 << 20
TOOLSTACKS = ("native", *ABIS)
DEFAULT_MAX_PAGES = 1 << 20  # 4 GiB guests; raise with --max-pages or XSMIG_MAX_PAGES
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds without a byte from the writer
MAX_DUMP_BYTES = 256 << 20  # diff's dump file: ~32 bytes per page of a 2^20-page guest is 32 MiB


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


def _idle_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="give up when the input sends nothing for this long, publishing "
                        f"nothing (default {DEFAULT_IDLE_TIMEOUT:g}; 0: wait forever)")


def _max_pages_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pages", type=int, default=None,
                   help=f"refuse streams of more pages (default: $XSMIG_MAX_PAGES or "
                        f"{DEFAULT_MAX_PAGES})")


def _max_pages(args: argparse.Namespace) -> int:
    """restore's cap, and verify's and convert's (so their verdicts are restore's)."""
    max_pages = args.max_pages
    if max_pages is None:
        env = os.environ.get("XSMIG_MAX_PAGES", str(DEFAULT_MAX_PAGES))
        try:
            max_pages = int(env)
        except ValueError:
            raise UsageError(f"XSMIG_MAX_PAGES={env!r} is not an integer") from None
    if not 0 < max_pages <= MAX_P2M_SIZE:
        raise UsageError(f"--max-pages must be between 1 and {MAX_P2M_SIZE}")
    return int(max_pages)


MAX_IDLE_TIMEOUT = 1e6  # seconds (11 days): poll() takes milliseconds in a C int


def _check_idle(seconds: float) -> None:
    if not 0 <= seconds <= MAX_IDLE_TIMEOUT:  # also refuses nan
        raise UsageError(f"--idle-timeout must be between 0 (no deadline) and "
                         f"{MAX_IDLE_TIMEOUT:g} seconds")


def _announce(name: str) -> None:
    """Print the new domain's name before it is published: if stdout's reader has gone,
    the restore fails and publishes nothing (exit status tells the truth)."""
    sys.stdout.write(name + "\n")
    sys.stdout.flush()


class _Unbuilt:
    """Stands in for the parser of a command this run does not take: under QEMU every
    add_argument costs start-up time, and a run parses one command's arguments."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `only` (the first argument, when it names a command), only
    that command's arguments are built: argparse picks it as the command, so the other
    commands' parsers are never looked at. Any other `only` builds them all."""
    common = _common()
    parser = _Parser(prog="xsmig", parents=[common],
                     description="Save and restore simulated Xen PV domains in native, escaped, "
                                 "extended-info and migration v2 streams, across 32- and "
                                 "64-bit toolstacks.")
    parser.add_argument("--version", action="version", version=f"xsmig {__version__}",
                        help="print the version and exit; with --json, also what this "
                             "version can do (encodings, framings, detection rules)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    built: list[str] = []

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return cast(argparse.ArgumentParser, _Unbuilt())
        built.append(name)
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
    _max_pages_option(p)
    p.add_argument("--physmap", type=int, default=2,
                   help="entries in libxl's physmap (toolstack data); 0: none (default 2)")

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
    p.add_argument("--toolstack", choices=TOOLSTACKS, default="native",
                   help="ABI to write with (default: this interpreter's own)")
    _v2_format_option(p)
    _live_options(p)

    p = cmd("run", "run the guest: dirty its pages at a rate until paused (xsmig/guest.py)")
    p.add_argument("name")
    p.add_argument("--dirty-rate", type=float, required=True, metavar="PAGES_PER_S",
                   help="counter pages written per second (0: as fast as it can)")
    p.add_argument("--seconds", type=float, default=None, help="pause after this long")
    p.add_argument("--detach", action="store_true",
                   help="run in the background; return once the guest runs")

    p = cmd("pause", "pause a running guest at a consistent point; print its state")
    p.add_argument("name")

    p = cmd("guest-check", "check the guest's counter pages; name the first stale one")
    p.add_argument("name")
    p.add_argument("--counter", type=int, default=None,
                   help="the counter at the pause (default: read off the first page)")
    p.add_argument("--position", type=int, default=None,
                   help="the working-set page the pass had reached at the pause")

    p = cmd("restore", "restore a domain from a stream, detecting its encoding and width")
    p.add_argument("-i", "--input", default="-", help="file, or - for stdin (default)")
    p.add_argument("--name", default=None, help="name of the new domain (default: restored-N)")
    p.add_argument("--source-width", type=int, choices=(32, 64), default=None,
                   help="width of the toolstack that wrote a native stream, when it cannot be "
                        "told from the stream")
    p.add_argument("--profile", choices=("current", "legacy"), default="current",
                   help="legacy: behave as the toolstack before the fix (own-width native only)")
    _max_pages_option(p)
    p.add_argument("--source-byte-order", choices=BYTE_ORDERS, default=None,
                   help="byte order of the toolstack that wrote a native stream, when it "
                        "cannot be told from the stream")
    p.add_argument("--toolstack", choices=TOOLSTACKS, default="native")
    _idle_option(p)

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
    p.add_argument("--source-byte-order", choices=BYTE_ORDERS, default=None)
    _idle_option(p)

    p = cmd("convert", "rewrite a stream in another encoding, guest state unchanged")
    p.add_argument("-i", "--input", default="-", help="file, or - for stdin (default)")
    p.add_argument("-o", "--output", default="-", help="file, or - for stdout (default)")
    p.add_argument("--to", required=True, choices=[e.value for e in Encoding],
                   help="the target encoding")
    p.add_argument("--from", dest="source_encoding", default=None,
                   choices=[e.value for e in Encoding],
                   help="refuse the input unless it is of this encoding (default: detect)")
    p.add_argument("--source-width", type=int, choices=(32, 64), default=None,
                   help="width of the toolstack that wrote a native input, as for restore")
    p.add_argument("--source-byte-order", choices=BYTE_ORDERS, default=None,
                   help="byte order of the toolstack that wrote a native input, as for restore")
    p.add_argument("--toolstack", choices=TOOLSTACKS, default="native",
                   help="ABI of a native target, and own width for reading a native input "
                        "(default: this interpreter's own)")
    p.add_argument("--word-size", type=int, choices=(4, 8), default=None,
                   help="extended target only: the width the sinf block declares")
    _v2_format_option(p)
    _max_pages_option(p)
    _idle_option(p)

    p = cmd("verify", "check a stream without restoring it (exit 0 only if valid)")
    p.add_argument("file", help="file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.add_argument("--source-width", type=int, choices=(32, 64), default=None)
    p.add_argument("--source-byte-order", choices=BYTE_ORDERS, default=None)
    p.add_argument("--toolstack", choices=TOOLSTACKS, default="native",
                   help="own width for native streams without extended info")
    p.add_argument("--profile", choices=("current", "legacy"), default="current",
                   help="the restore profile whose verdict to give (as restore --profile)")
    _max_pages_option(p)
    _idle_option(p)

    p = cmd("list", "list the domains in the store")
    p.add_argument("--json", action="store_true")
    p = cmd("destroy", "remove a domain")
    p.add_argument("name")
    p = cmd("host-info", "describe this interpreter's toolstack ABI")
    p.add_argument("--json", action="store_true")
    if only is not None and not built:  # not a command: argparse's own error, all choices
        return build_parser()
    return parser


def _live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--live", action="store_true",
                   help="pre-copy rounds over the running guest, then pause it (xsmig/live.py)")
    p.add_argument("--max-rounds", type=int, default=30,
                   help="--live: pause after this many rounds at most (default 30)")
    p.add_argument("--dirty-threshold", type=int, default=50, metavar="PAGES",
                   help="--live: pause once this few pages are dirty (default 50)")
    p.add_argument("--max-downtime", type=float, default=0.3, metavar="SECONDS",
                   help="--live: pause once the last round is estimated to fit (default 0.3)")


def _run_guest(args: argparse.Namespace, store: Store) -> None:
    from xsmig import guest

    files = guest.RunFiles(store.root, args.name)
    if args.command == "run":
        state = guest.run(store.get(args.name), files, args.dirty_rate, seconds=args.seconds,
                          detach=args.detach)
        print(json.dumps(state, sort_keys=True))
    elif args.command == "pause":
        store.get(args.name)
        paused = guest.pause(files)
        if paused is None:
            raise StateError(f"no guest of {args.name!r} has run")
        print(json.dumps(paused, sort_keys=True))
    else:
        print(json.dumps(guest.check(store.get(args.name), args.counter, args.position),
                         sort_keys=True))


def _store(args: argparse.Namespace) -> Store:
    return Store(getattr(args, "store", None) or default_store())


def _host_id(args: argparse.Namespace) -> int:
    value = getattr(args, "host_id", None)
    if value is None:
        env = os.environ.get("XSMIG_HOST_ID", "0")
        try:
            value = int(env)
        except ValueError:
            raise UsageError(f"XSMIG_HOST_ID={env!r} is not an integer") from None
    if not 0 <= value < 1 << 64:
        raise UsageError(f"host id {value} must be between 0 and 2^64-1")
    return int(value)


def _layout(name: str) -> Layout:
    return abi(name)


def _widen_pipe(f: BinaryIO) -> BinaryIO:
    """Ask for a 1 MiB pipe buffer (Linux): a 64 KiB pipe makes saver and restorer take
    turns many times per batch. Not a pipe, or not allowed: keep what there is."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return f


def _std_fd(fd: int, name: str) -> None:
    """A closed stdin/stdout is a state the user can fix, not an internal error."""
    try:
        os.fstat(fd)
    except OSError:
        raise StateError(f"{name} is closed") from None
    # Closed when the interpreter started (Python set sys.stdin/stdout to None), even if
    # the descriptor number has been reused since by a file we opened.
    if (sys.stdin if fd == 0 else sys.stdout) is None:
        raise StateError(f"{name} is closed")


_USAGE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                           errno.ELOOP})


@contextlib.contextmanager
def _open_in(path: str, idle: float | None = None) -> Iterator[BinaryIO]:
    """The input as a PolledInput: read straight from the descriptor, so that an idle
    writer can be told from a slow one (--idle-timeout)."""
    if path == "-":
        _std_fd(0, "stdin")
        _widen_pipe_fd(0)
        yield PolledInput(0, "stdin", idle)  # type: ignore[misc]
        return
    # With a deadline, open without blocking (a FIFO nobody writes to yet would block
    # the open itself, beyond poll's reach), then read blocking after each poll.
    nonblock = os.O_NONBLOCK if idle else 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | nonblock)
    except OSError as e:
        # A path that names nothing readable is the user's (exit 2); a refusal by the
        # system (permissions, I/O) is exit 5, as every other system error.
        kind = UsageError if e.errno in _USAGE_ERRNOS else StateError
        raise kind(f"cannot read {path}: {e.strerror}") from None
    try:
        if nonblock:
            os.set_blocking(fd, True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise UsageError(f"cannot read {path}: it is a directory")
        yield PolledInput(fd, path, idle)  # type: ignore[misc]
    finally:
        os.close(fd)


def _widen_pipe_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _partial_name(target: str, pid: int) -> str:
    head, base = os.path.split(target)
    return os.path.join(head, f".{base}.xsmig-{pid}.partial")


def _reap_partials(target: str) -> None:
    """Remove what killed saves to this same file left behind (their pid is in the name)."""
    head, base = os.path.split(target)
    prefix, suffix = f".{base}.xsmig-", ".partial"
    with contextlib.suppress(OSError):
        for entry in os.listdir(head or "."):
            pid = entry[len(prefix):-len(suffix)]
            if (entry.startswith(prefix) and entry.endswith(suffix) and pid.isdigit()
                    and pid.isascii() and len(pid) < 12 and not pid_alive(int(pid))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(head, entry))


def _write_failed(e: OSError, path: str) -> NoReturn:
    """An error writing the output names it; others (a domain file: has a filename) and
    a vanished reader (main's BrokenPipeError) pass through."""
    if isinstance(e, BrokenPipeError):
        if path == "stdout":
            raise e
        raise StateError(f"cannot write {path}: its reader has gone (broken pipe)") from None
    if e.filename:
        raise e
    raise StateError(f"cannot write {path}: {e.strerror or e}") from None


def _link_tmpfile(fd: int, dest: str) -> None:
    """Give an O_TMPFILE file a name. A dir_fd makes CPython call linkat() with
    AT_SYMLINK_FOLLOW (plain link() would not follow /proc/self/fd/N: EXDEV). Where
    that fails (no /proc, an emulator's /proc), copy the data to `dest` instead."""
    head, base = os.path.split(dest)
    dir_fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", base, dst_dir_fd=dir_fd, follow_symlinks=True)
        return
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
    finally:
        os.close(dir_fd)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size:
            done += os.sendfile(out, fd, done, size - done) or _short(dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise
    finally:
        os.close(out)


def _short(dest: str) -> NoReturn:
    raise OSError(errno.EIO, "short copy", dest)


FIFO_OPEN_TIMEOUT = DEFAULT_IDLE_TIMEOUT  # seconds to wait for a FIFO's reader to open it


def _open_through(path: str) -> int:
    """Open a FIFO or character device for writing, without O_CREAT or O_TRUNC. A FIFO
    nobody reads would block open() for good (an agent serving `digest --dump FIFO`
    with it): open without blocking, and wait for a reader at most FIFO_OPEN_TIMEOUT."""
    deadline = time.monotonic() + FIFO_OPEN_TIMEOUT
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            break
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise StateError(f"cannot write {path}: {e.strerror}") from None
            if time.monotonic() > deadline:
                raise StateError(f"cannot write {path}: no reader opened the FIFO in "
                                 f"{FIFO_OPEN_TIMEOUT:g} s") from None
            time.sleep(0.05)
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[BinaryIO]:
    """Where `save -o` writes, without ever clobbering what sits at the path:
    - `-`, a FIFO or a character device (/dev/null, /dev/stdout on a pipe): written
      through, never replaced;
    - a regular file, or nothing: written aside and renamed onto it at the end, so a
      failed save leaves the old file (or nothing). A symlink is followed: the file it
      points at is replaced, the link stays. The aside file is an unnamed O_TMPFILE
      linked in only at the end, so a killed save leaves nothing; where O_TMPFILE is
      not supported it is .NAME.xsmig-PID.partial, which the next save to NAME reaps;
    - a directory, a block device, a socket: refused before anything is written."""
    if path == "-":
        _std_fd(1, "stdout")
        yield _widen_pipe(sys.stdout.buffer)
        return
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise StateError(f"cannot write {path}: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot write {path}: it is a directory")
    if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        fd = _open_through(path)
        try:
            with os.fdopen(fd, "wb") as f:
                yield _widen_pipe(f)
        except OSError as e:
            _write_failed(e, path)
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"cannot write {path}: not a regular file, FIFO or character device")
    target = os.path.realpath(path) if os.path.islink(path) else path
    _reap_partials(target)
    partial = _partial_name(target, os.getpid())
    named = False
    try:
        fd = os.open(os.path.dirname(target) or ".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC,
                     0o666)  # RDWR: _link_tmpfile may have to copy it out
    except OSError:
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as e:  # read-only, no permission, no space: the system's (exit 5)
            raise StateError(f"cannot write {path}: {e.strerror}") from None
        named = True
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if not named:
                _link_tmpfile(f.fileno(), partial)
                named = True
        os.replace(partial, target)
    except OSError as e:
        _write_failed(e, path)
    finally:
        if named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# Commands whose product is what they print: a closed stdout fails them up front.
_PRINTS = frozenset({"create", "digest", "diff", "inspect", "list", "host-info"})


def run(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.command in _PRINTS:
        _std_fd(1, "stdout")
    if args.command == "create":
        spec = GuestSpec(args.name, args.pages, args.guest_width, args.vcpus, args.max_vcpu_id,
                         args.seed, args.shape, not args.no_extended_state, args.physmap)
        check_name(args.name)
        spec.check()
        max_pages = _max_pages(args)
        if spec.pages > max_pages:  # create's memory and disk follow the size: refuse early
            raise UsageError(f"--pages {spec.pages} exceeds this host's cap of {max_pages} "
                             "pages (--max-pages or XSMIG_MAX_PAGES)")
        with store.writing(args.name) as domain:
            create(spec, domain, _host_id(args))
        print(args.name)
    elif args.command == "save":
        from xsmig.stream.writer import SaveOptions, save

        domain = store.get(args.name)
        opts = SaveOptions(Encoding(args.encoding), _layout(args.toolstack),
                           ext_info=not args.no_ext_info, rounds=args.rounds,
                           word_size=args.word_size,
                           v2_format=_v2_format(args, Encoding(args.encoding)))
        live = None
        if args.live:
            from xsmig.guest import RunFiles
            from xsmig.live import LiveOptions, LiveRounds, check

            live_opts = LiveOptions(args.max_rounds, args.dirty_threshold, args.max_downtime)
            check(live_opts)
            if args.rounds != 1:
                raise UsageError("--rounds and --live do not go together")
            live = LiveRounds(RunFiles(store.root, args.name), live_opts)
        started = time.monotonic()
        with _open_out(args.output) as out:
            try:
                stats = save(domain, out, opts, live)
            except OSError as e:
                _write_failed(e, "stdout" if args.output == "-" else args.output)
        if args.output != "-":
            print(f"{stats.bytes} bytes, {stats.pages_sent} pages in {stats.batches} batches, "
                  f"{time.monotonic() - started:.2f}s", file=sys.stderr)
    elif args.command in ("run", "pause", "guest-check"):
        _run_guest(args, store)
    elif args.command == "restore":
        max_pages = _max_pages(args)
        if args.name is not None:
            check_name(args.name)
        _check_idle(args.idle_timeout)
        _std_fd(1, "stdout")  # the new name goes there: fail now, not after the stream
        from xsmig.restore import restore

        with _open_in(args.input, args.idle_timeout or None) as source:
            restore(store, source, name=args.name, host_id=_host_id(args),
                    profile=args.profile, source_width=args.source_width,
                    own=_layout(args.toolstack), max_pages=max_pages, announce=_announce,
                    source_byte_order=args.source_byte_order)
    elif args.command == "digest":
        from xsmig.canonical import CanonicalDomain

        canonical = CanonicalDomain(store.get(args.name))
        if args.dump:
            dump = canonical.dump()
            with _open_out(str(args.dump)) as out:  # never clobbers, as save -o
                out.write(json.dumps(dump, sort_keys=True).encode())
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
        try:
            differences = diff_dumps(mine, theirs)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a hand-made dump
            raise UsageError(f"{args.other} is not a valid xsmig dump: {type(e).__name__} "
                             f"{e}") from None
        for line in differences:
            print(line)
        if differences:
            raise DomainsDiffer(f"{len(differences)} differences")
        print("same canonical state")
    elif args.command == "inspect":
        from xsmig.inspect import inspect_stream, render_text

        _check_idle(args.idle_timeout)
        with _open_in(args.file, args.idle_timeout or None) as source:
            report = inspect_stream(source, source_width=args.source_width,
                                    source_byte_order=args.source_byte_order)
        print(json.dumps(report, indent=2) if args.json else render_text(report))
    elif args.command == "convert":
        return _convert(args)
    elif args.command == "verify":
        from xsmig.verify import render as render_verdict
        from xsmig.verify import verify_stream

        max_pages = _max_pages(args)
        _check_idle(args.idle_timeout)
        if args.json:
            _std_fd(1, "stdout")
        with _open_in(args.file, args.idle_timeout or None) as source:
            verdict = verify_stream(source, source_width=args.source_width,
                                    own=_layout(args.toolstack),
                                    source_byte_order=args.source_byte_order,
                                    max_pages=max_pages, profile=args.profile)
        for note in verdict["notes"]:
            print(f"xsmig: note: {note}", file=sys.stderr)
        if args.json:
            _emit(verdict)
        elif verdict["valid"]:
            print(render_verdict(verdict))
        if not verdict["valid"]:
            if not args.json:
                print(f"xsmig: error: {render_verdict(verdict)}", file=sys.stderr)
            return int(verdict["error"]["exit_code"])
    elif args.command == "list":
        rows: list[dict[str, Any]] = []
        for name in store.names():
            try:
                meta = load_meta(store.get(name))
            except Invalid as e:
                rows.append({"name": name, "corrupt": str(e)})
                continue
            rows.append({"name": name, "guest_width": meta.guest_width,
                         "pages": meta.p2m_size, "vcpus": len(meta.vcpu_ids)})
        if args.json:
            _emit(rows)
        else:
            for row in rows:
                if "corrupt" in row:
                    print(f"{row['name']:<32} corrupt: {row['corrupt']}")
                    continue
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


def _convert(args: argparse.Namespace) -> int:
    from xsmig.convert import convert

    target = Encoding(args.to)
    if args.word_size and target is not Encoding.EXTENDED:
        raise UsageError("--word-size 4|8 goes with --to extended only")
    expect = Encoding(args.source_encoding) if args.source_encoding else None
    max_pages = _max_pages(args)
    _check_idle(args.idle_timeout)
    if args.output == "-":  # before the input is opened: it could take descriptor 1
        _std_fd(1, "stdout")
    started = time.monotonic()
    with _open_in(args.input, args.idle_timeout or None) as source, \
            _open_out(args.output) as out:
        try:
            stats = convert(source, out, target, abi=_layout(args.toolstack),
                            word_size=args.word_size, source_width=args.source_width,
                            expect=expect, own=_layout(args.toolstack),
                            source_byte_order=args.source_byte_order, max_pages=max_pages,
                            v2_format=_v2_format(args, target))
        except OSError as e:
            _write_failed(e, "stdout" if args.output == "-" else args.output)
    if args.output != "-":
        print(f"{stats.source.value} -> {stats.target.value}: {stats.bytes_in} -> "
              f"{stats.bytes_out} bytes, {time.monotonic() - started:.2f}s", file=sys.stderr)
    return 0


def _v2_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--v2-format", choices=[f.value for f in V2Format], default=None,
                   help="v2 only: libxl (what xl sends, the default) or the bare libxc "
                        "stream, which cannot carry a physmap")


def _v2_format(args: argparse.Namespace, encoding: Encoding) -> V2Format:
    if args.v2_format is None:
        return V2_DEFAULT_FORMAT
    if encoding is not Encoding.V2:
        raise UsageError("--v2-format goes with v2 only")
    return V2Format(args.v2_format)


def host_info() -> dict[str, Any]:
    native = Layout.native()
    return {"xsmig": __version__, "machine": machine(),
            "python": ".".join(map(str, sys.version_info[:3])), "ulong_size": struct.calcsize("@L"),
            "u64_align": native.u64_align, "abi": native.name,
            "pointer_size": struct.calcsize("@P"),
            "byteorder": sys.byteorder}


def _load_other(store: Store, other: str) -> dict[str, Any]:
    from xsmig.canonical import DUMP_FORMAT, CanonicalDomain

    path = Path(other)
    if path.is_file():
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_DUMP_BYTES:
                    raise UsageError(f"dump {other} is larger than {MAX_DUMP_BYTES} bytes "
                                     "(a dump of the largest guest --max-pages allows is "
                                     "far smaller)")
                raw = f.read(MAX_DUMP_BYTES + 1)
            dump: dict[str, Any] = json.loads(raw)
        except (OSError, ValueError, RecursionError) as e:
            raise UsageError(f"cannot read dump {other}: {type(e).__name__}") from None
        if not isinstance(dump, dict) or dump.get("format") != DUMP_FORMAT:
            raise UsageError(f"{other} is not an xsmig dump ({DUMP_FORMAT})")
        return dump
    return CanonicalDomain(store.get(other)).dump()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _flush_stdout() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _version_request(argv: Sequence[str]) -> bool | None:
    """`--version` alone or with `--json` (either order): whether JSON is asked for."""
    if "--version" in argv and set(argv) <= {"--version", "--json"}:
        return "--json" in argv
    return None


def main(argv: Sequence[str] | None = None, *, own_stdout: bool = True) -> int:
    """Run one command. own_stdout=False (the agent): descriptor 1 is not ours to
    touch, so a broken pipe does not point it at /dev/null."""
    try:
        try:
            given = list(sys.argv[1:] if argv is None else argv)
            as_json = _version_request(given)
            if as_json is not None:
                from xsmig.version import text

                print(text(as_json))
                _flush_stdout()
                return 0
            first = given[0] if given and not given[0].startswith("-") else None
            args = build_parser(first).parse_args(given)
            code = run(args)
            _flush_stdout()  # a closed stdout fails here, under our handlers, not at exit
            return code
        except RecursionError:
            # Only input can nest this deep (a JSON value in a stream or a file): refuse it.
            raise StateError("input nested too deeply") from None
    except XsmigError as e:
        if not isinstance(e, DomainsDiffer):
            _say(f"xsmig: error: {e}")
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (e.g. the restorer refused the stream): say so, once.
        if own_stdout:
            _quiet_stdout()
        _say("xsmig: error: output closed by the reader")
        return StateError.exit_code
    except KeyboardInterrupt:
        _say("xsmig: error: interrupted")
        return 130
    except OSError as e:
        if os.environ.get("XSMIG_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        _say(f"xsmig: error: {e.strerror or e}{where}")
        return StateError.exit_code
    except Exception as e:  # a bug: still one line, but say it is one
        if os.environ.get("XSMIG_DEBUG"):
            raise
        _say(f"xsmig: internal error: {type(e).__name__}: {e} (XSMIG_DEBUG=1 for a "
             "traceback)")
        return 1


def _say(line: str) -> None:
    """One line on stderr; a closed stderr must not turn an error into a traceback."""
    if sys.stderr is None:  # closed stderr: print(file=None) would go to stdout
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(line, file=sys.stderr, flush=True)
