"""Helpers of the media engine tests."""

from __future__ import annotations

from pathlib import Path


def leftovers(directory: Path) -> list[str]:
    """Files a failed stage must not leave behind (outputs and temp files)."""
    return sorted(p.name for p in directory.iterdir())
