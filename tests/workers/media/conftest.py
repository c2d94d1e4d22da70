"""Shared synthetic media, generated once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from synthetic import clips


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``media(kind, name, **kwargs)`` → path of a cached generated file.

    kind is "tone" (write_tone_segment) or "video" (write_video_segment).
    """
    root = tmp_path_factory.mktemp("media")
    cache: dict[str, Path] = {}

    def make(kind: str, name: str, **kwargs: object) -> Path:
        if name not in cache:
            writer = {"tone": clips.write_tone_segment, "video": clips.write_video_segment}
            cache[name] = writer[kind](root / name, **kwargs)  # type: ignore[operator]
        return cache[name]

    return make
