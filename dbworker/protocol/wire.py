"""The wire format shared by the worker and its Python callers; no SQLAlchemy, no oslo.

Everything that crosses the wire is JSON data (:data:`Primitive`), made by one converter,
:func:`encode`: a call's arguments (the Python entries), its reply (the dispatcher, through
:func:`dbworker.core.serialize.to_primitive`) and the ``kwargs`` of its errors (:mod:`dbworker.exception`).
Datetimes travel as naive-UTC ISO strings in one format, :data:`TIME_FORMAT`. Replies are decoded
back to ``datetime`` for the Python entries (:func:`decode_reply`), by the shape each function
declares (:class:`Reply`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dbworker.protocol.times import TIME_FORMAT as TIME_FORMAT
from dbworker.protocol.times import format_time

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


class Record(dict[str, Any]):
    """One reply record (a row's columns plus its computed fields), built as JSON data.

    :class:`dbworker.core.records.Mapper` builds them from typed columns, datetimes already in
    :data:`TIME_FORMAT`; :func:`encode` passes one through as it is, without walking it.
    """


#: Exact types whose values are JSON data as they are (subclasses go through the rules).
_AS_IS = frozenset({str, int, float, bool, type(None), Record})


def encode(value: Any, other: Callable[[Any], Primitive] | None = None) -> Primitive:
    """Return ``value`` as JSON data, by these rules (the first that matches):

    * ``None``, ``bool``, ``int``, ``float``, ``str`` (subclasses included): as they are
      (floats too: NaN and infinities are checked where a number is expected, not here).
    * :class:`Record`: as it is, not walked (JSON data by construction).
    * ``dict``: a dict of the same keys, each value encoded; every key must be a ``str``.
    * ``list``, ``tuple``: a list, each item encoded.
    * ``datetime``: a :data:`TIME_FORMAT` string, naive UTC (an aware one is converted to UTC).
    * ``date``: ``YYYY-MM-DD``.
    * ``Decimal`` (SQL sums and numerics): an ``int`` when integral, else a ``float``.
    * anything else: ``other(value)`` when ``other`` is given (the caller's own types, such as
      ORM rows; it returns JSON data or raises ``TypeError``); without ``other``, an object with
      ``keys()`` and ``__getitem__`` (a Folsom model, a SQLAlchemy ``RowMapping``) becomes a
      dict of its keys, which must be ``str``, to their values encoded.

    Nothing is turned into text by ``str()``: sets (no order), bytes, uuids, exceptions and every
    other type are refused.

    Raises:
        TypeError: naming the type, for a value (at any depth) no rule converts, or a key that is
            not a ``str``.
    """
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is dict:
        return {
            (k if type(k) is str else _key(k)): (v if type(v) in _AS_IS else encode(v, other))
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [v if type(v) in _AS_IS else encode(v, other) for v in value]
    if kind is datetime:
        return format_time(value)
    return _encode_other(value, other)


def _encode_other(value: Any, other: Callable[[Any], Primitive] | None) -> Primitive:
    """:func:`encode`'s rules for subclasses and the rarer types, in the same order."""
    if isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, dict):
        return {_key(k): encode(v, other) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v, other) for v in value]
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if other is not None:
        return other(value)
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):
        return {_key(k): encode(value[k]) for k in value.keys()}  # noqa: SIM118
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"dict key {key!r} is not a string")


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
