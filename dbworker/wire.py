"""The wire format shared by the worker and its Python callers; no SQLAlchemy, no oslo.

Datetimes travel as naive-UTC ISO strings in one format, :data:`TIME_FORMAT`. Arguments are encoded
strictly (:func:`encode`); replies are decoded back to ``datetime`` for the Python entries
(:func:`decode_reply`), by the shape each function declares (:class:`Reply`).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from dbworker.times import TIME_FORMAT as TIME_FORMAT
from dbworker.times import format_time

#: JSON-safe data: what crosses the wire in both directions.
Primitive = None | bool | int | float | str | list["Primitive"] | dict[str, "Primitive"]

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


class Reply(enum.Enum):
    """The shape of a function's reply, which says where its datetimes are.

    A record is a dict of a row's columns plus its computed fields; its datetime columns are
    :data:`DATETIME_FIELDS`, and a volume record nests its type (a record) and its
    ``volume_metadata`` (records). Everything else a caller gets back is data the caller (or
    Folsom's shape) made: metadata and extra-spec dicts, uuids, counts, null. Decoding follows
    the function's declared shape, never the keys of a dict, so caller data never changes type.
    """

    PLAIN = "plain"  # as sent: metadata and extra-spec dicts, uuid lists, counts, quota dicts, null
    RECORD = "record"  # one record, or null
    RECORDS = "records"  # a list of records
    RECORDS_BY_NAME = "records_by_name"  # {name: record} (volume_type_get_all)
    RECORD_PAIRS = "record_pairs"  # [[record, value], ...] (service_get_all_volume_sorted)


#: Record keys that hold nested records (a volume's type and its metadata rows).
_NESTED: dict[str, Reply] = {"volume_type": Reply.RECORD, "volume_metadata": Reply.RECORDS}


def decode_reply(value: Any, shape: Reply) -> Any:
    """Return a reply of ``shape`` with its records' datetime fields as naive UTC ``datetime``.

    Raises:
        ValueError: a record's datetime field is not in :data:`TIME_FORMAT` (not a dbworker reply).
    """
    if value is None or shape is Reply.PLAIN:
        return value
    if shape is Reply.RECORD:
        return {k: _decode_field(k, v) for k, v in value.items()}
    if shape is Reply.RECORDS:
        return [decode_reply(v, Reply.RECORD) for v in value]
    if shape is Reply.RECORDS_BY_NAME:
        return {k: decode_reply(v, Reply.RECORD) for k, v in value.items()}
    return [[decode_reply(record, Reply.RECORD), *rest] for record, *rest in value]


def _decode_field(key: str, value: Any) -> Any:
    if key in DATETIME_FIELDS:
        return _to_datetime(value)
    nested = _NESTED.get(key)
    return value if nested is None else decode_reply(value, nested)


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        # The worker writes TIME_FORMAT, which fromisoformat reads (60 times faster than strptime).
        return datetime.fromisoformat(value)
    return value
