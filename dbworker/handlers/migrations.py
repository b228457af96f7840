"""Handlers for the ``migrations`` table, a nova leftover.

Every function is admin only. Reads see deleted rows (Folsom's ``read_deleted="yes"``). Folsom's
writes always failed on a foreign key to the absent ``instances`` table; here they work.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, check_int, model_query
from dbworker.core.registry import Auth, handler
from dbworker.models import Migration, utcnow


@handler(auth=Auth.ADMIN, writes=True)
def migration_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> Migration:
    """Create and return a migration."""
    migration = Migration()
    apply_values(tx, ctx, migration, values, creating=True)
    tx.add(migration)
    tx.flush()
    return migration


@handler(auth=Auth.ADMIN, writes=True)
def migration_update(tx: Session, ctx: RequestContext, id: int, values: dict[str, Any]) -> Migration:
    """Apply ``values`` to the migration (deleted ones too) and return it; raise
    MigrationNotFound."""
    migration = migration_get(tx, ctx, id)
    apply_values(tx, ctx, migration, values)
    tx.flush()
    return migration


@handler(auth=Auth.ADMIN)
def migration_get(tx: Session, ctx: RequestContext, migration_id: int) -> Migration:
    """Return the migration, deleted or not; raise MigrationNotFound."""
    query = model_query(ctx, Migration, read_deleted="yes").where(Migration.id == migration_id)
    migration = tx.scalar(query)
    if migration is None:
        raise exception.MigrationNotFound(migration_id=migration_id)
    return migration


@handler(auth=Auth.ADMIN)
def migration_get_by_instance_and_status(
    tx: Session, ctx: RequestContext, instance_uuid: str, status: str
) -> Migration:
    """Return the first migration (by id, deleted ones too) of the instance with ``status``;
    raise MigrationNotFoundByStatus."""
    query = model_query(ctx, Migration, read_deleted="yes").where(
        Migration.instance_uuid == instance_uuid, Migration.status == status
    )
    migration = tx.scalars(query.order_by(Migration.id).limit(1)).first()
    if migration is None:
        raise exception.MigrationNotFoundByStatus(instance_id=instance_uuid, status=status)
    return migration


@handler(auth=Auth.ADMIN)
def migration_get_all_unconfirmed(tx: Session, ctx: RequestContext, confirm_window: int) -> list[Migration]:
    """Return the ``finished`` migrations (deleted ones too) last updated ``confirm_window``
    seconds ago or earlier; rows never updated do not count."""
    cutoff = utcnow() - timedelta(seconds=check_int("confirm_window", confirm_window))
    query = model_query(ctx, Migration, read_deleted="yes").where(
        Migration.updated_at <= cutoff, Migration.status == "finished"
    )
    return list(tx.scalars(query.order_by(Migration.id)))
