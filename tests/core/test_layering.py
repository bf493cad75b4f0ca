"""Dependency rules over the whole tree, read from the source (no imports run).

Each part may import only the parts below it::

    core (jetsplit/*.py, engines, demo)   <- protocol <- edge, cloud
    core                                   <- calibration
    everything but cli                     <- tools    <- cli

The codec stays pure (no zmq), nothing unpickles, torch is for ``make zoo`` only
(tools/zoo), the shipped code never imports the tests or the benchmarks, and the
tests and the benchmarks share only tests/support: neither imports the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("edge", "cloud", "protocol", "calibration", "tools")
# part -> the jetsplit parts it must not import (core may import nothing above it).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("edge", "cloud", "protocol", "calibration", "tools", "cli"),
    "protocol": ("engines", "edge", "cloud", "calibration", "tools", "cli"),
    "edge": ("cloud", "calibration", "tools", "cli"),
    "cloud": ("edge", "calibration", "tools", "cli"),
    "calibration": ("edge", "cloud", "protocol", "tools", "cli"),
    "tools": ("cli",),
    "cli": (),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "jetsplit":
        return "cli" if rel[1] == "cli" else "core"
    return rel[0]


def _shipped() -> Iterator[Path]:
    for top in ("jetsplit", *PARTS):
        yield from sorted((ROOT / top).rglob("*.py"))


SHIPPED = list(_shipped())
TESTS = sorted(p for p in (ROOT / "tests").rglob("*.py") if "support" not in p.relative_to(ROOT / "tests").parts)
SUPPORT = sorted((ROOT / "tests" / "support").rglob("*.py"))
BENCH = sorted((ROOT / "bench").rglob("*.py"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_tree_is_found() -> None:
    assert len(SHIPPED) > 80 and {_part(p) for p in SHIPPED} == {"core", "cli", *PARTS}
    assert TESTS and SUPPORT and BENCH


@pytest.mark.parametrize("path", SHIPPED, ids=_id)
def test_shipped_code_imports_only_parts_below_it(path: Path) -> None:
    part = _part(path)
    forbidden = tuple(f"jetsplit.{name}" for name in FORBIDDEN[part])
    bad = {n for n in _imports(path) if n.startswith(forbidden) and n.split(".")[1] in FORBIDDEN[part]}
    assert not bad, f"{_id(path)} ({part}) imports {sorted(bad)}"
    top = {n.split(".")[0] for n in _imports(path)}
    assert not top & {"tests", "bench", "pickle"}, f"{_id(path)} imports {sorted(top & {'tests', 'bench', 'pickle'})}"
    if "zoo" not in path.relative_to(ROOT).parts:
        assert "torch" not in top, f"{_id(path)} imports torch (only tools/zoo, for make zoo, may)"


@pytest.mark.parametrize("name", ["codec.py", "tensors.py", "payloads.py", "messages.py", "errors.py"])
def test_pure_protocol_modules_never_import_zmq(name: str) -> None:
    assert not {n for n in _imports(ROOT / "protocol" / name) if n.split(".")[0] == "zmq"}


# Loading a file by path is how a test once reached into bench/ (and bench into
# tests/conftest.py) without an import statement: not allowed either.
_LOADERS = ("spec_from_file_location", "run_path", "SourceFileLoader")


@pytest.mark.parametrize("path", TESTS + BENCH + SUPPORT, ids=_id)
def test_tests_and_bench_share_only_support(path: Path) -> None:
    names = _imports(path)
    if path in SUPPORT:
        bad = {n for n in names if n.startswith(("tests.", "bench")) and not n.startswith("tests.support")}
    elif path in BENCH:
        bad = {n for n in names if n.startswith("tests") and not n.startswith("tests.support")}
    else:
        bad = {n for n in names if n.split(".")[0] in ("bench", "machine")}
    assert not bad, f"{_id(path)} imports {sorted(bad)}"
    if path != Path(__file__):
        loads = [name for name in _LOADERS if name in path.read_text()]
        assert not loads, f"{_id(path)} loads a file by path ({loads}): import tests.support instead"


@pytest.mark.parametrize("path", TESTS + BENCH, ids=_id)
def test_no_bare_readline_on_a_process(path: Path) -> None:
    """A process's output is read through tests/support/daemons.Lines, whose waits
    have a timeout: a bare ``stdout.readline()`` hangs the run when the process
    hangs without printing."""
    if path != Path(__file__):
        assert "stdout.readline()" not in path.read_text(), f"{_id(path)}: use tests.support.daemons.Lines"
