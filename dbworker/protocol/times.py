"""Datetimes as text: naive UTC, written in one format, read from any ISO 8601 string.

A leaf module (standard library only), so that both the wire format (:mod:`dbworker.protocol.wire`) and the
checks of a call's values (:mod:`dbworker.core.query`) use the same rule without importing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: Naive UTC, microseconds always present: oslo's PERFECT_TIME_FORMAT.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def naive_utc(value: datetime) -> datetime:
    """Return ``value`` as naive UTC: an aware datetime is converted to UTC, a naive one is kept."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def format_time(value: datetime) -> str:
    """Return ``value`` in :data:`TIME_FORMAT`; an aware datetime is converted to UTC first."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")  # TIME_FORMAT, four-digit year, and faster


def parse_time(value: str | datetime) -> datetime:
    """Return an ISO 8601 string (or a datetime) as a naive UTC datetime.

    A date alone is midnight; an offset (``+02:00``, ``Z``) is converted to UTC.

    Raises:
        ValueError: ``value`` is a string that is not ISO 8601.
        TypeError: ``value`` is neither a string nor a datetime.
    """
    if isinstance(value, datetime):
        return naive_utc(value)
    if isinstance(value, str):
        return naive_utc(datetime.fromisoformat(value))
    raise TypeError(f"expected an ISO 8601 datetime string, got {type(value).__name__}")
