"""Handlers for the ``reservations`` table: commit, rollback, expire, and a project's listing.

Commit, rollback and expire lock the reservations' usage rows, then the reservations, in id order
(as ``quota_reserve``, in :mod:`dbworker.handlers.quota_reserve`, locks usages first), on Core
statements built once; the usage rows are plain dicts written back by :func:`write_usages`.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, false, insert, select, update
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import apply_values, model_query, soft_delete
from dbworker.core.registry import Auth, handler
from dbworker.models import QuotaUsage, Reservation, utcnow

USAGES = QuotaUsage.__table__
RESERVATIONS = Reservation.__table__

#: A usage row, as a dict of its columns (changed in place, then written back).
Usage = dict[str, Any]

# --- the hot path's statements, built once ---------------------------------------------------------
_LOCK_USAGES_BY_ID = (
    select(USAGES)
    .where(USAGES.c.id.in_(bindparam("ids", expanding=True)), USAGES.c.deleted == false())
    .order_by(USAGES.c.id)
    .with_for_update()
)
#: Writes a changed usage row back (``updated_at`` as the ORM's ``onupdate`` would set it).
_UPDATE_USAGE = (
    update(USAGES)
    .where(USAGES.c.id == bindparam("usage_id"))
    .values(
        in_use=bindparam("in_use"),
        reserved=bindparam("reserved"),
        until_refresh=bindparam("until_refresh"),
        updated_at=bindparam("updated_at"),
    )
)
INSERT_RESERVATION = insert(RESERVATIONS)
_SOFT_DELETE_RESERVATIONS = (
    update(RESERVATIONS)
    .where(RESERVATIONS.c.id.in_(bindparam("ids", expanding=True)))
    .values(deleted=True, deleted_at=bindparam("now"), updated_at=bindparam("now"))
)


def write_usages(tx: Connection, usages: list[Usage], now: datetime) -> None:
    """Write back the changed usage rows (reserved, in_use, until_refresh), stamped ``now``."""
    if usages:
        tx.execute(
            _UPDATE_USAGE,
            [
                {
                    "usage_id": u["id"],
                    "in_use": u["in_use"],
                    "reserved": u["reserved"],
                    "until_refresh": u["until_refresh"],
                    "updated_at": now,
                }
                for u in usages
            ],
        )


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


@functools.cache
def _live_reservations(where: Any) -> tuple[Select[Any], Select[Any]]:
    """The live reservations matching ``where`` (one of the module's conditions): as read, and
    locked in id order (built once per condition)."""
    live = select(RESERVATIONS.c.id, RESERVATIONS.c.usage_id, RESERVATIONS.c.delta).where(
        where, RESERVATIONS.c.deleted == false()
    )
    return live, live.order_by(RESERVATIONS.c.id).with_for_update()


def _settle(tx: Connection, where: Any, params: dict[str, Any], *, commit: bool) -> None:
    """Settle the live reservations matching ``where`` (with ``params``): give each positive delta
    back to ``reserved`` and, when committing, add the delta to ``in_use``; then soft-delete it.

    Locks as quota_reserve does, usage rows first (in id order), then the reservations, so the two
    never wait on each other in opposite orders.
    """
    live, locked = _live_reservations(where)
    usage_ids = sorted({row.usage_id for row in tx.execute(live, params)})
    if not usage_ids:
        return
    usages = {row.id: dict(row._mapping) for row in tx.execute(_LOCK_USAGES_BY_ID, {"ids": usage_ids})}
    reservations = tx.execute(locked, params).all()
    changed: dict[int, Usage] = {}
    for reservation in reservations:
        usage = usages.get(reservation.usage_id)
        if usage is not None:
            if reservation.delta >= 0:
                usage["reserved"] -= reservation.delta
            if commit:
                usage["in_use"] += reservation.delta
            changed[usage["id"]] = usage
    now = utcnow()
    write_usages(tx, list(changed.values()), now)
    if reservations:
        tx.execute(_SOFT_DELETE_RESERVATIONS, {"ids": [r.id for r in reservations], "now": now})


_EXPIRED = RESERVATIONS.c.expire < bindparam("now")
#: The reservations a call names: among ``uuids``, the caller's project's only for a user.
_NAMED = RESERVATIONS.c.uuid.in_(bindparam("uuids", expanding=True))
_NAMED_OF_CALLER = and_(_NAMED, RESERVATIONS.c.project_id == bindparam("caller_project_id"))


def _settle_named(tx: Connection, ctx: RequestContext, uuids: list[str], *, commit: bool) -> None:
    """Settle the caller's live reservations among ``uuids`` (any project's for an admin)."""
    for value in uuids:
        if not isinstance(value, str):
            raise exception.InvalidInput(reason="reservations must be a list of uuid strings")
    params: dict[str, Any] = {"uuids": sorted(set(uuids))}
    if ctx.is_user:
        params["caller_project_id"] = ctx.project_id
    _settle(tx, _NAMED_OF_CALLER if ctx.is_user else _NAMED, params, commit=commit)


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def reservation_commit(tx: Connection, ctx: RequestContext, reservations: list[str]) -> None:
    """Commit the reservations: in_use += delta, reserved -= positive delta; unknown uuids and
    other projects' reservations (for a user) are skipped."""
    _settle_named(tx, ctx, reservations, commit=True)


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def reservation_rollback(tx: Connection, ctx: RequestContext, reservations: list[str]) -> None:
    """Roll the reservations back: reserved -= positive delta; skips as reservation_commit does."""
    _settle_named(tx, ctx, reservations, commit=False)


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def reservation_expire(tx: Connection, ctx: RequestContext) -> None:
    """Roll back every live reservation whose ``expire`` has passed."""
    _settle(tx, _EXPIRED, {"now": utcnow()}, commit=False)
