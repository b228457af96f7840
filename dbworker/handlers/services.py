"""Handlers for the ``services`` table. Every function is admin only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, model_query, soft_delete
from dbworker.core.registry import Auth, handler
from dbworker.core.settings import Settings
from dbworker.models import Service, Volume


@handler(auth=Auth.ADMIN)
def service_get(tx: Session, ctx: RequestContext, service_id: int) -> Service:
    """Return the service (context's read_deleted); raise ServiceNotFound."""
    service = tx.scalar(model_query(ctx, Service).where(Service.id == service_id))
    if service is None:
        raise exception.ServiceNotFound(service_id=service_id)
    return service


@handler(auth=Auth.ADMIN)
def service_get_by_host_and_topic(tx: Session, ctx: RequestContext, host: str, topic: str) -> Service | None:
    """Return the first enabled live service with ``host`` and ``topic``, or None."""
    query = model_query(ctx, Service, read_deleted="no").where(
        Service.disabled == False,
        Service.host == host,
        Service.topic == topic,
    )
    return tx.scalars(query.order_by(Service.id).limit(1)).first()


@handler(auth=Auth.ADMIN)
def service_get_all(tx: Session, ctx: RequestContext, disabled: bool | None = None) -> list[Service]:
    """Return all services (context's read_deleted), filtered on ``disabled`` unless null."""
    query = model_query(ctx, Service)
    if disabled is not None:
        query = query.where(Service.disabled == disabled)
    return list(tx.scalars(query.order_by(Service.id)))


@handler(auth=Auth.ADMIN)
def service_get_all_by_topic(tx: Session, ctx: RequestContext, topic: str) -> list[Service]:
    """Return the enabled live services with ``topic``."""
    query = model_query(ctx, Service, read_deleted="no").where(
        Service.disabled == False,
        Service.topic == topic,
    )
    return list(tx.scalars(query.order_by(Service.id)))


@handler(auth=Auth.ADMIN)
def service_get_all_by_host(tx: Session, ctx: RequestContext, host: str) -> list[Service]:
    """Return the live services on ``host``, disabled ones included."""
    query = model_query(ctx, Service, read_deleted="no").where(Service.host == host)
    return list(tx.scalars(query.order_by(Service.id)))


@handler(auth=Auth.ADMIN)
def service_get_all_volume_sorted(
    tx: Session, ctx: RequestContext, *, settings: Settings
) -> list[tuple[Service, int]]:
    """Return ``[[service, gigabytes], ...]`` for the enabled live volume services, fewest
    gigabytes of live volumes first; services without volumes count 0 and come first on every
    database; ties go by service id."""
    gigabytes = (
        select(Volume.host, func.sum(Volume.size).label("gigabytes"))
        .where(Volume.deleted == False)
        .group_by(Volume.host)
        .subquery()
    )
    total = func.coalesce(gigabytes.c.gigabytes, 0)
    query = (
        model_query(ctx, Service, read_deleted="no")
        .add_columns(total)
        .outerjoin(gigabytes, Service.host == gigabytes.c.host)
        .where(Service.topic == settings.volume_topic, Service.disabled == False)
        .order_by(total, Service.id)
    )
    return [(service, int(size)) for service, size in tx.execute(query)]


@handler(auth=Auth.ADMIN)
def service_get_by_args(tx: Session, ctx: RequestContext, host: str, binary: str) -> Service:
    """Return the first service with ``host`` and ``binary``; raise HostBinaryNotFound."""
    query = model_query(ctx, Service).where(Service.host == host, Service.binary == binary)
    service = tx.scalars(query.order_by(Service.id).limit(1)).first()
    if service is None:
        raise exception.HostBinaryNotFound(host=host, binary=binary)
    return service


@handler(auth=Auth.ADMIN, writes=True)
def service_create(
    tx: Session, ctx: RequestContext, values: dict[str, Any], *, settings: Settings
) -> Service:
    """Create a service from ``values``; disabled is forced on unless new services are enabled."""
    service = Service()
    apply_values(tx, ctx, service, values, creating=True)
    if not settings.enable_new_services:
        service.disabled = True
    tx.add(service)
    tx.flush()
    return service


@handler(auth=Auth.ADMIN, writes=True)
def service_update(tx: Session, ctx: RequestContext, service_id: int, values: dict[str, Any]) -> Service:
    """Apply ``values`` to the service and return it; raise ServiceNotFound."""
    service = service_get(tx, ctx, service_id)
    apply_values(tx, ctx, service, values)
    tx.flush()
    return service


@handler(auth=Auth.ADMIN, writes=True)
def service_destroy(tx: Session, ctx: RequestContext, service_id: int) -> None:
    """Soft-delete the service (updated_at bumped); raise ServiceNotFound."""
    soft_delete(service_get(tx, ctx, service_id))
