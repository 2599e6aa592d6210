"""`python -m fuzz [libFuzzer options]`: the coverage-guided campaign (atheris).

    python -m fuzz -max_total_time=900                       # 15 minutes (tox -e fuzz)
    python -m fuzz -max_total_time=900 NEW_DIR fuzz/corpus   # the same; finds go to NEW_DIR
    python -m fuzz --write-seeds                          # (re)write the seed corpus
    python -m fuzz --quick [N]   # no atheris: the corpus + N derived inputs (fuzz/quick.py)

Crashes (any exception other than an XsmigError, or a broken invariant of
fuzz/target.py) are written by libFuzzer as crash-<sha1> in the current directory."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SCRATCH = CORPUS.parents[1] / ".cache" / "fuzz-corpus"


def write_seeds() -> None:
    from fuzz.seeds import seeds
    CORPUS.mkdir(exist_ok=True)
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)


def main() -> None:
    if "--write-seeds" in sys.argv:
        write_seeds()
        return
    if "--quick" in sys.argv:
        from fuzz.quick import run
        rest = sys.argv[sys.argv.index("--quick") + 1:]
        outcomes = run(int(rest[0]) if rest else 500)
        print(f"quick campaign: {sum(outcomes.values())} inputs, no failure: "
              f"{dict(sorted(outcomes.items()))}")
        return
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    with atheris.instrument_imports(include=["xsmig"]):
        from fuzz.target import check_one
    root = Path(tempfile.mkdtemp(prefix="xsmig-fuzz-"))

    def one(data: bytes) -> None:
        store = root / "store"
        try:
            check_one(data, store)
        finally:
            shutil.rmtree(store, ignore_errors=True)

    # libFuzzer re-runs argv[0] through the shell for -merge, -fork and -jobs: make it a
    # command that works from anywhere.
    args = [f"env PYTHONPATH={CORPUS.parents[1]} {sys.executable} -m fuzz", *sys.argv[1:]]
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:  # new finds go to a scratch directory; the committed seeds stay as they are
        dirs = [str(SCRATCH), str(CORPUS)]
        args += dirs
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
    if not any(a.startswith("-max_len") for a in args):
        args.append("-max_len=131072")
    if not any(a.startswith("-dict") for a in args):
        args.append(f"-dict={CORPUS.parent / 'xsmig.dict'}")
    atheris.Setup(args, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
