"""Handlers for the ``volumes`` table (reference §2.4, §3.6-§3.8, §3.10, §3.11; contract §3, §4,
§9.10-§9.15).

Every volume reply is built in one place, :func:`volume_records`, from two statements built once:
the volumes joined to their live volume type, then a single ``UNION ALL`` of their live metadata,
their types' live extra specs and, for an admin context, their live admin metadata. Rows map
straight to records (:mod:`dbworker.records`): the reads and ``volume_create`` never load ORM
objects. The other writes use the ORM and re-read their reply the same way.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
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
from dbworker.records import Mapper, Record
from dbworker.registry import Auth, handler
from dbworker.settings import Settings

_VOLUMES = Volume.__table__
_TYPES = VolumeType.__table__
_METADATA = VolumeMetadata.__table__
_ADMIN_METADATA = VolumeAdminMetadata.__table__
_SPECS = VolumeTypeExtraSpecs.__table__

# --- the volume reply: statements built once, rows mapped straight to records ------------------
_VOLUME = Mapper(_VOLUMES)
_TYPE = Mapper(_TYPES, offset=len(_VOLUMES.c))
_TYPE_ID = _TYPE.start  # the joined type's id: NULL when the volume has no live type
_WITH_TYPE = select(*_VOLUMES.c, *_TYPES.c).select_from(
    _VOLUMES.outerjoin(_TYPES, and_(_TYPES.c.id == _VOLUMES.c.volume_type_id, _TYPES.c.deleted == false()))
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

#: The children of the volumes: ``kind`` m (metadata), e (extra specs of the volume's type, owner
#: = the type id as a string) or a (admin metadata); metadata rows keep every column (they are
#: records in the reply), the others only their key and value.
_METADATA_ROW = Mapper(_METADATA, offset=1)
_KEY, _VALUE, _OWNER = (
    _METADATA_ROW.start + _METADATA_ROW.keys.index(name) for name in ("key", "value", "volume_id")
)


def _pairs(kind: str, table: Any, owner: Any, where: Any) -> Select[Any]:
    """A ``kind`` branch of the children union: key, value and owner where metadata has them."""
    columns = {"id": table.c.id, "key": table.c.key, "value": table.c.value, "volume_id": owner}
    return select(
        literal_column(f"'{kind}'").label("kind"), *(columns.get(c.key, null()) for c in _METADATA.c)
    ).where(where, table.c.deleted == false())


@functools.cache
def _children(many: bool, admin: bool) -> Select[Any]:
    """The union of the children of one volume (``volume_id``, ``volume_type_id``) or of many
    (``volume_ids``, ``volume_type_ids``), ordered by kind, owner and id."""
    if many:
        of_volumes = bindparam("volume_ids", expanding=True)
        of_types = bindparam("volume_type_ids", expanding=True)
        volume_in, type_in = (lambda c: c.in_(of_volumes)), (lambda c: c.in_(of_types))
    else:
        volume_in = lambda c: c == bindparam("volume_id")  # noqa: E731
        type_in = lambda c: c == bindparam("volume_type_id")  # noqa: E731
    branches = [
        select(literal_column("'m'").label("kind"), *_METADATA.c).where(
            volume_in(_METADATA.c.volume_id), _METADATA.c.deleted == false()
        ),
        _pairs("e", _SPECS, cast(_SPECS.c.volume_type_id, String(36)), type_in(_SPECS.c.volume_type_id)),
    ]
    if admin:
        _admin = _ADMIN_METADATA
        branches.append(_pairs("a", _admin, _admin.c.volume_id, volume_in(_admin.c.volume_id)))
    union = union_all(*branches).subquery()
    kind, owner, row_id = union.c[0], union.c[_OWNER], union.c[1 + _METADATA_ROW.keys.index("id")]
    return select(union).order_by(kind, owner, row_id)


@functools.cache
def _volume_select(
    read_deleted: str, caller_only: bool, where: tuple[str, ...], ids_only: bool = False
) -> Select[Any]:
    """Volumes joined to their type (``ids_only``: their ids alone), filtered by ``read_deleted``,
    by the caller's project for a user context (``caller_only``) and by the :data:`_WHERE`
    conditions named in ``where``; by id."""
    query = select(_VOLUMES.c.id) if ids_only else _WITH_TYPE
    if read_deleted in _DELETED:
        query = query.where(_DELETED[read_deleted])
    conditions = [*where, "caller_project"] if caller_only else where
    return query.where(*(_WHERE[name] for name in conditions)).order_by(_VOLUMES.c.id)


def volume_records(
    conn: Connection,
    ctx: RequestContext,
    settings: Settings,
    *where: str,
    read_deleted: str | None = None,
    **params: Any,
) -> list[Record]:
    """Return the volumes ``ctx`` may see that match the :data:`_WHERE` conditions named in
    ``where`` (with their ``params``), by id, as reply records (contract §4): every column,
    ``name``, the live ``metadata`` as a dict and as ``volume_metadata`` records, the live
    ``volume_type`` (with its ``extra_specs``) or null, and for an admin ``admin_metadata``."""
    query = _volume_select(read_deleted or ctx.read_deleted, ctx.is_user, where)
    if ctx.is_user:
        params["caller_project_id"] = ctx.project_id
    rows = conn.execute(query, params).all()
    if not rows:
        return []
    metadata, specs, admin = _children_of(conn, rows, admin=ctx.is_admin)
    records = []
    for row in rows:
        volume = _VOLUME(row)
        volume_id = volume["id"]
        rows_of_volume = metadata.get(volume_id, [])
        volume["name"] = settings.volume_name_template % volume_id
        volume["metadata"] = {m["key"]: m["value"] for m in rows_of_volume}
        volume["volume_metadata"] = rows_of_volume
        if row[_TYPE_ID] is None:
            volume["volume_type"] = None
        else:
            volume_type = volume["volume_type"] = _TYPE(row)
            volume_type["extra_specs"] = dict(specs.get(str(volume_type["id"]), {}))
        if ctx.is_admin:
            volume["admin_metadata"] = admin.get(volume_id, {})
        records.append(volume)
    return records


def _children_of(
    conn: Connection, rows: Sequence[Any], *, admin: bool
) -> tuple[dict[str, list[Record]], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Return the volumes' metadata records, their types' extra specs and (``admin``) their admin
    metadata, by owner, in one statement."""
    volume_ids = [row[0] for row in rows]
    type_ids = sorted({row[_TYPE_ID] for row in rows if row[_TYPE_ID] is not None})
    if len(rows) == 1:
        params: dict[str, Any] = {
            "volume_id": volume_ids[0],
            "volume_type_id": type_ids[0] if type_ids else None,
        }
    else:
        params = {"volume_ids": volume_ids, "volume_type_ids": type_ids}
    metadata: dict[str, list[Record]] = {}
    pairs: dict[str, dict[str, dict[str, str]]] = {"e": {}, "a": {}}
    for row in conn.execute(_children(len(rows) > 1, admin), params):
        if row[0] == "m":
            metadata.setdefault(row[_OWNER], []).append(_METADATA_ROW(row))
        else:
            pairs[row[0]].setdefault(row[_OWNER], {})[row[_KEY]] = row[_VALUE]
    return metadata, pairs["e"], pairs["a"]


def _one(records: list[Record], volume_id: str) -> Record:
    if not records:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return records[0]


def volume_reply(tx: Connection | Session, ctx: RequestContext, settings: Settings, volume_id: str) -> Record:
    """Return the reply record of a volume this call just wrote, whatever ``ctx.read_deleted``."""
    found = volume_records(connection_of(tx), ctx, settings, "id", read_deleted="yes", volume_id=volume_id)
    return _one(found, volume_id)


def check_visible(tx: Connection | Session, ctx: RequestContext, volume_id: str) -> str:
    """Return ``volume_id`` if ``ctx`` may see that volume (its read_deleted, its project for a
    user); raise VolumeNotFound."""
    query = _volume_select(ctx.read_deleted, ctx.is_user, ("id",), ids_only=True)
    params = {"volume_id": volume_id}
    if ctx.is_user:
        params["caller_project_id"] = ctx.project_id
    if connection_of(tx).execute(query, params).first() is None:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return volume_id


# --- reads ----------------------------------------------------------------------------------------
@handler
def volume_get(tx: Connection, ctx: RequestContext, volume_id: str, *, settings: Settings) -> Record:
    """Return the volume (context's read_deleted; a user sees its project's only); raise
    VolumeNotFound."""
    return _one(volume_records(tx, ctx, settings, "id", volume_id=volume_id), volume_id)


@handler(auth=Auth.ADMIN)
def volume_get_all(tx: Connection, ctx: RequestContext, *, settings: Settings) -> list[Record]:
    """Return every volume (context's read_deleted), by id."""
    return volume_records(tx, ctx, settings)


@handler(auth=Auth.ADMIN)
def volume_get_all_by_host(
    tx: Connection, ctx: RequestContext, host: str, *, settings: Settings
) -> list[Record]:
    """Return the volumes on ``host`` (exact match; context's read_deleted), by id."""
    return volume_records(tx, ctx, settings, "host", host=host)


@handler(auth=Auth.ADMIN)
def volume_get_all_by_instance_uuid(
    tx: Connection, ctx: RequestContext, instance_uuid: str, *, settings: Settings
) -> list[Record]:
    """Return the live volumes attached to ``instance_uuid``, by id."""
    return volume_records(tx, ctx, settings, "instance", read_deleted="no", instance_uuid=instance_uuid)


@handler(project_arg="project_id")
def volume_get_all_by_project(
    tx: Connection, ctx: RequestContext, project_id: str | None, *, settings: Settings
) -> list[Record]:
    """Return the project's volumes (context's read_deleted), by id; a user may name only its own
    project (NotAuthorized)."""
    if project_id is None:
        return volume_records(tx, ctx, settings, "no_project")
    return volume_records(tx, ctx, settings, "project", project_id=project_id)


@handler
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


@handler(auth=Auth.ADMIN)
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
    tx.execute(insert(_VOLUMES), [columns])
    for table, items in ((_METADATA, metadata), (_ADMIN_METADATA, admin_metadata)):
        if items:
            tx.execute(insert(table), [{"volume_id": volume_id, "key": k, "value": v} for k, v in items])
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
    targets; raise VolumeNotFound for a missing or already deleted volume (contract §9.14)."""
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
