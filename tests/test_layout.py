"""The layout's rules, checked on the source: who may import whom, and what the image ships.

- The capture agent never imports the workers, and the workers never import the agent; they
  meet in ``shared`` (the contract) and in ``sessionpipe`` (the commands that drive both).
- ``shared`` and ``synthetic`` import neither side: both sides use them.
- The Docker image copies every package ``pyproject.toml`` installs.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from tests.support import ROOT

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "capture_agent": ("workers", "sessionpipe"),
    "workers": ("capture_agent", "sessionpipe"),
    "shared": ("workers", "capture_agent", "sessionpipe", "synthetic"),
    "synthetic": ("workers", "capture_agent", "sessionpipe"),
}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_the_layout_allows(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))
    ]
    assert bad == []


def test_the_image_copies_every_installed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = {p.rstrip("*") for p in patterns}
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert installed <= copied, f"Dockerfile does not copy {sorted(installed - copied)}"
