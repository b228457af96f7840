"""Handlers for the ``reservations`` table and ``quota_reserve``, which writes reservations and the
``quota_usages`` rows they draw on (reference §2.13, §3.1-§3.4, §3.18, §6; contract §3.2, §6, §9).

Locking: ``quota_reserve`` locks the project's usage rows (``SELECT ... FOR UPDATE``) and creates a
missing row inside a savepoint, re-reading it if a concurrent call created it first, so a project
never gets two live usage rows nor an oversubscribed quota. Commit, rollback and expire lock the
reservations, then their usage rows, in id order.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from oslo_db import exception as db_exc
from sqlalchemy import Select, func, insert, select, text
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.context import RequestContext
from dbworker.models import QuotaUsage, Reservation, Volume, utcnow
from dbworker.query import apply_values, check_datetime, check_int, check_string, model_query, soft_delete
from dbworker.registry import Auth, handler
from dbworker.settings import Settings

LOG = logging.getLogger(__name__)


def _sync_volumes(tx: Session, project_id: str) -> dict[str, int]:
    """Return the project's live volume count and gigabytes (``volume_data_get_for_project``)."""
    count, gigabytes = tx.execute(
        select(func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0)).where(
            Volume.project_id == project_id, Volume.deleted == False
        )
    ).one()
    return {"volumes": int(count), "gigabytes": int(gigabytes)}


#: The worker's sync functions: a reserved resource is refreshed from the database by its entry.
QUOTA_SYNCS: dict[str, Callable[[Session, str], dict[str, int]]] = {
    "volumes": _sync_volumes,
    "gigabytes": _sync_volumes,
}


# --- reservations -------------------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def reservation_create(
    tx: Session,
    ctx: RequestContext,
    uuid: str,
    usage: dict[str, Any],
    project_id: str,
    resource: str,
    delta: int,
    expire: str | None,
) -> Reservation:
    """Create and return a reservation against ``usage`` (a dict holding the usage's ``id``); the
    usage must be live and be the project's usage of ``resource`` (InvalidInput otherwise)."""
    usage_id = usage.get("id")
    if not isinstance(usage_id, int) or isinstance(usage_id, bool):
        raise exception.InvalidInput(reason="usage must be a dict holding the usage's integer id")
    reservation = Reservation()
    values = {
        "uuid": uuid,
        "usage_id": usage_id,
        "project_id": project_id,
        "resource": resource,
        "delta": delta,
        "expire": expire,
    }
    apply_values(tx, ctx, reservation, values, creating=True)
    row = tx.get(QuotaUsage, usage_id)
    if row is None or row.deleted or (row.project_id, row.resource) != (project_id, resource):
        raise exception.InvalidInput(
            reason=f"usage: no live usage {usage_id} of resource {resource!r} for project {project_id!r}"
        )
    tx.add(reservation)
    tx.flush()
    return reservation


@handler(auth=Auth.CONTEXT)
def reservation_get(tx: Session, ctx: RequestContext, uuid: str) -> Reservation:
    """Return the live reservation (the caller's project's, for a user); raise ReservationNotFound."""
    query = model_query(ctx, Reservation, read_deleted="no", project_only=True)
    reservation = tx.scalars(query.where(Reservation.uuid == uuid).order_by(Reservation.id)).first()
    if reservation is None:
        raise exception.ReservationNotFound(uuid=uuid)
    return reservation


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def reservation_get_all_by_project(tx: Session, ctx: RequestContext, project_id: str) -> dict[str, Any]:
    """Return ``{"project_id": p, resource: {uuid: delta, ...}, ...}`` of the live reservations."""
    query = model_query(ctx, Reservation, read_deleted="no").where(Reservation.project_id == project_id)
    result: dict[str, Any] = {"project_id": project_id}
    for reservation in tx.scalars(query.order_by(Reservation.id)):
        result.setdefault(reservation.resource, {})[reservation.uuid] = reservation.delta
    return result


@handler(auth=Auth.ADMIN, writes=True)
def reservation_destroy(tx: Session, ctx: RequestContext, uuid: str) -> None:
    """Soft-delete the reservation (usages unchanged); raise ReservationNotFound."""
    soft_delete(reservation_get(tx, ctx, uuid))


def _settle(tx: Session, query: Select[tuple[Reservation]], *, commit: bool) -> None:
    """Settle the live reservations ``query`` selects: give each positive delta back to
    ``reserved`` and, when committing, add the delta to ``in_use``; then soft-delete it.

    Locks as quota_reserve does, usage rows first (in id order), then the reservations, so the two
    never wait on each other in opposite orders.
    """
    query = query.where(Reservation.deleted == False).order_by(Reservation.id)
    usage_ids = sorted(set(tx.scalars(query.with_only_columns(Reservation.usage_id))))
    if not usage_ids:
        return
    usages = {
        u.id: u
        for u in tx.scalars(
            select(QuotaUsage)
            .where(QuotaUsage.id.in_(usage_ids), QuotaUsage.deleted == False)
            .order_by(QuotaUsage.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    locked = query.with_for_update().execution_options(populate_existing=True)
    for reservation in tx.scalars(locked):
        usage = usages.get(reservation.usage_id)
        if usage is not None:
            if reservation.delta >= 0:
                usage.reserved -= reservation.delta
            if commit:
                usage.in_use += reservation.delta
        soft_delete(reservation)
    tx.flush()


def _reservations(ctx: RequestContext, uuids: list[str]) -> Select[tuple[Reservation]]:
    """Select the caller's reservations among ``uuids`` (any project's for an admin)."""
    for value in uuids:
        if not isinstance(value, str):
            raise exception.InvalidInput(reason="reservations must be a list of uuid strings")
    query = model_query(ctx, Reservation, read_deleted="no", project_only=True)
    return query.where(Reservation.uuid.in_(sorted(set(uuids))))


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def reservation_commit(tx: Session, ctx: RequestContext, reservations: list[str]) -> None:
    """Commit the reservations: in_use += delta, reserved -= positive delta; unknown uuids and
    other projects' reservations (for a user) are skipped."""
    _settle(tx, _reservations(ctx, reservations), commit=True)


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def reservation_rollback(tx: Session, ctx: RequestContext, reservations: list[str]) -> None:
    """Roll the reservations back: reserved -= positive delta; skips as reservation_commit does."""
    _settle(tx, _reservations(ctx, reservations), commit=False)


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def reservation_expire(tx: Session, ctx: RequestContext) -> None:
    """Roll back every live reservation whose ``expire`` has passed (contract §9.5)."""
    _settle(tx, select(Reservation).where(Reservation.expire < utcnow()), commit=False)


# --- quota_reserve ------------------------------------------------------------------------------
def _expire_at(expire: Any, default: int) -> datetime:
    """Return the expiry of new reservations: ``expire`` as an ISO datetime, seconds from now, or
    null for ``default`` seconds.

    Raises:
        InvalidInput: naming ``expire``, for a bad datetime string (as for every datetime argument),
            a number of seconds out of range, or another type.
    """
    if expire is None:
        expire = default
    if isinstance(expire, str):
        return check_datetime("expire", expire)
    if isinstance(expire, int | float) and not isinstance(expire, bool):
        try:
            return utcnow() + timedelta(seconds=expire)
        except (OverflowError, ValueError):  # inf, nan, or beyond datetime's range
            raise exception.InvalidInput(reason=f"expire: {expire!r} seconds is out of range") from None
    raise exception.InvalidInput(
        reason="expire must be an ISO 8601 datetime, a number of seconds or null, "
        f"not {type(expire).__name__}"
    )


def _names(resources: Any) -> set[str]:
    if not isinstance(resources, list | dict):
        raise exception.InvalidInput(reason="resources must be a list of resource names")
    for name in resources:
        check_string("resources", name)
    return set(resources)


def _checked_quotas(quotas: dict[str, Any], deltas: dict[str, Any], names: set[str]) -> None:
    for name, limit in quotas.items():
        if limit is not None:
            check_int(f"quotas[{name!r}]", limit)
    for name, delta in deltas.items():
        check_int(f"deltas[{name!r}]", delta)
        if name not in quotas:
            raise exception.InvalidInput(reason=f"deltas: resource {name!r} is not in quotas")
        if name not in names:
            raise exception.InvalidInput(reason=f"deltas: resource {name!r} is not in resources")


def _lock_usages(tx: Session, project_id: str) -> dict[str, QuotaUsage]:
    """Lock and return the project's live usage rows, by resource."""
    query = (
        select(QuotaUsage)
        .where(QuotaUsage.project_id == project_id, QuotaUsage.deleted == False)
        .order_by(QuotaUsage.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {usage.resource: usage for usage in tx.scalars(query)}


def _create_usage(tx: Session, project_id: str, resource: str, until_refresh: int) -> tuple[QuotaUsage, bool]:
    """Create the usage row in a savepoint and return it, locked, with True; if a concurrent call
    created it first, lock and return that one with False.

    The savepoint is plain SQL that the session does not track: after a deadlock MariaDB has
    already ended the transaction, and a session-tracked savepoint would then fail to roll back
    (``SAVEPOINT ... does not exist``), hiding the deadlock the dispatcher re-runs the call for.
    """
    tx.flush()  # nothing the session holds may be written inside the savepoint
    tx.execute(text("SAVEPOINT quota_usage_create"))
    try:
        tx.execute(
            insert(QuotaUsage).values(
                project_id=project_id,
                resource=resource,
                in_use=0,
                reserved=0,
                until_refresh=until_refresh or None,
                live=1,
                deleted=False,
                created_at=utcnow(),
            )
        )
    except db_exc.DBDuplicateEntry:
        tx.execute(text("ROLLBACK TO SAVEPOINT quota_usage_create"))
        created = False
    else:
        created = True
    tx.execute(text("RELEASE SAVEPOINT quota_usage_create"))
    query = select(QuotaUsage).where(
        QuotaUsage.project_id == project_id,
        QuotaUsage.resource == resource,
        QuotaUsage.deleted == False,
    )
    found = tx.scalars(query.with_for_update().execution_options(populate_existing=True))
    return found.one(), created


def _needs_refresh(usage: QuotaUsage, created: bool, max_age: int) -> bool:
    """Folsom's test, with max_age meaning "older than max_age seconds" (contract §9.8)."""
    if created or usage.in_use < 0:
        return True
    if usage.until_refresh is not None:
        usage.until_refresh -= 1
        return usage.until_refresh <= 0
    if max_age:
        return usage.updated_at is None or (utcnow() - usage.updated_at).total_seconds() >= max_age
    return False


def _refresh_usages(
    tx: Session,
    project_id: str,
    usages: dict[str, QuotaUsage],
    deltas: dict[str, int],
    until_refresh: int,
    max_age: int,
) -> None:
    """Create missing usage rows and re-sync stale ones from the database (Folsom §3.1 steps 3-4)."""
    created = set()
    for resource in sorted(deltas):
        if resource not in usages:
            usages[resource], new = _create_usage(tx, project_id, resource, until_refresh)
            if new:
                created.add(resource)
    synced: set[str] = set()
    for resource in sorted(deltas):
        sync = QUOTA_SYNCS.get(resource)
        if sync is None or resource in synced:
            continue
        if not _needs_refresh(usages[resource], resource in created, max_age):
            continue
        for name, in_use in sorted(sync(tx, project_id).items()):
            usage = usages.get(name)
            if usage is None:
                usage = usages[name] = _create_usage(tx, project_id, name, until_refresh)[0]
            usage.in_use = in_use
            usage.until_refresh = until_refresh or None
            usage.updated_at = utcnow()
            synced.add(name)


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def quota_reserve(
    tx: Session,
    ctx: RequestContext,
    resources: list[str] | dict[str, Any],
    quotas: dict[str, Any],
    deltas: dict[str, Any],
    expire: Any = None,
    until_refresh: int | None = None,
    max_age: int | None = None,
    project_id: str | None = None,
    *,
    settings: Settings,
) -> list[str]:
    """Reserve ``deltas`` against ``quotas`` for the project and return the reservation uuids in
    the order of ``deltas``.

    A negative delta that takes a usage below 0 is reserved all the same, with a WARNING naming the
    resources (Folsom). Raises InvalidInput (bad or unknown resources, limits, deltas, expire) and
    OverQuota (after the usage refreshes are committed).
    """
    if ctx.is_user and project_id not in (None, ctx.project_id):
        raise exception.NotAuthorized()
    project_id = project_id if project_id is not None else ctx.project_id
    if project_id is None:
        raise exception.InvalidInput(reason="project_id is required for a context with no project")
    _checked_quotas(quotas, deltas, _names(resources))
    expire_at = _expire_at(expire, settings.reservation_expire)
    until_refresh = settings.until_refresh if until_refresh is None else until_refresh
    max_age = settings.max_age if max_age is None else max_age
    for key, value in (("until_refresh", until_refresh), ("max_age", max_age)):
        if check_int(key, value) < 0:
            raise exception.InvalidInput(reason=f"{key} must not be negative")

    usages = _lock_usages(tx, project_id)
    _refresh_usages(tx, project_id, usages, deltas, until_refresh, max_age)

    unders = sorted(r for r, d in deltas.items() if d < 0 and d + usages[r].in_use < 0)
    if unders:
        # Folsom only warns: the reservation is made (a negative delta never touches reserved).
        # Refusing it would make a volume undeletable whenever its project's usage drifted low.
        LOG.warning(
            "quota_reserve: change will make usage less than 0 for project %s: %s",
            project_id,
            ", ".join(f"{r} (in_use {usages[r].in_use}, delta {deltas[r]})" for r in unders),
        )
    overs = sorted(
        r
        for r, d in deltas.items()
        if quotas[r] is not None and 0 <= quotas[r] < d + usages[r].total and d >= 0
    )
    if overs:
        usage_view = {r: {"in_use": u.in_use, "reserved": u.reserved} for r, u in usages.items()}
        raise exception.OverQuota(overs=overs, quotas=quotas, usages=usage_view)

    uuids = []
    for resource, delta in deltas.items():
        usage = usages[resource]
        reservation = Reservation(
            uuid=str(uuidlib.uuid4()),
            usage_id=usage.id,
            project_id=project_id,
            resource=resource,
            delta=delta,
            expire=expire_at,
        )
        tx.add(reservation)
        if delta > 0:
            usage.reserved += delta
        uuids.append(reservation.uuid)
    tx.flush()
    return uuids
