"""Handlers for the ``iscsi_targets`` table.

``(target_num, host)`` is unique. ``volume_allocate_iscsi_target`` locks the free row it hands out
(``SELECT ... FOR UPDATE``), so concurrent workers on PostgreSQL or MariaDB never hand out a target
twice; SQLite serializes writers by itself.
"""

from __future__ import annotations

from typing import Any

from oslo_db import exception as db_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, check_string, model_query
from dbworker.core.registry import Auth, handler
from dbworker.models import IscsiTarget, Volume


@handler(auth=Auth.ADMIN)
def iscsi_target_count_by_host(tx: Session, ctx: RequestContext, host: str) -> int:
    """Return how many targets ``host`` has, free or allocated (context's read_deleted)."""
    query = model_query(ctx, IscsiTarget).where(IscsiTarget.host == host)
    return tx.scalar(query.with_only_columns(func.count(IscsiTarget.id))) or 0


@handler(auth=Auth.ADMIN, writes=True)
def iscsi_target_create_safe(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> IscsiTarget | None:
    """Create and return a target (``target_num`` and ``host`` required); return None if
    ``(target_num, host)`` already exists."""
    target = IscsiTarget()
    apply_values(tx, ctx, target, values, creating=True)
    for key in ("target_num", "host"):
        if getattr(target, key) is None:
            raise exception.InvalidInput(reason=f"{key} is required")
    savepoint = tx.begin_nested()  # a duplicate rolls back only the insert, not the call
    try:
        tx.add(target)
        tx.flush()
    except db_exc.DBDuplicateEntry:
        savepoint.rollback()
        return None
    savepoint.commit()
    return target


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def volume_allocate_iscsi_target(tx: Session, ctx: RequestContext, volume_id: str, host: str) -> int | None:
    """Give the live volume the free target of ``host`` with the lowest number and return that
    number; raise VolumeNotFound, or NoMoreTargets when ``host`` has no free target."""
    check_string("host", host)
    live_volume = select(Volume.id).where(Volume.id == volume_id, Volume.deleted == False)
    if tx.scalar(live_volume) is None:
        raise exception.VolumeNotFound(volume_id=volume_id)
    free = (
        model_query(ctx, IscsiTarget, read_deleted="no")
        .where(IscsiTarget.host == host, IscsiTarget.volume_id.is_(None))
        .order_by(IscsiTarget.target_num, IscsiTarget.id)
        .limit(1)
        .with_for_update()
    )
    target = tx.scalars(free).first()
    if target is None:
        raise exception.NoMoreTargets()
    target.volume_id = volume_id
    tx.flush()
    return target.target_num


@handler(auth=Auth.ADMIN)
def volume_get_iscsi_target_num(tx: Session, ctx: RequestContext, volume_id: str) -> int | None:
    """Return the number of the volume's target (deleted targets too, live ones first); raise
    ISCSITargetNotFoundForVolume."""
    query = (
        model_query(ctx, IscsiTarget, read_deleted="yes")
        .where(IscsiTarget.volume_id == volume_id)
        .order_by(IscsiTarget.deleted, IscsiTarget.id)
        .limit(1)
    )
    target = tx.scalars(query).first()
    if target is None:
        raise exception.ISCSITargetNotFoundForVolume(volume_id=volume_id)
    return target.target_num
