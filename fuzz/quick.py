"""The quick differential campaign: no atheris, no coverage guidance, deterministic.

`python -m fuzz --quick [N]` (and tests/unit/test_xsmig_quickfuzz.py in CI) runs
fuzz/target.py's check_one, with its verify and convert differentials, on the committed
corpus and then on N inputs derived from it with a seeded random source: legal
rewrites (fuzz/freedoms.py), byte edits biased to headers and tails, cuts, splices, and
rewrites edited afterwards. A failure raises with the input written to
crash-quick-<n> in the current directory, as libFuzzer writes its crashes."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from fuzz import freedoms
from fuzz.target import check_one

CORPUS = Path(__file__).resolve().parent / "corpus"


def _edit(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not out:
            break
        zone = rnd.choice([(0, min(len(out), 8192)), (max(0, len(out) - 24576), len(out)),
                           (0, len(out))])
        at = rnd.randrange(*zone) if zone[1] > zone[0] else 0
        how = rnd.randrange(3)
        if how == 0:
            out[at] = rnd.randrange(256)
        elif how == 1:
            out[at] ^= 1 << rnd.randrange(8)
        else:
            out[at:at + 4] = rnd.randbytes(4)
    return bytes(out)


def derive(rnd: random.Random, corpus: list[bytes], valid: list[bytes]) -> bytes:
    base = rnd.choice(corpus)
    how = rnd.randrange(6)
    if how == 0:
        return freedoms.rewrite(rnd.choice(valid), rnd)
    if how == 1:
        return _edit(rnd, freedoms.rewrite(rnd.choice(valid), rnd))
    if how == 2:
        return base[:rnd.randrange(len(base) + 1)]
    if how == 3:
        at = rnd.randrange(len(base) + 1)
        return base[:at] + rnd.randbytes(rnd.randrange(65)) + base[at + rnd.randrange(65):]
    return _edit(rnd, base)


def run(n: int, seed: int = 16) -> Counter[str]:
    """Check the corpus and `n` derived inputs; return the outcomes counted."""
    from fuzz.seeds import seeds

    corpus = [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()]
    valid = list(seeds().values())  # fresh: what this version's saver writes
    rnd = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="xsmig-quickfuzz-"))
    outcomes: Counter[str] = Counter()
    try:
        inputs = corpus + [derive(rnd, corpus, valid) for _ in range(n)]
        for i, data in enumerate(inputs):
            try:
                outcomes[check_one(data, root / "store")] += 1
            except BaseException:
                Path(f"crash-quick-{i}").write_bytes(data)
                raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return outcomes
