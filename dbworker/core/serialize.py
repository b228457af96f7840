"""Turn what a handler returns into the call's JSON reply, inside the call's transaction.

The reply is :func:`dbworker.protocol.wire.encode`'s JSON data, with one rule added for ORM rows: a row
becomes a dict of all its columns plus the computed fields of its model (:data:`_EXTRAS`). Only
relationships a handler eager-loaded are read (they are ``lazy="raise"``), so a forgotten
``selectinload`` fails a test instead of issuing N+1 queries. Records built by the hot path
(:class:`dbworker.protocol.wire.Record`) pass through as they are. Anything that is not JSON data raises
``TypeError``: an encoding bug becomes an immediate error reply, never a caller timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase

from dbworker import models
from dbworker.protocol.wire import Primitive, encode


@dataclass(frozen=True)
class View:
    """What shapes a reply besides the rows: the name templates (``[dbworker]`` settings)."""

    volume_name_template: str = "volume-%s"
    snapshot_name_template: str = "snapshot-%s"

    def row(self, value: Any) -> dict[str, Primitive]:
        """Return ``value``, an ORM row, as its record (:func:`record`).

        Raises:
            TypeError: ``value`` is not an ORM row.
        """
        if isinstance(value, DeclarativeBase):
            return record(value, self)
        raise TypeError(f"{type(value).__name__} is not JSON data")


def to_primitive(obj: Any, view: View) -> Primitive:
    """Return ``obj`` (rows, records, lists, tuples, dicts, scalars) as JSON data: ORM rows as
    their records, everything else by :func:`dbworker.protocol.wire.encode`'s rules.

    Raises:
        TypeError: ``obj`` holds a value with no JSON form (a mapping that is not a ``dict`` or a
            row included).
    """
    return encode(obj, view.row)


def record(row: DeclarativeBase, view: View) -> dict[str, Primitive]:
    """Return one row as a dict of all its columns plus its model's computed fields.

    Raises:
        TypeError: a column holds a value with no JSON form.
    """
    mapper = inspect(row).mapper
    out: dict[str, Primitive] = {attr.key: encode(getattr(row, attr.key)) for attr in mapper.column_attrs}
    extras = _EXTRAS.get(type(row))
    if extras is not None:
        out.update(extras(row, view))
    return out


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
