"""Handlers for the ``volume_metadata`` and ``volume_admin_metadata`` tables (the admin family, which
Folsom lacked, with modern Cinder's signatures, for admin contexts only).

Each function first checks that the caller may see the volume (``VolumeNotFound`` otherwise, also
for another project's volume); metadata values are stored in their Python string form.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dbworker.core.context import RequestContext
from dbworker.core.query import bulk_soft_delete, metadata_items
from dbworker.core.registry import Auth, handler
from dbworker.handlers.volume_replies import check_visible
from dbworker.handlers.volumes import MetadataModel, live_metadata, write_metadata
from dbworker.models import VolumeAdminMetadata, VolumeMetadata


def _metadata_dict(tx: Session, model: MetadataModel, volume_id: str) -> dict[str, str]:
    return {row.key: row.value for row in live_metadata(tx, model, volume_id)}


def _metadata_update(
    tx: Session, model: MetadataModel, volume_id: str, metadata: dict[str, Any], delete: bool, what: str
) -> dict[str, str]:
    write_metadata(tx, model, volume_id, metadata_items(metadata, what=what), delete=delete)
    return _metadata_dict(tx, model, volume_id)


def _metadata_delete(tx: Session, model: MetadataModel, volume_id: str, key: str) -> None:
    bulk_soft_delete(tx, model, model.volume_id == volume_id, model.key == key, model.deleted == False)


@handler
def volume_metadata_get(tx: Session, ctx: RequestContext, volume_id: str) -> dict[str, str]:
    """Return the volume's live metadata as a dict; raise VolumeNotFound."""
    return _metadata_dict(tx, VolumeMetadata, check_visible(tx, ctx, volume_id))


@handler(writes=True)
def volume_metadata_delete(tx: Session, ctx: RequestContext, volume_id: str, key: str) -> None:
    """Soft-delete the metadata ``key`` (updated_at kept; an absent key is fine); raise
    VolumeNotFound."""
    _metadata_delete(tx, VolumeMetadata, check_visible(tx, ctx, volume_id), key)


@handler(writes=True)
def volume_metadata_update(
    tx: Session, ctx: RequestContext, volume_id: str, metadata: dict[str, Any], delete: bool
) -> dict[str, str]:
    """Set ``metadata`` on the volume (with ``delete``, soft-delete the keys not given) and return
    the resulting metadata; raise VolumeNotFound, InvalidInput."""
    volume_id = check_visible(tx, ctx, volume_id)
    return _metadata_update(tx, VolumeMetadata, volume_id, metadata, delete, "metadata")


@handler(auth=Auth.ADMIN)
def volume_admin_metadata_get(tx: Session, ctx: RequestContext, volume_id: str) -> dict[str, str]:
    """Return the volume's live admin metadata as a dict; raise VolumeNotFound."""
    return _metadata_dict(tx, VolumeAdminMetadata, check_visible(tx, ctx, volume_id))


@handler(auth=Auth.ADMIN, writes=True)
def volume_admin_metadata_delete(tx: Session, ctx: RequestContext, volume_id: str, key: str) -> None:
    """Soft-delete the admin metadata ``key`` (an absent key is fine); raise VolumeNotFound."""
    _metadata_delete(tx, VolumeAdminMetadata, check_visible(tx, ctx, volume_id), key)


@handler(auth=Auth.ADMIN, writes=True)
def volume_admin_metadata_update(
    tx: Session, ctx: RequestContext, volume_id: str, metadata: dict[str, Any], delete: bool
) -> dict[str, str]:
    """Set admin ``metadata`` on the volume (with ``delete``, soft-delete the keys not given) and
    return the resulting admin metadata; raise VolumeNotFound, InvalidInput."""
    volume_id = check_visible(tx, ctx, volume_id)
    return _metadata_update(tx, VolumeAdminMetadata, volume_id, metadata, delete, "admin_metadata")
