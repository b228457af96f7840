"""Handlers for the storage-manager tables ``sm_backend_config``, ``sm_flavors`` and ``sm_volume``
(the storage manager's backends, flavors and volumes).

Every function is admin only. Reads see deleted rows (Folsom's ``read_deleted="yes"``), deletes
are hard deletes, and flavors are found by their label. Deleting a row that others still reference
is refused with InvalidInput; deleting a missing row is not an error, as in Folsom.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import M, apply_values, model_query
from dbworker.core.registry import Auth, handler
from dbworker.models import SmBackendConfig, SmFlavor, SmVolume


def _all(ctx: RequestContext, model: type[M]) -> Select[tuple[M]]:
    return model_query(ctx, model, read_deleted="yes")


def _create(tx: Session, ctx: RequestContext, row: M, values: dict[str, Any]) -> M:
    apply_values(tx, ctx, row, values, creating=True)
    tx.add(row)
    tx.flush()
    return row


def _update(tx: Session, ctx: RequestContext, row: M, values: dict[str, Any]) -> M:
    apply_values(tx, ctx, row, values)
    tx.flush()
    return row


def _refuse_if_referenced(tx: Session, query: Select[Any], what: str) -> None:
    if tx.scalar(query.limit(1)) is not None:
        raise exception.InvalidInput(reason=f"{what} is still in use")


# --- backend configs ----------------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def sm_backend_conf_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> SmBackendConfig:
    """Create and return a backend config (``flavor_id`` must name a flavor)."""
    return _create(tx, ctx, SmBackendConfig(), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_backend_conf_update(
    tx: Session, ctx: RequestContext, sm_backend_conf_id: int, values: dict[str, Any]
) -> SmBackendConfig:
    """Apply ``values`` to the backend config and return it; raise NotFound."""
    return _update(tx, ctx, sm_backend_conf_get(tx, ctx, sm_backend_conf_id), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_backend_conf_delete(tx: Session, ctx: RequestContext, sm_backend_conf_id: int) -> None:
    """Hard-delete the backend config (none is fine); InvalidInput while sm volumes use it."""
    used = select(SmVolume.id).where(SmVolume.backend_id == sm_backend_conf_id)
    _refuse_if_referenced(tx, used, f"sm_backend_conf {sm_backend_conf_id}")
    tx.execute(delete(SmBackendConfig).where(SmBackendConfig.id == sm_backend_conf_id))


@handler(auth=Auth.ADMIN)
def sm_backend_conf_get(tx: Session, ctx: RequestContext, sm_backend_conf_id: int) -> SmBackendConfig:
    """Return the backend config, deleted or not; raise NotFound ("No backend config with id
    <id>", Folsom's message on Cinder's base class)."""
    conf = tx.scalar(_all(ctx, SmBackendConfig).where(SmBackendConfig.id == sm_backend_conf_id))
    if conf is None:
        raise exception.NotFound(f"No backend config with id {sm_backend_conf_id}")
    return conf


@handler(auth=Auth.ADMIN)
def sm_backend_conf_get_by_sr(tx: Session, ctx: RequestContext, sr_uuid: str) -> SmBackendConfig | None:
    """Return the first backend config (by id) of the storage repository, or None."""
    query = _all(ctx, SmBackendConfig).where(SmBackendConfig.sr_uuid == sr_uuid)
    return tx.scalars(query.order_by(SmBackendConfig.id).limit(1)).first()


@handler(auth=Auth.ADMIN)
def sm_backend_conf_get_all(tx: Session, ctx: RequestContext) -> list[SmBackendConfig]:
    """Return every backend config, deleted ones included."""
    return list(tx.scalars(_all(ctx, SmBackendConfig).order_by(SmBackendConfig.id)))


# --- flavors (found by label) -------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def sm_flavor_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> SmFlavor:
    """Create and return a flavor."""
    return _create(tx, ctx, SmFlavor(), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_flavor_update(tx: Session, ctx: RequestContext, sm_flavor_id: str, values: dict[str, Any]) -> SmFlavor:
    """Apply ``values`` to the first flavor labelled ``sm_flavor_id`` and return it; raise
    NotFound."""
    return _update(tx, ctx, sm_flavor_get(tx, ctx, sm_flavor_id), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_flavor_delete(tx: Session, ctx: RequestContext, sm_flavor_id: str) -> None:
    """Hard-delete every flavor labelled ``sm_flavor_id`` (none is fine); InvalidInput while
    backend configs use one of them."""
    ids = select(SmFlavor.id).where(SmFlavor.label == sm_flavor_id)
    used = select(SmBackendConfig.id).where(SmBackendConfig.flavor_id.in_(ids))
    _refuse_if_referenced(tx, used, f"sm_flavor {sm_flavor_id!r}")
    tx.execute(delete(SmFlavor).where(SmFlavor.label == sm_flavor_id))


@handler(auth=Auth.ADMIN)
def sm_flavor_get(tx: Session, ctx: RequestContext, sm_flavor: str) -> SmFlavor:
    """Return the first flavor (by id, deleted or not) labelled ``sm_flavor``; raise NotFound
    ("No sm_flavor called <label>"; Folsom raised KeyError)."""
    query = _all(ctx, SmFlavor).where(SmFlavor.label == sm_flavor)
    flavor = tx.scalars(query.order_by(SmFlavor.id).limit(1)).first()
    if flavor is None:
        raise exception.NotFound(f"No sm_flavor called {sm_flavor}")
    return flavor


@handler(auth=Auth.ADMIN)
def sm_flavor_get_all(tx: Session, ctx: RequestContext) -> list[SmFlavor]:
    """Return every flavor, deleted ones included."""
    return list(tx.scalars(_all(ctx, SmFlavor).order_by(SmFlavor.id)))


# --- volumes ------------------------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def sm_volume_create(tx: Session, ctx: RequestContext, values: dict[str, Any]) -> SmVolume:
    """Create and return an sm volume (``id`` must name a volume, ``backend_id`` a backend)."""
    if values.get("id") is None:
        raise exception.InvalidInput(reason="id is required")
    return _create(tx, ctx, SmVolume(), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_volume_update(tx: Session, ctx: RequestContext, volume_id: str, values: dict[str, Any]) -> SmVolume:
    """Apply ``values`` to the sm volume and return it; raise NotFound."""
    return _update(tx, ctx, sm_volume_get(tx, ctx, volume_id), values)


@handler(auth=Auth.ADMIN, writes=True)
def sm_volume_delete(tx: Session, ctx: RequestContext, volume_id: str) -> None:
    """Hard-delete the sm volume (none is fine)."""
    tx.execute(delete(SmVolume).where(SmVolume.id == volume_id))


@handler(auth=Auth.ADMIN)
def sm_volume_get(tx: Session, ctx: RequestContext, volume_id: str) -> SmVolume:
    """Return the sm volume, deleted or not; raise NotFound ("No sm_volume with id <id>", Folsom's
    message on Cinder's base class)."""
    sm_volume = tx.scalar(_all(ctx, SmVolume).where(SmVolume.id == volume_id))
    if sm_volume is None:
        raise exception.NotFound(f"No sm_volume with id {volume_id}")
    return sm_volume


@handler(auth=Auth.ADMIN)
def sm_volume_get_all(tx: Session, ctx: RequestContext) -> list[SmVolume]:
    """Return every sm volume, deleted ones included."""
    return list(tx.scalars(_all(ctx, SmVolume).order_by(SmVolume.id)))
