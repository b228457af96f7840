"""Handlers for the ``snapshots`` table.

Snapshots are project data: a user context reads and changes only its own project's snapshots,
and creates snapshots only in its own project.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, bulk_soft_delete, model_query
from dbworker.core.registry import Auth, handler
from dbworker.models import Snapshot


def _snapshots(ctx: RequestContext, read_deleted: str | None = None) -> Select[tuple[Snapshot]]:
    """Snapshots visible to ``ctx``: its project's only, for a user context."""
    return model_query(ctx, Snapshot, read_deleted=read_deleted, project_only=True)


def _check_own_project(ctx: RequestContext, values: dict[str, Any]) -> None:
    """Refuse a user context that names another project in ``values``."""
    if ctx.is_user and values.get("project_id", ctx.project_id) != ctx.project_id:
        raise exception.NotAuthorized()


@handler(writes=True)
def snapshot_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> Snapshot:
    """Create and return a snapshot (a new uuid id unless ``values`` has one); a user context
    fills in its own user_id/project_id when absent and may not name another project."""
    _check_own_project(ctx, values)
    snapshot = Snapshot()
    apply_values(tx, ctx, snapshot, values, creating=True)
    if not snapshot.id:
        snapshot.id = str(uuid.uuid4())
    if ctx.is_user:
        snapshot.project_id = ctx.project_id
        if snapshot.user_id is None:
            snapshot.user_id = ctx.user_id
    tx.add(snapshot)
    tx.flush()
    return snapshot


@handler(auth=Auth.ADMIN, writes=True)
def snapshot_destroy(tx: Session, ctx: RequestContext, snapshot_id: str) -> None:
    """Soft-delete the snapshot, keeping updated_at; raise SnapshotNotFound if it is missing or
    already deleted (Folsom deleted it again)."""
    live = model_query(ctx, Snapshot, read_deleted="no").where(Snapshot.id == snapshot_id)
    if tx.scalar(live) is None:
        raise exception.SnapshotNotFound(snapshot_id=snapshot_id)
    if not bulk_soft_delete(tx, Snapshot, Snapshot.id == snapshot_id, Snapshot.deleted == False):
        raise exception.SnapshotNotFound(snapshot_id=snapshot_id)  # a concurrent destroy committed first


@handler
def snapshot_get(tx: Session, ctx: RequestContext, snapshot_id: str) -> Snapshot:
    """Return the snapshot (context's read_deleted, own project for a user); raise
    SnapshotNotFound."""
    snapshot = tx.scalar(_snapshots(ctx).where(Snapshot.id == snapshot_id))
    if snapshot is None:
        raise exception.SnapshotNotFound(snapshot_id=snapshot_id)
    return snapshot


@handler(auth=Auth.ADMIN)
def snapshot_get_all(tx: Session, ctx: RequestContext) -> list[Snapshot]:
    """Return every snapshot (context's read_deleted)."""
    return list(tx.scalars(model_query(ctx, Snapshot).order_by(Snapshot.id)))


@handler(project_arg="project_id")
def snapshot_get_all_by_project(tx: Session, ctx: RequestContext, project_id: str) -> list[Snapshot]:
    """Return the project's snapshots (context's read_deleted); a user names only its own."""
    query = _snapshots(ctx).where(Snapshot.project_id == project_id)
    return list(tx.scalars(query.order_by(Snapshot.id)))


@handler
def snapshot_get_all_for_volume(tx: Session, ctx: RequestContext, volume_id: str) -> list[Snapshot]:
    """Return the live snapshots of the volume (a user's own project's only)."""
    query = _snapshots(ctx, read_deleted="no").where(Snapshot.volume_id == volume_id)
    return list(tx.scalars(query.order_by(Snapshot.id)))


@handler(writes=True)
def snapshot_update(tx: Session, ctx: RequestContext, snapshot_id: str, values: dict[str, Any]) -> Snapshot:
    """Apply ``values`` to the snapshot and return it; raise SnapshotNotFound (also for another
    project's snapshot under a user context) and NotAuthorized for a move to another project."""
    _check_own_project(ctx, values)
    snapshot = snapshot_get(tx, ctx, snapshot_id)
    apply_values(tx, ctx, snapshot, values)
    tx.flush()
    return snapshot
