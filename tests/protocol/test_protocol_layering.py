"""Dependency rules: the codec never imports zmq; protocol never imports engines or sides."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN = ("jetsplit.engines", "jetsplit.edge", "jetsplit.cloud", "jetsplit.calibration", "jetsplit.tools")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(PROTOCOL.glob("*.py")), ids=lambda p: p.name)
def test_no_engine_or_side_imports(path: Path) -> None:
    bad = [name for name in _imports(path) if name.startswith(FORBIDDEN) or name == "pickle"]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("name", ["codec.py", "messages.py", "errors.py"])
def test_pure_modules_never_import_zmq(name: str) -> None:
    assert not {n for n in _imports(PROTOCOL / name) if n.split(".")[0] == "zmq"}
