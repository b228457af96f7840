"""Handlers for the ``quotas``, ``quota_classes`` and ``quota_usages`` tables.

Project data (quotas, usages) is the caller's own for a user context; quota classes are global, with
Folsom's check that a user reads only its own class in ``quota_class_get_all_by_name``. One live
usage row per ``(project_id, resource)``: a second ``quota_usage_create`` is ``Duplicate``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import check_int, check_string, model_query, soft_delete
from dbworker.core.registry import Auth, handler
from dbworker.models import Quota, QuotaClass, QuotaUsage, Reservation


def _limit(limit: int | None) -> int | None:
    """Return a hard limit as stored: an integer (negative: unlimited) or None (unlimited)."""
    return None if limit is None else check_int("limit", limit)


def _hard_limits(tx: Session, query: Select, model: type[Quota] | type[QuotaClass]) -> dict[str, int | None]:
    """Return ``{resource: hard_limit}`` of the rows ``query`` selects; where a resource has
    several rows, the oldest wins (the row the ``*_get`` functions return)."""
    return {row.resource: row.hard_limit for row in tx.scalars(query.order_by(model.id.desc()))}


# --- quotas -------------------------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def quota_create(
    tx: Session, ctx: RequestContext, project_id: str, resource: str, limit: int | None
) -> Quota:
    """Create and return a project quota (no uniqueness, as in Folsom)."""
    quota = Quota(
        project_id=check_string("project_id", project_id),
        resource=check_string("resource", resource),
        hard_limit=_limit(limit),
    )
    tx.add(quota)
    tx.flush()
    return quota


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def quota_get(tx: Session, ctx: RequestContext, project_id: str, resource: str) -> Quota:
    """Return the project's live quota for ``resource`` (oldest first); raise ProjectQuotaNotFound."""
    query = model_query(ctx, Quota, read_deleted="no").where(
        Quota.project_id == project_id, Quota.resource == resource
    )
    quota = tx.scalars(query.order_by(Quota.id).limit(1)).first()
    if quota is None:
        raise exception.ProjectQuotaNotFound(project_id=project_id)
    return quota


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def quota_get_all_by_project(tx: Session, ctx: RequestContext, project_id: str) -> dict[str, Any]:
    """Return ``{"project_id": p, resource: hard_limit, ...}`` of the live quotas; where a resource
    has several rows, the oldest wins (the row ``quota_get`` returns)."""
    query = model_query(ctx, Quota, read_deleted="no").where(Quota.project_id == project_id)
    return {"project_id": project_id, **_hard_limits(tx, query, Quota)}


@handler(auth=Auth.ADMIN, writes=True)
def quota_update(
    tx: Session, ctx: RequestContext, project_id: str, resource: str, limit: int | None
) -> Quota:
    """Set the quota's hard limit and return it; raise ProjectQuotaNotFound."""
    quota = quota_get(tx, ctx, project_id, resource)
    quota.hard_limit = _limit(limit)
    tx.flush()
    return quota


@handler(auth=Auth.ADMIN, writes=True)
def quota_destroy(tx: Session, ctx: RequestContext, project_id: str, resource: str) -> None:
    """Soft-delete the quota; raise ProjectQuotaNotFound."""
    soft_delete(quota_get(tx, ctx, project_id, resource))


@handler(auth=Auth.ADMIN, writes=True)
def quota_destroy_all_by_project(tx: Session, ctx: RequestContext, project_id: str) -> None:
    """Soft-delete the project's quotas, quota usages and reservations (Folsom left the usages and
    reservations live)."""
    for model in (Reservation, QuotaUsage, Quota):
        query = select(model).where(model.project_id == project_id, model.deleted == False)
        for row in tx.scalars(query.order_by(model.id).with_for_update()):
            soft_delete(row)
    tx.flush()


# --- quota classes ------------------------------------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def quota_class_create(
    tx: Session, ctx: RequestContext, class_name: str, resource: str, limit: int | None
) -> QuotaClass:
    """Create and return a quota class entry (no uniqueness, as in Folsom)."""
    quota_class = QuotaClass(
        class_name=check_string("class_name", class_name),
        resource=check_string("resource", resource),
        hard_limit=_limit(limit),
    )
    tx.add(quota_class)
    tx.flush()
    return quota_class


@handler(auth=Auth.CONTEXT)
def quota_class_get(tx: Session, ctx: RequestContext, class_name: str, resource: str) -> QuotaClass:
    """Return the class's live entry for ``resource`` (oldest first); raise QuotaClassNotFound."""
    query = model_query(ctx, QuotaClass, read_deleted="no").where(
        QuotaClass.class_name == class_name, QuotaClass.resource == resource
    )
    quota_class = tx.scalars(query.order_by(QuotaClass.id).limit(1)).first()
    if quota_class is None:
        raise exception.QuotaClassNotFound(class_name=class_name)
    return quota_class


@handler(auth=Auth.CONTEXT)
def quota_class_get_all_by_name(tx: Session, ctx: RequestContext, class_name: str) -> dict[str, Any]:
    """Return ``{"class_name": c, resource: hard_limit, ...}``; a user context must carry
    ``quota_class == class_name`` (NotAuthorized otherwise)."""
    if ctx.is_user and ctx.quota_class != class_name:
        raise exception.NotAuthorized()
    query = model_query(ctx, QuotaClass, read_deleted="no").where(QuotaClass.class_name == class_name)
    return {"class_name": class_name, **_hard_limits(tx, query, QuotaClass)}


@handler(auth=Auth.ADMIN, writes=True)
def quota_class_update(
    tx: Session, ctx: RequestContext, class_name: str, resource: str, limit: int | None
) -> QuotaClass:
    """Set the class entry's hard limit and return it; raise QuotaClassNotFound."""
    quota_class = quota_class_get(tx, ctx, class_name, resource)
    quota_class.hard_limit = _limit(limit)
    tx.flush()
    return quota_class


@handler(auth=Auth.ADMIN, writes=True)
def quota_class_destroy(tx: Session, ctx: RequestContext, class_name: str, resource: str) -> None:
    """Soft-delete the class entry; raise QuotaClassNotFound."""
    soft_delete(quota_class_get(tx, ctx, class_name, resource))


@handler(auth=Auth.ADMIN, writes=True)
def quota_class_destroy_all_by_name(tx: Session, ctx: RequestContext, class_name: str) -> None:
    """Soft-delete every live entry of the class (nothing to do is not an error)."""
    query = model_query(ctx, QuotaClass, read_deleted="no").where(QuotaClass.class_name == class_name)
    for quota_class in tx.scalars(query.order_by(QuotaClass.id)):
        soft_delete(quota_class)


# --- quota usages -------------------------------------------------------------------------------
def _usage_counts(in_use: int, reserved: int, until_refresh: int | None) -> dict[str, int | None]:
    return {
        "in_use": check_int("in_use", in_use),
        "reserved": check_int("reserved", reserved),
        "until_refresh": None if until_refresh is None else check_int("until_refresh", until_refresh),
    }


@handler(auth=Auth.ADMIN, writes=True)
def quota_usage_create(
    tx: Session,
    ctx: RequestContext,
    project_id: str,
    resource: str,
    in_use: int,
    reserved: int,
    until_refresh: int | None,
) -> QuotaUsage:
    """Create and return the usage of ``resource`` by the project; raise Duplicate if the project
    already has a live usage row for it."""
    check_string("project_id", project_id)
    check_string("resource", resource)
    existing = select(QuotaUsage.id).where(
        QuotaUsage.project_id == project_id,
        QuotaUsage.resource == resource,
        QuotaUsage.deleted == False,
    )
    if tx.scalar(existing.limit(1)) is not None:
        raise exception.Duplicate()
    usage = QuotaUsage(
        project_id=project_id, resource=resource, **_usage_counts(in_use, reserved, until_refresh)
    )
    tx.add(usage)
    tx.flush()  # the unique (project_id, resource, live) key settles a concurrent create
    return usage


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def quota_usage_get(tx: Session, ctx: RequestContext, project_id: str, resource: str) -> QuotaUsage:
    """Return the project's live usage of ``resource``; raise QuotaUsageNotFound."""
    query = model_query(ctx, QuotaUsage, read_deleted="no").where(
        QuotaUsage.project_id == project_id, QuotaUsage.resource == resource
    )
    usage = tx.scalars(query.order_by(QuotaUsage.id).limit(1)).first()
    if usage is None:
        raise exception.QuotaUsageNotFound(project_id=project_id)
    return usage


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def quota_usage_get_all_by_project(tx: Session, ctx: RequestContext, project_id: str) -> dict[str, Any]:
    """Return ``{"project_id": p, resource: {"in_use": n, "reserved": m}, ...}`` (live rows)."""
    query = model_query(ctx, QuotaUsage, read_deleted="no").where(QuotaUsage.project_id == project_id)
    result: dict[str, Any] = {"project_id": project_id}
    for usage in tx.scalars(query.order_by(QuotaUsage.id)):
        result[usage.resource] = {"in_use": usage.in_use, "reserved": usage.reserved}
    return result


@handler(auth=Auth.ADMIN, writes=True)
def quota_usage_update(
    tx: Session,
    ctx: RequestContext,
    *,
    project_id: str | None = None,
    resource: str,
    in_use: int,
    reserved: int,
    until_refresh: int | None,
    class_name: str | None = None,
) -> QuotaUsage:
    """Set the usage's in_use, reserved and until_refresh and return it; raise QuotaUsageNotFound.

    The seed names the project argument ``class_name``; it is accepted as an alias.
    """
    if class_name is not None and project_id is not None and class_name != project_id:
        raise exception.InvalidInput(reason="project_id and its alias class_name differ")
    project_id = project_id if project_id is not None else class_name
    if project_id is None:
        raise exception.InvalidInput(reason="missing argument 'project_id'")
    counts = _usage_counts(in_use, reserved, until_refresh)
    usage = quota_usage_get(tx, ctx, project_id, resource)
    for key, value in counts.items():
        setattr(usage, key, value)
    tx.flush()
    return usage


@handler(auth=Auth.ADMIN, writes=True)
def quota_usage_destroy(tx: Session, ctx: RequestContext, project_id: str, resource: str) -> None:
    """Soft-delete the usage (freeing the pair for a new row); raise QuotaUsageNotFound."""
    soft_delete(quota_usage_get(tx, ctx, project_id, resource))
