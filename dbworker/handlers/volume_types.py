"""Handlers for the ``volume_types`` and ``volume_type_extra_specs`` tables.

Volume types and their extra specs are global data, not project data: any context reads them. A type's
name is unique among live types; extra-spec writes to a missing type raise VolumeTypeNotFound
instead of storing orphan rows as Folsom did on SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, bulk_soft_delete, check_string, metadata_items, model_query
from dbworker.core.registry import Auth, handler
from dbworker.models import VolumeType, VolumeTypeExtraSpecs


def _types(ctx: RequestContext, read_deleted: str | None = None) -> Select[tuple[VolumeType]]:
    """Volume types with their live extra specs loaded (the reply flattens them)."""
    query = model_query(ctx, VolumeType, read_deleted=read_deleted)
    return query.options(selectinload(VolumeType.extra_specs))


def _live_specs(volume_type_id: int, *where: Any) -> Select[tuple[VolumeTypeExtraSpecs]]:
    return select(VolumeTypeExtraSpecs).where(
        VolumeTypeExtraSpecs.volume_type_id == volume_type_id,
        VolumeTypeExtraSpecs.deleted == False,
        *where,
    )


def _lock_type_name(tx: Session, name: str) -> None:
    """Make concurrent creations of one type name (no unique index: Folsom's schema, soft delete)
    run one after the other, so the second sees the first's type and raises VolumeTypeExists.

    PostgreSQL: a transaction-scoped advisory lock on the name (row locks cannot lock a row that
    does not exist yet). MariaDB/MySQL: the name check that follows is a locking read, whose
    next-key locks make a concurrent insert wait or deadlock (the dispatcher re-runs the call).
    SQLite: a write call holds the database's write lock from its BEGIN.
    """
    if tx.get_bind().dialect.name == "postgresql":
        key = func.hashtext(f"dbworker.volume_types.name:{name}")
        tx.execute(select(func.pg_advisory_xact_lock(key)))


def _lock_live_type(tx: Session, volume_type_id: int) -> VolumeType:
    """Return the live type, locked against concurrent spec writes; raise VolumeTypeNotFound."""
    query = select(VolumeType).where(
        VolumeType.id == volume_type_id,
        VolumeType.deleted == False,
    )
    volume_type = tx.scalar(query.with_for_update())
    if volume_type is None:
        raise exception.VolumeTypeNotFound(volume_type_id=volume_type_id)
    return volume_type


@handler(auth=Auth.ADMIN, writes=True)
def volume_type_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> VolumeType:
    """Create a type with the ``extra_specs`` dict of ``values`` as spec rows and return it;
    raise VolumeTypeExists when a live type has the name, InvalidInput when it has none."""
    if "name" not in values:
        raise exception.InvalidInput(reason="name is required")
    name = check_string("name", values["name"])
    specs = metadata_items(values.get("extra_specs"), what="extra_specs")
    volume_type = VolumeType()
    apply_values(tx, ctx, volume_type, values, creating=True, relations=("extra_specs",))
    _lock_type_name(tx, name)
    live = model_query(ctx, VolumeType, read_deleted="no").where(VolumeType.name == name)
    if tx.scalar(live.limit(1).with_for_update()) is not None:
        raise exception.VolumeTypeExists(name=name)
    tx.add(volume_type)
    tx.flush()
    tx.add_all(VolumeTypeExtraSpecs(volume_type_id=volume_type.id, key=k, value=v) for k, v in specs)
    tx.flush()
    return tx.scalars(
        _types(ctx, read_deleted="yes")
        .where(VolumeType.id == volume_type.id)
        .execution_options(populate_existing=True)
    ).one()


@handler
def volume_type_get(tx: Session, ctx: RequestContext, id: int) -> VolumeType:
    """Return the type (context's read_deleted) with its live extra specs; raise
    VolumeTypeNotFound."""
    volume_type = tx.scalar(_types(ctx).where(VolumeType.id == id))
    if volume_type is None:
        raise exception.VolumeTypeNotFound(volume_type_id=id)
    return volume_type


@handler
def volume_type_get_by_name(tx: Session, ctx: RequestContext, name: str) -> VolumeType:
    """Return the type named ``name`` (context's read_deleted; a live one first) with its live
    extra specs; raise VolumeTypeNotFoundByName."""
    query = _types(ctx).where(VolumeType.name == name).order_by(VolumeType.deleted, VolumeType.id)
    volume_type = tx.scalars(query.limit(1)).first()
    if volume_type is None:
        raise exception.VolumeTypeNotFoundByName(volume_type_name=name)
    return volume_type


@handler
def volume_type_get_all(tx: Session, ctx: RequestContext, inactive: bool = False) -> dict[str, VolumeType]:
    """Return ``{name: type}`` of the live types, deleted ones too with ``inactive``; where a
    deleted type shares a live type's name, the live one is returned (else the newest)."""
    query = _types(ctx, read_deleted="yes" if inactive else "no").order_by(
        VolumeType.name, VolumeType.deleted.desc(), VolumeType.id
    )
    return {volume_type.name: volume_type for volume_type in tx.scalars(query)}


@handler(auth=Auth.ADMIN, writes=True)
def volume_type_destroy(tx: Session, ctx: RequestContext, name: str) -> None:
    """Soft-delete the live type named ``name`` and its extra specs, keeping updated_at; raise
    VolumeTypeNotFoundByName (also for a deleted type). Volumes of the type are untouched."""
    query = model_query(ctx, VolumeType, read_deleted="no").where(VolumeType.name == name)
    ids = list(tx.scalars(query.with_only_columns(VolumeType.id).with_for_update()))
    if not ids:
        raise exception.VolumeTypeNotFoundByName(volume_type_name=name)
    bulk_soft_delete(
        tx,
        VolumeTypeExtraSpecs,
        VolumeTypeExtraSpecs.volume_type_id.in_(ids),
        VolumeTypeExtraSpecs.deleted == False,
    )
    bulk_soft_delete(tx, VolumeType, VolumeType.id.in_(ids))


@handler
def volume_type_extra_specs_get(tx: Session, ctx: RequestContext, volume_type_id: int) -> dict[str, str]:
    """Return the type's live extra specs as ``{key: value}`` (``{}`` for an unknown type)."""
    query = _live_specs(volume_type_id).order_by(VolumeTypeExtraSpecs.id)
    return {spec.key: spec.value for spec in tx.scalars(query)}


@handler(writes=True)
def volume_type_extra_specs_delete(tx: Session, ctx: RequestContext, volume_type_id: int, key: str) -> None:
    """Soft-delete the type's live spec ``key``, keeping updated_at (an absent key is not an
    error); raise VolumeTypeNotFound for a missing or deleted type."""
    check_string("key", key)
    _lock_live_type(tx, volume_type_id)
    bulk_soft_delete(
        tx,
        VolumeTypeExtraSpecs,
        VolumeTypeExtraSpecs.volume_type_id == volume_type_id,
        VolumeTypeExtraSpecs.key == key,
        VolumeTypeExtraSpecs.deleted == False,
    )


@handler(writes=True)
def volume_type_extra_specs_update_or_create(
    tx: Session, ctx: RequestContext, volume_type_id: int, extra_specs: dict[str, Any]
) -> dict[str, str]:
    """Set each spec of ``extra_specs`` (values stored as strings), creating missing keys, and
    return the type's resulting specs; raise VolumeTypeNotFound for a missing or deleted type."""
    items = metadata_items(extra_specs, what="extra_specs")
    _lock_live_type(tx, volume_type_id)
    existing = {spec.key: spec for spec in tx.scalars(_live_specs(volume_type_id))}
    for key, value in items:
        spec = existing.get(key)
        if spec is None:
            tx.add(VolumeTypeExtraSpecs(volume_type_id=volume_type_id, key=key, value=value))
        elif spec.value != value:
            spec.value = value
    tx.flush()
    return volume_type_extra_specs_get(tx, ctx, volume_type_id)
