"""Handlers for the ``volumes`` table.

Every volume reply is built in one place, :func:`volume_records`, from two statements built once:
the volumes joined to their live volume type, then a single ``UNION ALL`` of their live metadata,
their types' live extra specs and, for an admin context, their live admin metadata. Rows map
straight to records (:mod:`dbworker.records`): the reads and ``volume_create`` never load ORM
objects. The other writes use the ORM and re-read their reply the same way.
"""

from __future__ import annotations

import functools
import uuid
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
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.context import RequestContext
from dbworker.models import (
    IscsiTarget,
    Volume,
    VolumeAdminMetadata,
    VolumeMetadata,
    VolumeType,
    VolumeTypeExtraSpecs,
)
from dbworker.query import (
    apply_values,
    bulk_soft_delete,
    check_datetime,
    checked_values,
    connection_of,
    metadata_items,
    model_query,
    soft_delete,
)
from dbworker.records import Mapper, PreparedRead, Record
from dbworker.registry import Auth, handler
from dbworker.settings import Settings

_VOLUMES = Volume.__table__
_TYPES = VolumeType.__table__
_METADATA = VolumeMetadata.__table__
_ADMIN_METADATA = VolumeAdminMetadata.__table__
_SPECS = VolumeTypeExtraSpecs.__table__

# --- the volume reply: one statement built once, rows mapped straight to records -----------------
#: The reply's rows, all from one ``UNION ALL`` (one statement: one snapshot, one round trip), laid
#: out as ``kind``, the volume's columns, its live type's columns, then a child's columns (those of
#: ``volume_metadata``). ``kind`` is ``v`` (a volume and its type), ``m`` (a live metadata record),
#: ``e`` (a live extra spec of a volume's type: key, value, owner = the type id as a string) or ``a``
#: (live admin metadata: key, value, owner; admin contexts only).
_VOLUME = Mapper(_VOLUMES, offset=1)
_TYPE = Mapper(_TYPES, offset=_VOLUME.stop)
_CHILD = Mapper(_METADATA, offset=_TYPE.stop)
_TYPE_ID = _TYPE.start + _TYPE.keys.index("id")  # NULL when the volume has no live type
_CHILD_KEY, _CHILD_VALUE, _CHILD_OWNER = (
    _CHILD.start + _CHILD.keys.index(name) for name in ("key", "value", "volume_id")
)
_DELETED = {"no": _VOLUMES.c.deleted == false(), "only": _VOLUMES.c.deleted == true()}
#: The conditions a volume query may combine, each with its bound parameters.
_WHERE = {
    "id": _VOLUMES.c.id == bindparam("volume_id"),
    "project": _VOLUMES.c.project_id == bindparam("project_id"),
    "no_project": _VOLUMES.c.project_id.is_(None),  # "= NULL" matches nothing; keeps the index
    "host": _VOLUMES.c.host == bindparam("host"),
    "instance": _VOLUMES.c.instance_uuid == bindparam("instance_uuid"),
    "alive_at_begin": or_(_VOLUMES.c.deleted_at.is_(None), _VOLUMES.c.deleted_at > bindparam("begin")),
    "created_before_end": _VOLUMES.c.created_at < bindparam("end"),
    "caller_project": _VOLUMES.c.project_id == bindparam("caller_project_id"),
}


_NULL = literal_column("NULL")


def _nulls(table: Any) -> list[Any]:
    """NULLs standing for ``table``'s columns in a branch that has none (unnamed, see
    :func:`_unlabelled`)."""
    return [_NULL] * len(table.c)


def _child(kind: str, table: Any, owner: Any, where: Any) -> Select[Any]:
    """A ``kind`` branch of children: its key, value, id and owner where metadata has them."""
    own = {"id": table.c.id, "key": table.c.key, "value": table.c.value, "volume_id": owner}
    child = [own.get(column.key, _NULL) for column in _METADATA.c]
    return _unlabelled(select(literal_column(f"'{kind}'"), *_nulls(_VOLUMES), *_nulls(_TYPES), *child)).where(
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
    project (``caller_only``, a user context's listing) and by the :data:`_WHERE` conditions named in
    ``where``: ordered by kind, volume id, owner, child id."""
    conditions = [_WHERE[name] for name in where]
    if caller_only:
        conditions.append(_WHERE["caller_project"])
    if read_deleted in _DELETED:
        conditions.append(_DELETED[read_deleted])
    volumes = _VOLUMES.outerjoin(
        _TYPES, and_(_TYPES.c.id == _VOLUMES.c.volume_type_id, _TYPES.c.deleted == false())
    )
    branches = [
        select(  # typed: the first branch's column types convert every row's values
            literal_column("'v'").label("kind"),
            *_VOLUMES.c,
            *(column.label(f"type_{column.key}") for column in _TYPES.c),
            *(type_coerce(null(), column.type).label(f"child_{column.key}") for column in _METADATA.c),
        )
        .select_from(volumes)
        .where(*conditions),
        _unlabelled(select(literal_column("'m'"), *_nulls(_VOLUMES), *_nulls(_TYPES), *_METADATA.c)).where(
            _METADATA.c.volume_id.in_(select(_VOLUMES.c.id).where(*conditions)),
            _METADATA.c.deleted == false(),
        ),
        _child(
            "e",
            _SPECS,
            cast(_SPECS.c.volume_type_id, String(36)),
            _SPECS.c.volume_type_id.in_(select(_VOLUMES.c.volume_type_id).where(*conditions)),
        ),
    ]
    if admin:
        owner = _ADMIN_METADATA.c.volume_id
        branches.append(
            _child("a", _ADMIN_METADATA, owner, owner.in_(select(_VOLUMES.c.id).where(*conditions)))
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
    """Return the volumes ``ctx`` may see that match the :data:`_WHERE` conditions named in
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


def _one(records: list[Record], volume_id: str) -> Record:
    if not records:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return records[0]


def volume_reply(tx: Connection | Session, ctx: RequestContext, settings: Settings, volume_id: str) -> Record:
    """Return the reply record of a volume this call just wrote, whatever ``ctx.read_deleted``."""
    found = volume_records(connection_of(tx), ctx, settings, "id", read_deleted="yes", volume_id=volume_id)
    return _one(found, volume_id)


@functools.cache
def _visible_select(read_deleted: str) -> Select[Any]:
    query = select(_VOLUMES.c.project_id).where(_WHERE["id"])
    return query.where(_DELETED[read_deleted]) if read_deleted in _DELETED else query


def check_visible(tx: Connection | Session, ctx: RequestContext, volume_id: str) -> str:
    """Return ``volume_id`` if ``ctx`` may see that volume (its read_deleted, its project for a
    user, checked on the row found by id); raise VolumeNotFound."""
    found = connection_of(tx).execute(_visible_select(ctx.read_deleted), {"volume_id": volume_id}).first()
    if found is None or (ctx.is_user and found.project_id != ctx.project_id):
        raise exception.VolumeNotFound(volume_id=volume_id)
    return volume_id


# --- reads ----------------------------------------------------------------------------------------
@handler(single_statement=True)
def volume_get(tx: Connection, ctx: RequestContext, volume_id: str, *, settings: Settings) -> Record:
    """Return the volume (context's read_deleted; a user sees its project's only); raise
    VolumeNotFound."""
    return _one(volume_records(tx, ctx, settings, "id", volume_id=volume_id), volume_id)


@handler(auth=Auth.ADMIN, single_statement=True)
def volume_get_all(tx: Connection, ctx: RequestContext, *, settings: Settings) -> list[Record]:
    """Return every volume (context's read_deleted), by id."""
    return volume_records(tx, ctx, settings)


@handler(auth=Auth.ADMIN, single_statement=True)
def volume_get_all_by_host(
    tx: Connection, ctx: RequestContext, host: str, *, settings: Settings
) -> list[Record]:
    """Return the volumes on ``host`` (exact match; context's read_deleted), by id."""
    return volume_records(tx, ctx, settings, "host", host=host)


@handler(auth=Auth.ADMIN, single_statement=True)
def volume_get_all_by_instance_uuid(
    tx: Connection, ctx: RequestContext, instance_uuid: str, *, settings: Settings
) -> list[Record]:
    """Return the live volumes attached to ``instance_uuid``, by id."""
    return volume_records(tx, ctx, settings, "instance", read_deleted="no", instance_uuid=instance_uuid)


@handler(project_arg="project_id", single_statement=True)
def volume_get_all_by_project(
    tx: Connection, ctx: RequestContext, project_id: str | None, *, settings: Settings
) -> list[Record]:
    """Return the project's volumes (context's read_deleted), by id; a user may name only its own
    project (NotAuthorized)."""
    if project_id is None:
        return volume_records(tx, ctx, settings, "no_project")
    return volume_records(tx, ctx, settings, "project", project_id=project_id)


@handler(single_statement=True)
def volume_get_active_by_window(
    tx: Connection,
    ctx: RequestContext,
    begin: str,
    end: str | None = None,
    project_id: str | None = None,
    *,
    settings: Settings,
) -> list[Record]:
    """Return the volumes, deleted ones included, not deleted before ``begin`` and (if ``end``)
    created before ``end``, of ``project_id`` if given, by id. A user sees its own project's only
    and may name no other (NotAuthorized); a bad datetime is InvalidInput."""
    if ctx.is_user and project_id and project_id != ctx.project_id:
        raise exception.NotAuthorized()
    where, params = ["alive_at_begin"], {"begin": check_datetime("begin", begin)}
    if end is not None:
        where.append("created_before_end")
        params["end"] = check_datetime("end", end)
    if project_id:
        where.append("project")
        params["project_id"] = project_id
    return volume_records(tx, ctx, settings, *where, read_deleted="yes", **params)


@handler(auth=Auth.ADMIN, single_statement=True)
def volume_data_get_for_project(
    tx: Connection, ctx: RequestContext, project_id: str | None
) -> tuple[int, int]:
    """Return ``(count, gigabytes)`` of the project's live volumes (``(0, 0)`` if none)."""
    usage = _USAGE[project_id is None]
    count, gigabytes = tx.execute(usage, {"project_id": project_id}).one()
    return int(count), int(gigabytes)


#: The count and gigabytes of a project's live volumes, by whether the project is null.
_USAGE = {
    no_project: select(func.count(_VOLUMES.c.id), func.coalesce(func.sum(_VOLUMES.c.size), 0)).where(
        _VOLUMES.c.deleted == false(), _WHERE["no_project" if no_project else "project"]
    )
    for no_project in (False, True)
}


# --- writes ---------------------------------------------------------------------------------------
MetadataModel = type[VolumeMetadata] | type[VolumeAdminMetadata]


def live_metadata(tx: Session, model: MetadataModel, volume_id: str) -> list[Any]:
    """Return the volume's live metadata (or admin metadata) rows, by id."""
    query = select(model).where(model.volume_id == volume_id, model.deleted == False)
    return list(tx.scalars(query.order_by(model.id)))


def write_metadata(
    tx: Session, model: MetadataModel, volume_id: str, items: list[tuple[str, str]], *, delete: bool
) -> None:
    """Set validated ``items`` on the volume's live rows, adding rows for new keys; with
    ``delete``, soft-delete the live keys not in ``items``."""
    wanted = dict(items)
    existing = set()
    for row in live_metadata(tx, model, volume_id):
        if row.key in wanted:
            existing.add(row.key)
            if row.value != wanted[row.key]:
                row.value = wanted[row.key]
        elif delete:
            soft_delete(row)
    tx.add_all(model(volume_id=volume_id, key=k, value=v) for k, v in items if k not in existing)
    tx.flush()


#: The inserts of volume_create, built once (the columns come with each call's parameters).
_INSERT = {table: insert(table) for table in (_VOLUMES, _METADATA, _ADMIN_METADATA)}


@handler(writes=True)
def volume_create(
    tx: Connection, ctx: RequestContext, values: dict[str, Any], *, settings: Settings
) -> Record:
    """Create a volume with its ``metadata`` (and, admin only, ``admin_metadata``) and return it.

    A user context fills ``user_id``/``project_id`` from itself when absent and may create in its
    own project only (NotAuthorized). ``id`` defaults to a new uuid4; a used id (live or deleted)
    is Duplicate (the primary key).
    """
    values = dict(values)
    if "admin_metadata" in values and not ctx.is_admin:
        raise exception.AdminRequired()
    if ctx.is_user:
        for key in ("user_id", "project_id"):
            if values.get(key) is None:
                values[key] = getattr(ctx, key)
        if values["project_id"] != ctx.project_id:
            raise exception.NotAuthorized()
    values["id"] = volume_id = values.get("id") or str(uuid.uuid4())
    columns, related = checked_values(
        tx, ctx, _VOLUMES, values, creating=True, relations=("metadata", "admin_metadata")
    )
    metadata = metadata_items(related.get("metadata"))
    admin_metadata = metadata_items(related.get("admin_metadata"), what="admin_metadata")
    tx.execute(_INSERT[_VOLUMES], [columns])
    for table, items in ((_METADATA, metadata), (_ADMIN_METADATA, admin_metadata)):
        if items:
            tx.execute(_INSERT[table], [{"volume_id": volume_id, "key": k, "value": v} for k, v in items])
    return volume_reply(tx, ctx, settings, volume_id)


def _orm_volume(tx: Session, ctx: RequestContext, volume_id: str) -> Volume:
    """Return the ORM row of a volume ``ctx`` may see (for the ORM writes); raise VolumeNotFound."""
    query = model_query(ctx, Volume, project_only=True).where(Volume.id == volume_id)
    volume = tx.scalar(query)
    if volume is None:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return volume


@handler(writes=True)
def volume_update(
    tx: Session, ctx: RequestContext, volume_id: str, values: dict[str, Any], *, settings: Settings
) -> Record:
    """Apply ``values`` to the volume and return it; a non-null ``metadata`` replaces its metadata.

    Raises VolumeNotFound (also for another project's volume); a user may not move a volume to
    another project (NotAuthorized).
    """
    volume = _orm_volume(tx, ctx, volume_id)
    if ctx.is_user and values.get("project_id", ctx.project_id) != ctx.project_id:
        raise exception.NotAuthorized()
    related = apply_values(tx, ctx, volume, values, relations=("metadata",))
    if related.get("metadata") is not None:
        write_metadata(tx, VolumeMetadata, volume.id, metadata_items(related["metadata"]), delete=True)
    tx.flush()
    return volume_reply(tx, ctx, settings, volume.id)


@handler(auth=Auth.ADMIN, writes=True)
def volume_attached(
    tx: Session,
    ctx: RequestContext,
    volume_id: str,
    instance_id: str,
    mountpoint: str | None,
    *,
    settings: Settings,
) -> Record:
    """Mark the volume in-use and attached to ``instance_id`` at ``mountpoint`` and return it.

    Raises InvalidUUID (checked first; the uuid is stored in its canonical form), VolumeNotFound.
    """
    try:
        instance_uuid = str(uuid.UUID(instance_id))
    except ValueError:
        raise exception.InvalidUUID(uuid=instance_id) from None
    attached = {"status": "in-use", "mountpoint": mountpoint, "attach_status": "attached"}
    return volume_update(tx, ctx, volume_id, {**attached, "instance_uuid": instance_uuid}, settings=settings)


@handler(auth=Auth.ADMIN, writes=True)
def volume_detached(tx: Session, ctx: RequestContext, volume_id: str, *, settings: Settings) -> Record:
    """Mark the volume available and detached and return it; raise VolumeNotFound."""
    detached = {"status": "available", "mountpoint": None, "attach_status": "detached", "instance_uuid": None}
    return volume_update(tx, ctx, volume_id, detached, settings=settings)


@handler(auth=Auth.ADMIN, writes=True)
def volume_destroy(tx: Session, ctx: RequestContext, volume_id: str) -> None:
    """Soft-delete the live volume and its live metadata (updated_at kept) and free its iSCSI
    targets; raise VolumeNotFound for a missing or already deleted volume (Folsom deleted it again)."""
    live = model_query(ctx, Volume, read_deleted="no").where(Volume.id == volume_id)
    if tx.scalar(live.with_only_columns(Volume.id)) is None:
        raise exception.VolumeNotFound(volume_id=volume_id)
    if not bulk_soft_delete(tx, Volume, Volume.id == volume_id, Volume.deleted == False):
        raise exception.VolumeNotFound(volume_id=volume_id)  # a concurrent destroy committed first
    tx.execute(
        update(IscsiTarget)
        .where(IscsiTarget.volume_id == volume_id)
        .values(volume_id=None)
        .execution_options(synchronize_session=False)
    )
    for model in (VolumeMetadata, VolumeAdminMetadata):
        bulk_soft_delete(tx, model, model.volume_id == volume_id, model.deleted == False)
