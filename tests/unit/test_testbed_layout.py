"""The testbed's layout: subpackages in the order of the flow, and no import cycle.

Reads the imports from the source (ast, every import, lazy and TYPE_CHECKING ones
included), so a cycle hidden inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scenarios.arches
import testbed.images.arch
from xsmig.layout import ABIS

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("images", "hosts", "cells", "reports", "runs")  # each imports only earlier ones


def _imports(path: Path) -> set[str]:
    """Every module path `path` imports (absolute imports only: the project uses no others)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(package: str) -> dict[str, set[str]]:
    files = sorted((REPO / package).rglob("*.py"))
    modules = {_module(p): p for p in files}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in SUBPACKAGES else None


def test_subpackages_import_only_earlier_stages() -> None:
    order = {name: i for i, name in enumerate(SUBPACKAGES)}
    wrong = sorted(
        f"{m} -> {i}"
        for m, targets in _graph("testbed").items()
        for i in targets
        if (a := _subpackage(m)) and (b := _subpackage(i)) and order[b] > order[a]
    )
    assert wrong == []


def test_no_import_cycle_among_testbed_modules() -> None:
    graph = _graph("testbed")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n):], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_every_testbed_module_is_in_a_stage() -> None:
    top = {"testbed", "testbed.__main__", "testbed.errors", *(f"testbed.{s}" for s in SUBPACKAGES)}
    loose = sorted(m for m in _graph("testbed") if _subpackage(m) is None and m not in top)
    assert loose == []


def test_scenarios_do_not_import_the_testbed() -> None:
    offenders = sorted(
        f"{p.relative_to(REPO)}: {i}"
        for p in (REPO / "scenarios").rglob("*.py")
        for i in _imports(p)
        if i == "testbed" or i.startswith("testbed.")
    )
    assert offenders == []


def test_one_abi_vocabulary() -> None:
    """The testbed's architectures are xsmig's ABIs: same names, same order, same facts."""
    assert tuple(testbed.images.arch.ARCHES) == scenarios.arches.ARCHES == tuple(ABIS)
    for name, arch in testbed.images.arch.ARCHES.items():
        assert arch.abi is ABIS[name]


def test_hosts_are_used_only_through_the_facade() -> None:
    """No command reaches a host around the facade: no `docker exec` (exec_run) anywhere,
    and no module outside testbed/hosts/ builds an SSH host of its own."""
    offenders = sorted(
        str(p.relative_to(REPO))
        for d in ("testbed", "scenarios", "tests", "bench")
        for p in (REPO / d).rglob("*.py")
        if p != Path(__file__).resolve()
        and ("exec_run(" in p.read_text() or "docker exec" in p.read_text())
    )
    assert offenders == []
    builders = sorted(
        m for m, targets in _graph("testbed").items()
        if "testbed.hosts.ssh" in targets and not m.startswith("testbed.hosts")
        and m not in {"testbed.cells.domains", "testbed.cells.migrate", "testbed.cells.execute"}
    )
    assert builders == []  # cells name the Host type; only hosts/ makes one
