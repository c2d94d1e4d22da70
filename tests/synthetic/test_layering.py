"""``synthetic`` ships with the capture agent and the workers, so it imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import synthetic

FORBIDDEN = ("workers", "capture_agent")


def test_synthetic_imports_neither_workers_nor_capture_agent() -> None:
    package = Path(synthetic.__file__).parent
    bad = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert bad == []
