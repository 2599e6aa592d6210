"""`xsmig --version [--json]`: the version, and what it can do, as data.

The capabilities are read from xsmig's own tables (format.py's encodings, v2
framings and detection rows; the command line's subcommands), never kept by hand:
a release qualification (testbed/qualify.py) derives its expectations from them.
"""

from __future__ import annotations

import json
from typing import Any

from xsmig import __version__

SCHEMA = 1  # bumped when a key changes meaning; keys are only ever added


def capabilities() -> dict[str, Any]:
    from xsmig.cli import build_parser
    from xsmig.stream.detect import PROFILES
    from xsmig.stream.format import (
        DETECTION_RULES,
        V2_DEFAULT_FORMAT,
        Encoding,
        V2Format,
    )

    parser = build_parser()
    commands: list[str] = []
    for action in parser._actions:  # argparse has no public list of subcommands
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            commands = sorted(choices)
    return {
        "schema": SCHEMA,
        "name": "xsmig",
        "version": __version__,
        "encodings": [e.value for e in Encoding],
        "framings": [f.value for f in V2Format],  # v2 framings read and written
        "v2_writes": V2_DEFAULT_FORMAT.value,  # the framing a v2 save writes by default
        # the legacy xsave buffer: Xen's (u64 xcr0, u64 xcr0_accum, then the area);
        # releases before 0.3 wrote the area alone ("area")
        "legacy_xsave": "xen-buffer",
        "detection_rules": dict(DETECTION_RULES),
        "profiles": list(PROFILES),
        "commands": commands,
    }


def text(as_json: bool) -> str:
    if as_json:
        return json.dumps(capabilities(), indent=2, sort_keys=True)
    return f"xsmig {__version__}"
