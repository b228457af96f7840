"""The handler modules, one per table family; adding a family costs one line in ``MODULES``.

A handler lives in the module of the table it writes, or else reads.
"""

from __future__ import annotations

from dbworker.core.registry import Registry
from dbworker.handlers import (
    iscsi_targets,
    migrations,
    quota_reserve,
    quotas,
    reservations,
    services,
    sm_backends,
    snapshots,
    volume_metadata,
    volume_types,
    volumes,
)

MODULES = (
    services,
    volumes,
    volume_metadata,
    snapshots,
    volume_types,
    iscsi_targets,
    migrations,
    sm_backends,
    quotas,
    reservations,
    quota_reserve,
)


def build_registry() -> Registry:
    """Return the registry of every handler in :data:`MODULES`."""
    return Registry.from_modules(MODULES)
