"""Imports point down only: flows → tasks → integrations → pathways (and radpath/ on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK = {"prefect", "httpx", "pynetdicom", "socket", "requests", "asyncio", "hl7apy", "sqlmodel", "sqlalchemy", "onnxruntime"}
FORBIDDEN = {
    "pathways": {"flows", "tasks", "integrations", "radpath"} | NETWORK,
    "integrations": {"flows", "tasks", "radpath", "prefect"},
    "tasks": {"flows", "radpath"},
    "flows": {"radpath"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[layer])
        for path in (ROOT / layer).rglob("*.py")
        if _imports(path) & FORBIDDEN[layer]
    }
    assert offenders == {}
