"""Query and write helpers the handler modules share: soft-delete filtering, project scoping,
validated writes of ``values`` dicts, soft deletes.

Validation happens here, before anything reaches the database, so the same bad input gives the same
``InvalidInput`` (naming the column) on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Boolean, Connection, DateTime, Integer, Select, String, Table, select, update
from sqlalchemy.orm import Session

from dbworker import exception, models
from dbworker.core.context import RequestContext
from dbworker.protocol.times import parse_time

M = TypeVar("M", bound=models.Base)

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
#: Size columns (gigabytes): a negative value is InvalidInput.
_SIZES = frozenset({("volumes", "size"), ("snapshots", "volume_size")})


def model_query(
    ctx: RequestContext,
    model: type[M],
    *,
    read_deleted: str | None = None,
    project_only: bool = False,
) -> Select[tuple[M]]:
    """Return ``select(model)`` filtered by ``read_deleted`` (default: the context's) and, for a
    user context with ``project_only``, by the context's project (Folsom's ``model_query``)."""
    mode = read_deleted or ctx.read_deleted
    query = select(model)
    if mode == "no":
        query = query.where(model.deleted == False)
    elif mode == "only":
        query = query.where(model.deleted == True)
    if project_only and ctx.is_user:
        query = query.where(model.project_id == ctx.project_id)
    return query


def soft_delete(row: models.CinderBase) -> None:
    """ORM soft delete: ``deleted`` and ``deleted_at`` set, ``updated_at`` bumped by the flush."""
    row.deleted = True
    row.deleted_at = models.utcnow()
    if isinstance(row, models.QuotaUsage):
        row.live = None


def bulk_soft_delete(tx: Session, model: type[models.Base], *where: Any) -> int:
    """Soft-delete every row matching ``where`` keeping ``updated_at``; return the row count."""
    stmt = (
        update(model)
        .where(*where)
        .values(deleted=True, deleted_at=models.utcnow(), updated_at=model.updated_at)
        .execution_options(synchronize_session=False)
    )
    return tx.execute(stmt).rowcount


def apply_values(
    tx: Session,
    ctx: RequestContext,
    row: models.Base,
    values: Mapping[str, Any],
    *,
    creating: bool = False,
    relations: Iterable[str] = (),
) -> dict[str, Any]:
    """Validate ``values`` against ``row``'s columns (:func:`checked_values`) and set them on the
    ORM row; return the relation keys."""
    columns, related = checked_values(tx, ctx, row.__table__, values, creating=creating, relations=relations)
    for key, value in columns.items():
        setattr(row, key, value)
    return related


def checked_values(
    tx: Session | Connection,
    ctx: RequestContext,
    table: Table,
    values: Mapping[str, Any],
    *,
    creating: bool = False,
    relations: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``values`` against ``table``'s columns; return them checked (datetimes parsed) and,
    apart, the keys in ``relations`` (such as ``metadata``) for the handler to write.

    With ``creating``, every NOT NULL column without a default must be set. Foreign keys must
    name existing rows. A reference is a read: to a user context, a row of another project does
    not exist, so a foreign key or a :data:`PROJECT_REFERENCES` column must name a row of its
    own project, checked before anything is written.

    Raises:
        InvalidInput: naming the key, for an unknown key, a value of the wrong type, a string
            longer than its column, a missing NOT NULL column or a foreign key to a missing row
            (or, for a user, to another project's row).
        NotFound: the referenced row's class (``VolumeNotFound``, ``SnapshotNotFound``), when a
            user context's :data:`PROJECT_REFERENCES` column names a row it cannot see.
    """
    if not isinstance(values, Mapping):
        raise exception.InvalidInput(reason="values must be a dict")
    columns = table.c
    relations = frozenset(relations)
    checked: dict[str, Any] = {}
    related: dict[str, Any] = {}
    for key, value in values.items():
        if key in relations:
            related[key] = value
            continue
        column = columns.get(key) if isinstance(key, str) else None
        if column is None:
            raise exception.InvalidInput(reason=f"values: unknown key {key!r}")
        checked[key] = column_value(column, key, value)
    if creating:
        _check_required(table, checked)
    # With a session, a flush now would send a bad reference before it is checked.
    with tx.no_autoflush if isinstance(tx, Session) else contextlib.nullcontext():
        _check_references(tx, ctx, table, checked)
    return checked, related


def connection_of(tx: Session | Connection) -> Connection:
    """Return the connection of a call's transaction (a session's, or the Core one itself)."""
    return tx.connection() if isinstance(tx, Session) else tx


def column_value(column: Any, key: str, value: Any) -> Any:
    """Return ``value`` checked (and, for datetimes, parsed) for ``column``.

    Raises:
        InvalidInput: naming ``key``; also for a negative size.
    """
    if value is None:
        if not column.nullable and not column.primary_key:
            raise exception.InvalidInput(reason=f"{key} cannot be null")
        return None
    kind = column.type
    if isinstance(kind, String):
        check_string(key, value, kind.length)
    elif isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise exception.InvalidInput(reason=f"{key} must be a boolean")
    elif isinstance(kind, Integer):
        check_int(key, value)
        if (column.table.name, key) in _SIZES and value < 0:
            raise exception.InvalidInput(reason=f"{key} must not be negative")
    elif isinstance(kind, DateTime):
        value = check_datetime(key, value)
    return value


def check_datetime(key: str, value: Any) -> datetime:
    """Return ``value`` (an ISO 8601 string or a datetime) as a storable naive UTC datetime.

    Raises:
        InvalidInput: naming ``key``: not ISO 8601, or a year before 1000 (MySQL's DATETIME range).
    """
    try:
        parsed = None if value is None else parse_time(value)
    except ValueError:
        raise exception.InvalidInput(reason=f"{key}: {value[:64]!r} is not an ISO 8601 datetime") from None
    except TypeError:
        raise exception.InvalidInput(
            reason=f"{key}: expected an ISO 8601 datetime string, got {type(value).__name__}"
        ) from None
    if parsed is None or parsed.year < 1000:
        raise exception.InvalidInput(reason=f"{key}: a datetime from the year 1000 on is required")
    return parsed


def check_string(key: str, value: Any, length: int | None = 255) -> str:
    """Return ``value`` if it is a storable string of at most ``length`` characters.

    Raises:
        InvalidInput: naming ``key``: not a string, too long, a NUL byte or a lone surrogate.
    """
    if not isinstance(value, str):
        raise exception.InvalidInput(reason=f"{key} must be a string")
    if length is not None and len(value) > length:
        raise exception.InvalidInput(reason=f"{key} is longer than {length} characters")
    if "\x00" in value:
        raise exception.InvalidInput(reason=f"{key} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise exception.InvalidInput(reason=f"{key} is not valid unicode") from None
    return value


def check_int(key: str, value: Any) -> int:
    """Return ``value`` if it is an integer that fits a 32-bit column.

    Raises:
        InvalidInput: naming ``key``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise exception.InvalidInput(reason=f"{key} must be an integer")
    if not _INT_MIN <= value <= _INT_MAX:
        raise exception.InvalidInput(reason=f"{key} is out of range")
    return value


def metadata_value(key: Any, value: Any, *, what: str = "metadata") -> tuple[str, str]:
    """Return a metadata or extra-spec pair as stored: the value in its Python string form.

    Raises:
        InvalidInput: the key is not a string, or the value is not a string, number or boolean,
            or either is longer than 255 characters.
    """
    if isinstance(value, bool | int | float | str):
        value = str(value)
    else:
        raise exception.InvalidInput(reason=f"{what} value for {key!r} must be a string, number or boolean")
    check_string(f"{what} key", key)
    check_string(f"{what} value for {key!r}", value)
    return key, value


def metadata_items(metadata: Any, *, what: str = "metadata") -> list[tuple[str, str]]:
    """Return a metadata dict (or ``None``) as validated ``(key, value)`` pairs, in key order.

    Raises:
        InvalidInput: ``metadata`` is not a dict, or an item is invalid.
    """
    if metadata is None:
        return []
    if not isinstance(metadata, Mapping):
        raise exception.InvalidInput(reason=f"{what} must be a dict")
    return [metadata_value(k, v, what=what) for k, v in sorted(metadata.items())]


def _check_required(table: Table, checked: Mapping[str, Any]) -> None:
    for column in table.c:
        if column.nullable or column.default is not None or column.primary_key:
            continue
        if checked.get(column.key) is None:
            raise exception.InvalidInput(reason=f"{column.key} is required")


#: Columns that name a row of project data without a foreign key (Folsom's schema has none
#: there), with the error that row's absence is. Admin contexts keep Folsom's unchecked write.
PROJECT_REFERENCES: dict[tuple[str, str], tuple[type[models.Base], Callable[[Any], exception.NotFound]]] = {
    ("snapshots", "volume_id"): (models.Volume, lambda v: exception.VolumeNotFound(volume_id=v)),
    ("volumes", "snapshot_id"): (models.Snapshot, lambda v: exception.SnapshotNotFound(snapshot_id=v)),
}


def _check_references(
    tx: Session | Connection, ctx: RequestContext, table: Table, checked: Mapping[str, Any]
) -> None:
    for key, value in checked.items():
        if value is None:
            continue
        column = table.c[key]
        soft = PROJECT_REFERENCES.get((table.name, key))
        if soft is not None:
            model, not_found = soft
            if ctx.is_user and not _visible(tx, ctx, model, value):
                raise not_found(value)
            continue
        if not column.foreign_keys:
            continue
        (fk,) = column.foreign_keys
        target = fk.column
        query = select(target).where(target == value)
        if ctx.is_user and "project_id" in target.table.c:
            query = query.where(target.table.c.project_id == ctx.project_id)
        if tx.execute(query.limit(1)).first() is None:
            raise exception.InvalidInput(
                reason=f"{key}: no {target.table.name} row with {target.name} {value!r}"
            )


def _visible(tx: Session | Connection, ctx: RequestContext, model: type[models.Base], key: Any) -> bool:
    """Whether the row of ``model`` with primary key ``key`` is of ``ctx``'s project (a user
    context), deleted or not: Folsom let any id through; isolation needs only the project."""
    (pk,) = model.__table__.primary_key.columns
    query = model_query(ctx, model, read_deleted="yes", project_only=True)
    query = query.with_only_columns(pk).where(pk == key)
    return tx.execute(query.limit(1)).first() is not None
