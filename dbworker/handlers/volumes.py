"""Handlers for the ``volumes``, ``volume_metadata`` and ``volume_admin_metadata`` tables
(reference §2.4, §2.6, §3.6-§3.8, §3.10, §3.11, §3.13; contract §3, §4, §9.10-§9.15).

Volume replies carry their live metadata, their volume type (with its extra specs) and, for admin
contexts only, their admin metadata: :func:`_volumes` eager-loads exactly that.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from dbworker import exception
from dbworker.context import RequestContext
from dbworker.models import IscsiTarget, Volume, VolumeAdminMetadata, VolumeMetadata, VolumeType
from dbworker.query import (
    apply_values,
    bulk_soft_delete,
    check_datetime,
    metadata_items,
    model_query,
    soft_delete,
)
from dbworker.registry import Auth, handler

MetadataModel = type[VolumeMetadata] | type[VolumeAdminMetadata]


def _volumes(ctx: RequestContext, *, read_deleted: str | None = None) -> Select[tuple[Volume]]:
    """Project-scoped volumes with what their replies need; rows already in the transaction are
    re-read, so a reply after a write shows the written metadata. The volume type (many-to-one)
    comes in the same statement (a join); the collections come by one ``IN`` query each."""
    loads = [
        selectinload(Volume.volume_metadata),
        joinedload(Volume.volume_type).selectinload(VolumeType.extra_specs),
    ]
    if ctx.is_admin:
        loads.append(selectinload(Volume.volume_admin_metadata))
    query = model_query(ctx, Volume, read_deleted=read_deleted, project_only=True)
    return query.options(*loads).execution_options(populate_existing=True)


def _reread(tx: Session, ctx: RequestContext, volume_id: str) -> Volume:
    """Return a volume this call just wrote, whatever the context's read_deleted."""
    return tx.scalars(_volumes(ctx, read_deleted="yes").where(Volume.id == volume_id)).one()


def _all(tx: Session, query: Select[tuple[Volume]]) -> list[Volume]:
    return list(tx.scalars(query.order_by(Volume.id)))


@handler
def volume_get(tx: Session, ctx: RequestContext, volume_id: str) -> Volume:
    """Return the volume (context's read_deleted; a user sees its project's only); raise
    VolumeNotFound."""
    volume = tx.scalar(_volumes(ctx).where(Volume.id == volume_id))
    if volume is None:
        raise exception.VolumeNotFound(volume_id=volume_id)
    return volume


@handler(auth=Auth.ADMIN)
def volume_get_all(tx: Session, ctx: RequestContext) -> list[Volume]:
    """Return every volume (context's read_deleted), by id."""
    return _all(tx, _volumes(ctx))


@handler(auth=Auth.ADMIN)
def volume_get_all_by_host(tx: Session, ctx: RequestContext, host: str) -> list[Volume]:
    """Return the volumes on ``host`` (exact match; context's read_deleted), by id."""
    return _all(tx, _volumes(ctx).where(Volume.host == host))


@handler(auth=Auth.ADMIN)
def volume_get_all_by_instance_uuid(tx: Session, ctx: RequestContext, instance_uuid: str) -> list[Volume]:
    """Return the live volumes attached to ``instance_uuid``, by id."""
    return _all(tx, _volumes(ctx, read_deleted="no").where(Volume.instance_uuid == instance_uuid))


@handler(project_arg="project_id")
def volume_get_all_by_project(tx: Session, ctx: RequestContext, project_id: str | None) -> list[Volume]:
    """Return the project's volumes (context's read_deleted), by id; a user may name only its own
    project (NotAuthorized)."""
    return _all(tx, _volumes(ctx).where(Volume.project_id == project_id))


@handler(writes=True)
def volume_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> Volume:
    """Create a volume with its ``metadata`` (and, admin only, ``admin_metadata``) and return it.

    A user context fills ``user_id``/``project_id`` from itself when absent and may create in its
    own project only (NotAuthorized). ``id`` defaults to a new uuid4; a used id is Duplicate.
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
    values["id"] = values.get("id") or str(uuid.uuid4())
    volume = Volume()
    related = apply_values(tx, ctx, volume, values, creating=True, relations=("metadata", "admin_metadata"))
    metadata = metadata_items(related.get("metadata"))
    admin_metadata = metadata_items(related.get("admin_metadata"), what="admin_metadata")
    # A used id (live or deleted) fails the primary key: the dispatcher answers Duplicate. A new
    # volume has no metadata rows yet, so its items are inserted without reading any first.
    tx.add(volume)
    tx.flush()
    tx.add_all(VolumeMetadata(volume_id=volume.id, key=k, value=v) for k, v in metadata)
    tx.add_all(VolumeAdminMetadata(volume_id=volume.id, key=k, value=v) for k, v in admin_metadata)
    tx.flush()
    return _reread(tx, ctx, volume.id)


@handler(writes=True)
def volume_update(tx: Session, ctx: RequestContext, volume_id: str, values: dict[str, Any]) -> Volume:
    """Apply ``values`` to the volume and return it; a non-null ``metadata`` replaces its metadata.

    Raises VolumeNotFound (also for another project's volume); a user may not move a volume to
    another project (NotAuthorized).
    """
    volume = volume_get(tx, ctx, volume_id)
    if ctx.is_user and values.get("project_id", ctx.project_id) != ctx.project_id:
        raise exception.NotAuthorized()
    related = apply_values(tx, ctx, volume, values, relations=("metadata",))
    if related.get("metadata") is not None:
        items = metadata_items(related["metadata"])
        _metadata_write(tx, VolumeMetadata, volume.id, items, delete=True)
    tx.flush()
    return _reread(tx, ctx, volume.id)


@handler(auth=Auth.ADMIN, writes=True)
def volume_attached(
    tx: Session, ctx: RequestContext, volume_id: str, instance_id: str, mountpoint: str | None
) -> Volume:
    """Mark the volume in-use and attached to ``instance_id`` at ``mountpoint`` and return it.

    Raises InvalidUUID (checked first; the uuid is stored in its canonical form), VolumeNotFound.
    """
    try:
        instance_uuid = str(uuid.UUID(instance_id))
    except ValueError:
        raise exception.InvalidUUID(uuid=instance_id) from None
    return volume_update(
        tx,
        ctx,
        volume_id,
        {
            "status": "in-use",
            "mountpoint": mountpoint,
            "attach_status": "attached",
            "instance_uuid": instance_uuid,
        },
    )


@handler(auth=Auth.ADMIN, writes=True)
def volume_detached(tx: Session, ctx: RequestContext, volume_id: str) -> Volume:
    """Mark the volume available and detached and return it; raise VolumeNotFound."""
    return volume_update(
        tx,
        ctx,
        volume_id,
        {"status": "available", "mountpoint": None, "attach_status": "detached", "instance_uuid": None},
    )


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


@handler(auth=Auth.ADMIN)
def volume_data_get_for_project(tx: Session, ctx: RequestContext, project_id: str | None) -> tuple[int, int]:
    """Return ``(count, gigabytes)`` of the project's live volumes (``(0, 0)`` if none)."""
    query = select(func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0)).where(
        Volume.deleted == False, Volume.project_id == project_id
    )
    count, gigabytes = tx.execute(query).one()
    return int(count), int(gigabytes)


@handler
def volume_get_active_by_window(
    tx: Session,
    ctx: RequestContext,
    begin: str,
    end: str | None = None,
    project_id: str | None = None,
) -> list[Volume]:
    """Return the volumes, deleted ones included, not deleted before ``begin`` and (if ``end``)
    created before ``end``, of ``project_id`` if given, by id. A user sees its own project's only
    and may name no other (NotAuthorized); a bad datetime is InvalidInput."""
    if ctx.is_user and project_id and project_id != ctx.project_id:
        raise exception.NotAuthorized()
    begin_at = check_datetime("begin", begin)
    end_at = None if end is None else check_datetime("end", end)
    query = _volumes(ctx, read_deleted="yes").where(
        or_(Volume.deleted_at.is_(None), Volume.deleted_at > begin_at)
    )
    if end_at is not None:
        query = query.where(Volume.created_at < end_at)
    if project_id:
        query = query.where(Volume.project_id == project_id)
    return _all(tx, query)


# --- metadata -------------------------------------------------------------------------------------
def _live_metadata(tx: Session, model: MetadataModel, volume_id: str) -> list[Any]:
    query = select(model).where(model.volume_id == volume_id, model.deleted == False)
    return list(tx.scalars(query.order_by(model.id)))


def _metadata_dict(tx: Session, model: MetadataModel, volume_id: str) -> dict[str, str]:
    return {row.key: row.value for row in _live_metadata(tx, model, volume_id)}


def _metadata_write(
    tx: Session, model: MetadataModel, volume_id: str, items: list[tuple[str, str]], *, delete: bool
) -> None:
    """Set validated ``items`` on the volume's live rows, adding rows for new keys; with
    ``delete``, soft-delete the live keys not in ``items``."""
    wanted = dict(items)
    existing = set()
    for row in _live_metadata(tx, model, volume_id):
        if row.key in wanted:
            existing.add(row.key)
            if row.value != wanted[row.key]:
                row.value = wanted[row.key]
        elif delete:
            soft_delete(row)
    tx.add_all(model(volume_id=volume_id, key=k, value=v) for k, v in items if k not in existing)
    tx.flush()


def _metadata_update(
    tx: Session, model: MetadataModel, volume_id: str, metadata: dict[str, Any], delete: bool, what: str
) -> dict[str, str]:
    _metadata_write(tx, model, volume_id, metadata_items(metadata, what=what), delete=delete)
    return _metadata_dict(tx, model, volume_id)


def _metadata_delete(tx: Session, model: MetadataModel, volume_id: str, key: str) -> None:
    bulk_soft_delete(tx, model, model.volume_id == volume_id, model.key == key, model.deleted == False)


@handler
def volume_metadata_get(tx: Session, ctx: RequestContext, volume_id: str) -> dict[str, str]:
    """Return the volume's live metadata as a dict; raise VolumeNotFound."""
    return _metadata_dict(tx, VolumeMetadata, volume_get(tx, ctx, volume_id).id)


@handler(writes=True)
def volume_metadata_delete(tx: Session, ctx: RequestContext, volume_id: str, key: str) -> None:
    """Soft-delete the metadata ``key`` (updated_at kept; an absent key is fine); raise
    VolumeNotFound."""
    _metadata_delete(tx, VolumeMetadata, volume_get(tx, ctx, volume_id).id, key)


@handler(writes=True)
def volume_metadata_update(
    tx: Session, ctx: RequestContext, volume_id: str, metadata: dict[str, Any], delete: bool
) -> dict[str, str]:
    """Set ``metadata`` on the volume (with ``delete``, soft-delete the keys not given) and return
    the resulting metadata; raise VolumeNotFound, InvalidInput."""
    volume = volume_get(tx, ctx, volume_id)
    return _metadata_update(tx, VolumeMetadata, volume.id, metadata, delete, "metadata")


@handler(auth=Auth.ADMIN)
def volume_admin_metadata_get(tx: Session, ctx: RequestContext, volume_id: str) -> dict[str, str]:
    """Return the volume's live admin metadata as a dict; raise VolumeNotFound."""
    return _metadata_dict(tx, VolumeAdminMetadata, volume_get(tx, ctx, volume_id).id)


@handler(auth=Auth.ADMIN, writes=True)
def volume_admin_metadata_delete(tx: Session, ctx: RequestContext, volume_id: str, key: str) -> None:
    """Soft-delete the admin metadata ``key`` (an absent key is fine); raise VolumeNotFound."""
    _metadata_delete(tx, VolumeAdminMetadata, volume_get(tx, ctx, volume_id).id, key)


@handler(auth=Auth.ADMIN, writes=True)
def volume_admin_metadata_update(
    tx: Session, ctx: RequestContext, volume_id: str, metadata: dict[str, Any], delete: bool
) -> dict[str, str]:
    """Set admin ``metadata`` on the volume (with ``delete``, soft-delete the keys not given) and
    return the resulting admin metadata; raise VolumeNotFound, InvalidInput."""
    volume = volume_get(tx, ctx, volume_id)
    return _metadata_update(tx, VolumeAdminMetadata, volume.id, metadata, delete, "admin_metadata")
