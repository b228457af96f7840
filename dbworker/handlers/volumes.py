"""Handlers for the ``volumes`` table.

Every reply is a volume record built by :mod:`dbworker.handlers.volume_replies` (one statement,
rows mapped straight to records): the reads and ``volume_create`` never load ORM objects; the
other writes use the ORM and re-read their reply the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Connection,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import (
    apply_values,
    bulk_soft_delete,
    check_datetime,
    checked_values,
    metadata_items,
    model_query,
    soft_delete,
)
from dbworker.core.registry import Auth, handler
from dbworker.core.settings import Settings
from dbworker.handlers.volume_replies import (
    ADMIN_METADATA,
    METADATA,
    VOLUMES,
    WHERE,
    one_volume,
    volume_records,
    volume_reply,
)
from dbworker.models import (
    IscsiTarget,
    Volume,
    VolumeAdminMetadata,
    VolumeMetadata,
)
from dbworker.protocol.wire import Record


# --- reads ----------------------------------------------------------------------------------------
@handler(single_statement=True)
def volume_get(tx: Connection, ctx: RequestContext, volume_id: str, *, settings: Settings) -> Record:
    """Return the volume (context's read_deleted; a user sees its project's only); raise
    VolumeNotFound."""
    return one_volume(volume_records(tx, ctx, settings, "id", volume_id=volume_id), volume_id)


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
    no_project: select(func.count(VOLUMES.c.id), func.coalesce(func.sum(VOLUMES.c.size), 0)).where(
        VOLUMES.c.deleted == false(), WHERE["no_project" if no_project else "project"]
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
_INSERT = {table: insert(table) for table in (VOLUMES, METADATA, ADMIN_METADATA)}


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
        tx, ctx, VOLUMES, values, creating=True, relations=("metadata", "admin_metadata")
    )
    metadata = metadata_items(related.get("metadata"))
    admin_metadata = metadata_items(related.get("admin_metadata"), what="admin_metadata")
    tx.execute(_INSERT[VOLUMES], [columns])
    for table, items in ((METADATA, metadata), (ADMIN_METADATA, admin_metadata)):
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
