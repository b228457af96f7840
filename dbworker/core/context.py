"""The request context a call runs under, rebuilt from the RPC context dict."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from dbworker import exception

READ_DELETED = ("no", "yes", "only")


@dataclass(frozen=True)
class RequestContext:
    """Who is calling: identity, admin flag and the soft-delete view (``read_deleted``)."""

    user_id: str | None = None
    project_id: str | None = None
    is_admin: bool = False
    roles: tuple[str, ...] = ()
    read_deleted: str = "no"
    quota_class: str | None = None
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4()}")
    global_request_id: str | None = None
    remote_address: str | None = None

    def __post_init__(self) -> None:
        if self.read_deleted not in READ_DELETED:
            raise exception.InvalidInput(
                reason=f"context read_deleted must be one of {', '.join(READ_DELETED)}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RequestContext:
        """Build a context from ``oslo_context.RequestContext.to_dict()`` (or Cinder's).

        Reads ``user_id``/``user``, ``project_id``/``project``, ``is_admin`` (absent: ``"admin"
        in roles``), ``roles``, ``read_deleted``, ``quota_class``, ``request_id``,
        ``global_request_id`` and ``remote_address``; ignores every other key.

        Raises:
            InvalidInput: ``read_deleted`` is not ``no``, ``yes`` or ``only``, or a field has the
                wrong type.
        """
        values = values or {}
        if not isinstance(values, dict):
            raise exception.InvalidInput(reason="the RPC context must be a dict")
        roles = values.get("roles") or ()
        if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
            raise exception.InvalidInput(reason="context roles must be a list of strings")
        is_admin = values.get("is_admin")
        if is_admin is None:
            is_admin = "admin" in roles
        kwargs: dict[str, Any] = {
            "user_id": _str_or_none(values, "user_id", "user"),
            "project_id": _str_or_none(values, "project_id", "project"),
            "is_admin": bool(is_admin),
            "roles": tuple(roles),
            "read_deleted": values.get("read_deleted") or "no",
            "quota_class": _str_or_none(values, "quota_class"),
            "global_request_id": _str_or_none(values, "global_request_id"),
            "remote_address": _str_or_none(values, "remote_address"),
        }
        request_id = _str_or_none(values, "request_id")
        if request_id:
            kwargs["request_id"] = request_id
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the context as an RPC context dict (the inverse of :meth:`from_dict`)."""
        return {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "is_admin": self.is_admin,
            "roles": list(self.roles),
            "read_deleted": self.read_deleted,
            "quota_class": self.quota_class,
            "request_id": self.request_id,
            "global_request_id": self.global_request_id,
            "remote_address": self.remote_address,
        }

    @property
    def is_user(self) -> bool:
        """Folsom's ``is_user_context``: not admin, with both a user and a project."""
        return not self.is_admin and bool(self.user_id) and bool(self.project_id)


def _str_or_none(values: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise exception.InvalidInput(reason=f"context {key} must be a string")
        return value
    return None


def admin_context(**overrides: Any) -> RequestContext:
    """Return an admin context with no user or project (``cinder.context.get_admin_context``)."""
    return RequestContext(is_admin=True, roles=("admin",), **overrides)
