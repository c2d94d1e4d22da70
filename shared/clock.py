"""Wall-clock time for the whole project: always timezone-aware, always UTC.

Stored times come back in two shapes: aware (PostgreSQL, ISO 8601 with an offset) and naive
(SQLite drops the offset; every time written is UTC). :func:`as_utc` turns either into an
aware UTC datetime so they can be compared and subtracted.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime: a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
