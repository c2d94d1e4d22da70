"""Helpers of the shipping tests: segment files, fast agent settings, events by type."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from capture_agent.settings import AgentSettings


def write_segment(path: Path, size: int, seed: int) -> Path:
    """A segment whose content does not matter to the test: deterministic bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    with path.open("wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def agent_settings(state: Path, storage: str, **overrides: Any) -> AgentSettings:
    """Fast retries and no heartbeats unless a test asks for them."""
    values: dict[str, Any] = {
        "state_dir": state,
        "storage": storage,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.5,
        "heartbeat_s": 3600.0,
        "idle_poll_s": 0.05,
        "receipt_poll_s": 0.1,
    }
    values.update(overrides)
    return AgentSettings(**values)


def by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]
