"""The wire format shared by the worker and its Python callers; no SQLAlchemy, no oslo.

Datetimes travel as naive-UTC ISO strings in one format, :data:`TIME_FORMAT`. Arguments are encoded
strictly (:func:`encode`); replies are decoded back to ``datetime`` for the Python entries
(:func:`decode_reply`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from dbworker import exception

#: JSON-safe data: what crosses the wire in both directions.
Primitive = None | bool | int | float | str | list["Primitive"] | dict[str, "Primitive"]

#: Naive UTC, microseconds always present: oslo's PERFECT_TIME_FORMAT.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"

#: Record keys that hold datetimes (every DateTime column of dbworker.models; a test checks it).
DATETIME_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "deleted_at",
        "scheduled_at",
        "launched_at",
        "terminated_at",
        "expire",
    }
)


def format_time(value: datetime) -> str:
    """Return ``value`` as a wire string; an aware datetime is converted to UTC first."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime(TIME_FORMAT)


def parse_time(value: Any, name: str) -> datetime | None:
    """Parse an ISO 8601 argument into a naive UTC datetime; ``None`` stays ``None``.

    Raises:
        InvalidInput: naming ``name``, when ``value`` is not an ISO 8601 string (or a datetime).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise exception.InvalidInput(
                reason=f"{name}: {value[:64]!r} is not an ISO 8601 datetime"
            ) from None
    else:
        raise exception.InvalidInput(
            reason=f"{name}: expected an ISO 8601 datetime string, got {type(value).__name__}"
        )
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def encode(value: Any) -> Primitive:
    """Return ``value`` as JSON-safe data for an argument; datetimes become wire strings.

    Raises:
        TypeError: for anything that is not JSON data (no lenient ``str()`` fallback).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("dict keys on the wire must be strings")
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):
        # Row-like mappings (Folsom callers pass models, e.g. reservation_create's usage).
        return {str(k): encode(value[k]) for k in value.keys()}  # noqa: SIM118
    raise TypeError(f"{type(value).__name__} is not JSON data")


def decode_reply(value: Any) -> Any:
    """Turn the datetime fields of records in a reply back into naive UTC ``datetime`` values.

    A record is a dict with ``id`` and ``deleted`` keys (every record has all its columns), so
    user dicts such as metadata are left alone.
    """
    if isinstance(value, list):
        return [decode_reply(v) for v in value]
    if isinstance(value, dict):
        is_record = "id" in value and "deleted" in value
        return {
            k: _to_datetime(v) if is_record and k in DATETIME_FIELDS else decode_reply(v)
            for k, v in value.items()
        }
    return value


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.strptime(value, TIME_FORMAT)
    return value
