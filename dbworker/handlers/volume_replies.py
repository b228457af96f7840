"""The volume reply: its statement and its records, shared by every volume handler.

Every volume reply is built here, by :func:`volume_records`, from one statement built once per
variant: the volumes joined to their live volume type, then (``UNION ALL``) their live metadata,
their types' live extra specs and, for an admin context, their live admin metadata. Rows map
straight to records (:mod:`dbworker.core.records`), without ORM objects. No handler lives here.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    LABEL_STYLE_NONE,
    CompoundSelect,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    cast,
    false,
    literal_column,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import connection_of
from dbworker.core.records import Mapper, PreparedRead
from dbworker.core.settings import Settings
from dbworker.models import Volume, VolumeAdminMetadata, VolumeMetadata, VolumeType, VolumeTypeExtraSpecs
from dbworker.protocol.wire import Record

VOLUMES = Volume.__table__
_TYPES = VolumeType.__table__
METADATA = VolumeMetadata.__table__
ADMIN_METADATA = VolumeAdminMetadata.__table__
_SPECS = VolumeTypeExtraSpecs.__table__

# --- the volume reply: one statement built once, rows mapped straight to records -----------------
#: The reply's rows, all from one ``UNION ALL`` (one statement: one snapshot, one round trip), laid
#: out as ``kind``, the volume's columns, its live type's columns, then a child's columns (those of
#: ``volume_metadata``). ``kind`` is ``v`` (a volume and its type), ``m`` (a live metadata record),
#: ``e`` (a live extra spec of a volume's type: key, value, owner = the type id as a string) or ``a``
#: (live admin metadata: key, value, owner; admin contexts only).
_VOLUME = Mapper(VOLUMES, offset=1)
_TYPE = Mapper(_TYPES, offset=_VOLUME.stop)
_CHILD = Mapper(METADATA, offset=_TYPE.stop)
_TYPE_ID = _TYPE.start + _TYPE.keys.index("id")  # NULL when the volume has no live type
_CHILD_KEY, _CHILD_VALUE, _CHILD_OWNER = (
    _CHILD.start + _CHILD.keys.index(name) for name in ("key", "value", "volume_id")
)
_DELETED = {"no": VOLUMES.c.deleted == false(), "only": VOLUMES.c.deleted == true()}
#: The conditions a volume query may combine, each with its bound parameters.
WHERE = {
    "id": VOLUMES.c.id == bindparam("volume_id"),
    "project": VOLUMES.c.project_id == bindparam("project_id"),
    "no_project": VOLUMES.c.project_id.is_(None),  # "= NULL" matches nothing; keeps the index
    "host": VOLUMES.c.host == bindparam("host"),
    "instance": VOLUMES.c.instance_uuid == bindparam("instance_uuid"),
    "alive_at_begin": or_(VOLUMES.c.deleted_at.is_(None), VOLUMES.c.deleted_at > bindparam("begin")),
    "created_before_end": VOLUMES.c.created_at < bindparam("end"),
    "caller_project": VOLUMES.c.project_id == bindparam("caller_project_id"),
}


_NULL = literal_column("NULL")


def _nulls(table: Any) -> list[Any]:
    """NULLs standing for ``table``'s columns in a branch that has none (unnamed, see
    :func:`_unlabelled`)."""
    return [_NULL] * len(table.c)


def _child(kind: str, table: Any, owner: Any, where: Any) -> Select[Any]:
    """A ``kind`` branch of children: its key, value, id and owner where metadata has them."""
    own = {"id": table.c.id, "key": table.c.key, "value": table.c.value, "volume_id": owner}
    child = [own.get(column.key, _NULL) for column in METADATA.c]
    return _unlabelled(select(literal_column(f"'{kind}'"), *_nulls(VOLUMES), *_nulls(_TYPES), *child)).where(
        where, table.c.deleted == false()
    )


def _unlabelled(branch: Select[Any]) -> Select[Any]:
    """A union branch after the first: its columns need no names (the first branch names them),
    and the statement stays short enough for psycopg to cache its parsing (4 KiB)."""
    return branch.set_label_style(LABEL_STYLE_NONE)


@functools.cache
def _volume_read(read_deleted: str, caller_only: bool, where: tuple[str, ...], admin: bool) -> PreparedRead:
    """:func:`_volume_select`, built and compiled once per variant; only a lookup by id may keep
    one plan for every value (a listing's best plan depends on how many rows it finds)."""
    statement = _volume_select(read_deleted, caller_only, where, admin)
    return PreparedRead(statement, server_prepared=where == ("id",))


def _volume_select(
    read_deleted: str, caller_only: bool, where: tuple[str, ...], admin: bool
) -> CompoundSelect:
    """The reply rows (see above) of the volumes filtered by ``read_deleted``, by the caller's
    project (``caller_only``, a user context's listing) and by the :data:`WHERE` conditions named in
    ``where``: ordered by kind, volume id, owner, child id."""
    conditions = [WHERE[name] for name in where]
    if caller_only:
        conditions.append(WHERE["caller_project"])
    if read_deleted in _DELETED:
        conditions.append(_DELETED[read_deleted])
    volumes = VOLUMES.outerjoin(
        _TYPES, and_(_TYPES.c.id == VOLUMES.c.volume_type_id, _TYPES.c.deleted == false())
    )
    branches = [
        select(  # typed: the first branch's column types convert every row's values
            literal_column("'v'").label("kind"),
            *VOLUMES.c,
            *(column.label(f"type_{column.key}") for column in _TYPES.c),
            *(type_coerce(null(), column.type).label(f"child_{column.key}") for column in METADATA.c),
        )
        .select_from(volumes)
        .where(*conditions),
        _unlabelled(select(literal_column("'m'"), *_nulls(VOLUMES), *_nulls(_TYPES), *METADATA.c)).where(
            METADATA.c.volume_id.in_(select(VOLUMES.c.id).where(*conditions)),
            METADATA.c.deleted == false(),
        ),
        _child(
            "e",
            _SPECS,
            cast(_SPECS.c.volume_type_id, String(36)),
            _SPECS.c.volume_type_id.in_(select(VOLUMES.c.volume_type_id).where(*conditions)),
        ),
    ]
    if admin:
        owner = ADMIN_METADATA.c.volume_id
        branches.append(
            _child("a", ADMIN_METADATA, owner, owner.in_(select(VOLUMES.c.id).where(*conditions)))
        )
    # By position (1-based): a union's ORDER BY names resolve differently on each database.
    order = (
        0,
        _VOLUME.start + _VOLUME.keys.index("id"),
        _CHILD_OWNER,
        _CHILD.start + _CHILD.keys.index("id"),
    )
    return union_all(*branches).order_by(*(literal_column(str(index + 1)) for index in order))


def volume_records(
    conn: Connection,
    ctx: RequestContext,
    settings: Settings,
    *where: str,
    read_deleted: str | None = None,
    **params: Any,
) -> list[Record]:
    """Return the volumes ``ctx`` may see that match the :data:`WHERE` conditions named in
    ``where`` (with their ``params``), by id, as reply records: every column,
    ``name``, the live ``metadata`` as a dict and as ``volume_metadata`` records, the live
    ``volume_type`` (with its ``extra_specs``) or null, and for an admin ``admin_metadata``.
    One statement, so one snapshot of the database."""
    # A lookup by id checks the caller's project on the row it finds, not in SQL: with both
    # conditions a planner misled by stale statistics may scan the project's index instead of
    # the primary key.
    caller_in_sql = ctx.is_user and "id" not in where
    query = _volume_read(read_deleted or ctx.read_deleted, caller_in_sql, where, ctx.is_admin)
    if caller_in_sql:
        params["caller_project_id"] = ctx.project_id
    foreign = ctx.is_user and not caller_in_sql
    metadata: dict[str, list[Record]] = {}
    pairs: dict[str, dict[str, dict[str, str]]] = {"e": {}, "a": {}}
    records = []
    for row in query.rows(conn, params):
        kind = row[0]
        if kind == "v":
            volume = _VOLUME(row)
            if foreign and volume["project_id"] != ctx.project_id:
                continue  # not the caller's: as if missing (its children are never used)
            if row[_TYPE_ID] is not None:
                volume["volume_type"] = _TYPE(row)
            records.append(volume)
        elif kind == "m":
            metadata.setdefault(row[_CHILD_OWNER], []).append(_CHILD(row))
        else:
            pairs[kind].setdefault(row[_CHILD_OWNER], {})[row[_CHILD_KEY]] = row[_CHILD_VALUE]
    for volume in records:
        volume_id = volume["id"]
        rows_of_volume = metadata.get(volume_id, [])
        volume["name"] = settings.volume_name_template % volume_id
        volume["metadata"] = {m["key"]: m["value"] for m in rows_of_volume}
        volume["volume_metadata"] = rows_of_volume
        volume_type = volume.setdefault("volume_type", None)
        if volume_type is not None:
            volume_type["extra_specs"] = dict(pairs["e"].get(str(volume_type["id"]), {}))
        if ctx.is_admin:
            volume["admin_metadata"] = pairs["a"].get(volume_id, {})
    return records


def one_volume(records: list[Record], volume_id: str) -> Record:
    if not records:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return records[0]


def volume_reply(tx: Connection | Session, ctx: RequestContext, settings: Settings, volume_id: str) -> Record:
    """Return the reply record of a volume this call just wrote, whatever ``ctx.read_deleted``."""
    found = volume_records(connection_of(tx), ctx, settings, "id", read_deleted="yes", volume_id=volume_id)
    return one_volume(found, volume_id)


@functools.cache
def _visible_select(read_deleted: str) -> Select[Any]:
    query = select(VOLUMES.c.project_id).where(WHERE["id"])
    return query.where(_DELETED[read_deleted]) if read_deleted in _DELETED else query


def check_visible(tx: Connection | Session, ctx: RequestContext, volume_id: str) -> str:
    """Return ``volume_id`` if ``ctx`` may see that volume (its read_deleted, its project for a
    user, checked on the row found by id); raise VolumeNotFound."""
    found = connection_of(tx).execute(_visible_select(ctx.read_deleted), {"volume_id": volume_id}).first()
    if found is None or (ctx.is_user and found.project_id != ctx.project_id):
        raise exception.VolumeNotFound(volume_id=volume_id)
    return volume_id
