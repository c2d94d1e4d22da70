"""The shared vocabulary: clock, backoff, diagnostics and the temp-then-rename helper."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.atomicfile import (
    TEMP_MARK,
    atomic_path,
    atomic_write_text,
    stale_temps,
    temp_path,
)
from shared.backoff import backoff_seconds
from shared.clock import as_utc, utcnow
from shared.diagnostics import describe, redact


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_as_utc_takes_naive_as_utc_and_converts_aware() -> None:
    naive = datetime(2026, 11, 21, 10, 0)
    assert as_utc(naive) == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    paris = datetime(2026, 11, 21, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    converted = as_utc(paris)
    assert converted == paris and converted.tzinfo is UTC and converted.hour == 10


def test_backoff_without_jitter_is_the_ceiling() -> None:
    assert [backoff_seconds(n, base=1.0, cap=5.0, jitter=False) for n in range(5)] == [
        1.0,
        2.0,
        4.0,
        5.0,
        5.0,
    ]
    assert backoff_seconds(-3, base=1.0, cap=5.0, jitter=False) == 1.0


def test_describe_names_the_type() -> None:
    assert describe(TimeoutError("timed out")) == "TimeoutError: timed out"
    assert describe(ValueError("x" * 50), limit=12) == "ValueError: "


@pytest.mark.parametrize(
    "url,shown",
    [
        ("redis://:s3cret@broker:6379/0", "redis://***@broker:6379/0"),
        ("redis://user:s3cret@broker:6379/0", "redis://***@broker:6379/0"),
        ("amqp://guest@rabbit//", "amqp://***@rabbit//"),
        ("postgresql://u:p@ss@db/x", "postgresql://***@db/x"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://h/0?password=s3cret&db=1", "redis://h/0?password=***&db=1"),
        ("sqlite:///tmp/a@b.db", "sqlite:///tmp/a@b.db"),
    ],
)
def test_redact_hides_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_atomic_path_renames_on_success_and_removes_the_temp_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.json"
    assert temp_path(final).name == f".out.json{TEMP_MARK}{os.getpid()}"
    atomic_write_text(final, "one")
    assert final.read_text() == "one" and list(final.parent.iterdir()) == [final]

    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert final.read_text() == "one" and list(final.parent.iterdir()) == [final]


def test_stale_temps_are_those_of_this_final_name_only(tmp_path: Path) -> None:
    final = tmp_path / "a.mp4"
    killed = tmp_path / f".a.mp4{TEMP_MARK}4242"
    legacy = tmp_path / ".a.mp4.k3j2.part"
    other = tmp_path / f".a.mp4x{TEMP_MARK}4242"
    for path in (killed, legacy, other):
        path.write_bytes(b"half")
    assert sorted(stale_temps(final)) == sorted([killed, legacy])
