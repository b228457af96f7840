"""``quota_reserve``: reserves quota for a project, writing ``reservations`` and the ``quota_usages``
rows they draw on. A negative delta taking a usage below zero is logged and reserved, as in Folsom.

Locking: the project's usage rows are locked (``SELECT ... FOR UPDATE``) and a missing row is
created inside a savepoint, re-read if a concurrent call created it first, so a project never gets
two live usage rows nor an oversubscribed quota. Core statements built once; usage rows are dicts.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from oslo_db import exception as db_exc
from sqlalchemy import Connection, bindparam, false, func, insert, select, text

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import check_datetime, check_int, check_string
from dbworker.core.registry import Auth, handler
from dbworker.core.settings import Settings
from dbworker.handlers.reservations import INSERT_RESERVATION, USAGES, Usage, write_usages
from dbworker.models import Volume, utcnow

LOG = logging.getLogger(__name__)

_VOLUMES = Volume.__table__

_VOLUME_TOTALS = select(func.count(_VOLUMES.c.id), func.coalesce(func.sum(_VOLUMES.c.size), 0)).where(
    _VOLUMES.c.project_id == bindparam("project_id"), _VOLUMES.c.deleted == false()
)


def _sync_volumes(tx: Connection, project_id: str) -> dict[str, int]:
    """Return the project's live volume count and gigabytes (``volume_data_get_for_project``)."""
    count, gigabytes = tx.execute(_VOLUME_TOTALS, {"project_id": project_id}).one()
    return {"volumes": int(count), "gigabytes": int(gigabytes)}


#: The worker's sync functions: a reserved resource is refreshed from the database by its entry.
QUOTA_SYNCS: dict[str, Callable[[Connection, str], dict[str, int]]] = {
    "volumes": _sync_volumes,
    "gigabytes": _sync_volumes,
}

_LOCK_USAGES = (
    select(USAGES)
    .where(USAGES.c.project_id == bindparam("project_id"), USAGES.c.deleted == false())
    .order_by(USAGES.c.id)
    .with_for_update()
)
_LOCK_USAGE = (
    select(USAGES)
    .where(
        USAGES.c.project_id == bindparam("project_id"),
        USAGES.c.resource == bindparam("resource"),
        USAGES.c.deleted == false(),
    )
    .with_for_update()
)
_INSERT_USAGE = insert(USAGES)


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


def _lock_usages(tx: Connection, project_id: str) -> dict[str, Usage]:
    """Lock and return the project's live usage rows, by resource."""
    return {row.resource: dict(row._mapping) for row in tx.execute(_LOCK_USAGES, {"project_id": project_id})}


def _create_usage(tx: Connection, project_id: str, resource: str, until_refresh: int) -> tuple[Usage, bool]:
    """Create the usage row in a savepoint and return it, locked, with True; if a concurrent call
    created it first, lock and return that one with False.

    The savepoint is plain SQL: after a deadlock MariaDB has already ended the transaction, and a
    tracked savepoint would then fail to roll back (``SAVEPOINT ... does not exist``), hiding the
    deadlock the dispatcher re-runs the call for.
    """
    tx.execute(text("SAVEPOINT quota_usage_create"))
    try:
        tx.execute(
            _INSERT_USAGE,
            {
                "project_id": project_id,
                "resource": resource,
                "in_use": 0,
                "reserved": 0,
                "until_refresh": until_refresh or None,
                "live": 1,
                "deleted": False,
                "created_at": utcnow(),
            },
        )
    except db_exc.DBDuplicateEntry:
        tx.execute(text("ROLLBACK TO SAVEPOINT quota_usage_create"))
        created = False
    else:
        created = True
    tx.execute(text("RELEASE SAVEPOINT quota_usage_create"))
    found = tx.execute(_LOCK_USAGE, {"project_id": project_id, "resource": resource}).one()
    return dict(found._mapping), created


def _needs_refresh(usage: Usage, created: bool, max_age: int) -> bool:
    """Folsom's test, with max_age meaning "older than max_age seconds" (Folsom compared seconds
    with a timedelta); counts
    ``until_refresh`` down (the caller writes the row back)."""
    if created or usage["in_use"] < 0:
        return True
    if usage["until_refresh"] is not None:
        usage["until_refresh"] -= 1
        return usage["until_refresh"] <= 0
    if max_age:
        updated_at = usage["updated_at"]
        return updated_at is None or (utcnow() - updated_at).total_seconds() >= max_age
    return False


def _refresh_usages(
    tx: Connection,
    project_id: str,
    usages: dict[str, Usage],
    deltas: dict[str, int],
    until_refresh: int,
    max_age: int,
) -> set[str]:
    """Create missing usage rows and re-sync stale ones from the database (Folsom's steps);
    return the resources whose rows changed (to write back)."""
    created = set()
    for resource in sorted(deltas):
        if resource not in usages:
            usages[resource], new = _create_usage(tx, project_id, resource, until_refresh)
            if new:
                created.add(resource)
    changed: set[str] = set()
    synced: set[str] = set()
    for resource in sorted(deltas):
        sync = QUOTA_SYNCS.get(resource)
        if sync is None or resource in synced:
            continue
        counting_down = usages[resource]["until_refresh"] is not None
        refresh = _needs_refresh(usages[resource], resource in created, max_age)
        if counting_down and resource not in created:
            changed.add(resource)
        if not refresh:
            continue
        for name, in_use in sorted(sync(tx, project_id).items()):
            usage = usages.get(name)
            if usage is None:
                usage = usages[name] = _create_usage(tx, project_id, name, until_refresh)[0]
            usage.update(in_use=in_use, until_refresh=until_refresh or None)
            changed.add(name)
            synced.add(name)
    return changed


@handler(auth=Auth.CONTEXT, writes=True, retry_on_deadlock=True)
def quota_reserve(
    tx: Connection,
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
    changed = _refresh_usages(tx, project_id, usages, deltas, until_refresh, max_age)

    unders = sorted(r for r, d in deltas.items() if d < 0 and d + usages[r]["in_use"] < 0)
    if unders:
        # Folsom only warns: the reservation is made (a negative delta never touches reserved).
        # Refusing it would make a volume undeletable whenever its project's usage drifted low.
        LOG.warning(
            "quota_reserve: change will make usage less than 0 for project %s: %s",
            project_id,
            ", ".join(f"{r} (in_use {usages[r]['in_use']}, delta {deltas[r]})" for r in unders),
        )
    overs = sorted(
        r
        for r, d in deltas.items()
        if quotas[r] is not None
        and 0 <= quotas[r] < d + usages[r]["in_use"] + usages[r]["reserved"]
        and d >= 0
    )
    now = utcnow()
    if overs:
        write_usages(tx, [usages[r] for r in sorted(changed)], now)  # the refreshes are kept
        usage_view = {r: {"in_use": u["in_use"], "reserved": u["reserved"]} for r, u in usages.items()}
        raise exception.OverQuota(overs=overs, quotas=quotas, usages=usage_view)

    rows = []
    for resource, delta in deltas.items():
        usage = usages[resource]
        rows.append(
            {
                "uuid": str(uuidlib.uuid4()),
                "usage_id": usage["id"],
                "project_id": project_id,
                "resource": resource,
                "delta": delta,
                "expire": expire_at,
                "deleted": False,
                "created_at": now,
            }
        )
        if delta > 0:
            usage["reserved"] += delta
            changed.add(resource)
    write_usages(tx, [usages[r] for r in sorted(changed)], now)
    tx.execute(INSERT_RESERVATION, rows)
    return [row["uuid"] for row in rows]
