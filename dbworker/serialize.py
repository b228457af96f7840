"""Turn what a handler returns into the JSON reply of contract §4, inside the call's transaction.

A row becomes a dict of all its columns plus the computed fields of its model (:data:`_EXTRAS`).
Only relationships a handler eager-loaded are read (they are ``lazy="raise"``), so a forgotten
``selectinload`` fails a test instead of issuing N+1 queries. Anything that is not JSON data raises
``TypeError``: an encoding bug becomes an immediate error reply, never a caller timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase

from dbworker import models
from dbworker.records import Record
from dbworker.wire import Primitive, format_time


@dataclass(frozen=True)
class View:
    """What shapes a reply besides the rows: the name templates (``[dbworker]`` settings)."""

    volume_name_template: str = "volume-%s"
    snapshot_name_template: str = "snapshot-%s"


def to_primitive(obj: Any, view: View) -> Primitive:
    """Return ``obj`` (rows, lists, tuples, dicts, scalars) as JSON-safe data.

    Raises:
        TypeError: ``obj`` holds a value with no JSON form.
    """
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if type(obj) is Record:  # built from typed columns: JSON data already
        return obj
    if isinstance(obj, DeclarativeBase):
        return record(obj, view)
    if isinstance(obj, dict):
        return {_key(k): to_primitive(v, view) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_primitive(v, view) for v in obj]
    if isinstance(obj, datetime):
        return format_time(obj)
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"cannot put {type(obj).__name__} on the wire")


def record(row: DeclarativeBase, view: View) -> dict[str, Primitive]:
    """Return one row as a dict of all its columns plus its model's computed fields."""
    mapper = inspect(row).mapper
    out: dict[str, Primitive] = {
        attr.key: to_primitive(getattr(row, attr.key), view) for attr in mapper.column_attrs
    }
    extras = _EXTRAS.get(type(row))
    if extras is not None:
        out.update(extras(row, view))
    return out


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"dict key {key!r} is not a string")


def _metadata_dict(rows: list[Any]) -> dict[str, Primitive]:
    return {row.key: row.value for row in rows}


def _snapshot_extras(snapshot: models.Snapshot, view: View) -> dict[str, Primitive]:
    return {
        "name": view.snapshot_name_template % snapshot.id,
        "volume_name": view.volume_name_template % snapshot.volume_id,
    }


def _volume_type_extras(volume_type: models.VolumeType, view: View) -> dict[str, Primitive]:
    return {"extra_specs": _metadata_dict(volume_type.extra_specs)}


_EXTRAS: dict[type, Callable[[Any, View], dict[str, Primitive]]] = {
    models.Snapshot: _snapshot_extras,
    models.VolumeType: _volume_type_extras,
}
