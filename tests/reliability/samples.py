"""What the reliability tests share: a seed with the same rows for two projects, one sample call
per registered function (:data:`SAMPLES`), the request contexts, and snapshots of the database.

The seed gives projects ``p1`` and ``p2`` the same rows (live, deleted and "doomed" volumes,
snapshots, metadata, quotas, usages, reservations), each id, uuid and name prefixed with the
project (``p1-vol``, ``p2-res-get``), so a reply that carries another project's row is recognised by
its prefix. Global rows (services, volume types, targets, migrations, sm_*, quota classes) have
fixed ids far above what the databases' sequences hand out during a test session.

Every sample targets project ``p1`` and succeeds for an admin on a freshly seeded database when the
samples run in :data:`SAMPLES` order (reads first, destroys last).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbworker import models
from dbworker.core.context import RequestContext, admin_context

INSTANCE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
PROJECTS = ("p1", "p2")
FAR_FUTURE = datetime(2100, 1, 1)
LONG_AGO = datetime(2001, 1, 1)

# Global rows: fixed ids no sequence reaches during a session.
SERVICE, SERVICE_DOOMED = 900001, 900002
VOLUME_TYPE, VOLUME_TYPE_DOOMED = 900001, 900002
TARGET_USED, TARGET_FREE = 900001, 900002
MIGRATION = 900001
FLAVOR, FLAVOR_DOOMED = 900001, 900002
BACKEND, BACKEND_DOOMED = 900001, 900002


def usage_id(project: str, resource: str) -> int:
    """The id of the seeded usage row of ``project`` for ``resource``."""
    return 900100 + 10 * PROJECTS.index(project) + ("volumes", "gigabytes", "snapshots").index(resource)


def _project_rows(p: str, u: str) -> dict[str, list[dict[str, Any]]]:
    """The rows each project gets, by table name."""
    volume = {"user_id": u, "project_id": p, "host": "h1", "size": 1, "status": "available"}
    n = PROJECTS.index(p)
    return {
        "volumes": [
            {**volume, "id": f"{p}-vol", "volume_type_id": VOLUME_TYPE, "instance_uuid": INSTANCE},
            {**volume, "id": f"{p}-vol-gone", "deleted": True, "deleted_at": LONG_AGO},
            {**volume, "id": f"{p}-vol-doomed"},
        ],
        "volume_metadata": [
            {"volume_id": f"{p}-vol", "key": "k", "value": f"{p}-v"},
            {"volume_id": f"{p}-vol", "key": "k2", "value": f"{p}-v2"},
            {"volume_id": f"{p}-vol-gone", "key": "k", "value": f"{p}-gone", "deleted": True},
        ],
        "volume_admin_metadata": [{"volume_id": f"{p}-vol", "key": "ak", "value": f"{p}-av"}],
        "snapshots": [
            {"id": f"{p}-snap", "volume_id": f"{p}-vol", "user_id": u, "project_id": p, "volume_size": 1},
            {"id": f"{p}-snap-gone", "volume_id": f"{p}-vol", "project_id": p, "deleted": True},
            {"id": f"{p}-snap-doomed", "volume_id": f"{p}-vol", "project_id": p},
        ],
        "quotas": [
            {"project_id": p, "resource": resource, "hard_limit": limit}
            for resource, limit in (("volumes", 10), ("gigabytes", 100), ("snapshots", 5))
        ],
        "quota_usages": [
            {"id": usage_id(p, r), "project_id": p, "resource": r, "in_use": in_use, "reserved": reserved}
            for r, in_use, reserved in (("volumes", 1, 3), ("gigabytes", 1, 0), ("snapshots", 0, 0))
        ]
        + [
            {"id": 900190 + n, "project_id": p, "resource": "volumes", "in_use": 7, "reserved": 0,
             "deleted": True, "live": None},
        ],
        "reservations": [
            {"uuid": f"{p}-res-{name}", "usage_id": usage_id(p, "volumes"), "project_id": p,
             "resource": "volumes", "delta": delta, "expire": expire}
            for name, delta, expire in (
                ("get", 1, FAR_FUTURE),
                ("commit", 1, FAR_FUTURE),
                ("rollback", 1, FAR_FUTURE),
                ("doomed", 0, FAR_FUTURE),
                ("expired", 0, LONG_AGO),
            )
        ],
    }  # fmt: skip


GLOBAL_ROWS: dict[str, list[dict[str, Any]]] = {
    "services": [
        {"id": SERVICE, "host": "h1", "binary": "cinder-volume", "topic": "cinder-volume"},
        {"id": SERVICE_DOOMED, "host": "h9", "binary": "cinder-volume", "topic": "cinder-volume"},
    ],
    "volume_types": [{"id": VOLUME_TYPE, "name": "gold"}, {"id": VOLUME_TYPE_DOOMED, "name": "doomed-type"}],
    "volume_type_extra_specs": [{"volume_type_id": VOLUME_TYPE, "key": "qos", "value": "high"}],
    "iscsi_targets": [
        {"id": TARGET_USED, "target_num": 1, "host": "h1", "volume_id": "p1-vol"},
        {"id": TARGET_FREE, "target_num": 2, "host": "h1"},
    ],
    "migrations": [
        {"id": MIGRATION, "instance_uuid": INSTANCE, "status": "finished", "updated_at": LONG_AGO}
    ],
    "quota_classes": [
        {"class_name": "c1", "resource": "volumes", "hard_limit": 5},
        {"class_name": "c1", "resource": "gigabytes", "hard_limit": 50},
        {"class_name": "c-doomed", "resource": "volumes", "hard_limit": 1},
    ],
    "sm_flavors": [{"id": FLAVOR, "label": "gold-flavor"}, {"id": FLAVOR_DOOMED, "label": "doomed-flavor"}],
    "sm_backend_config": [
        {"id": BACKEND, "flavor_id": FLAVOR, "sr_uuid": "sr-1"},
        {"id": BACKEND_DOOMED, "flavor_id": FLAVOR, "sr_uuid": "sr-9"},
    ],
    "sm_volume": [
        {"id": "p1-vol", "backend_id": BACKEND, "vdi_uuid": "vdi-1"},
        {"id": "p1-vol-doomed", "backend_id": BACKEND, "vdi_uuid": "vdi-9"},
    ],
}


def seed(engine: Engine) -> None:
    """Insert the rows of both projects and the global rows, parents first, in one transaction."""
    rows: dict[str, list[dict[str, Any]]] = {name: list(values) for name, values in GLOBAL_ROWS.items()}
    for p, u in zip(PROJECTS, ("u1", "u2"), strict=True):
        for name, values in _project_rows(p, u).items():
            rows.setdefault(name, []).extend(values)
    with engine.begin() as conn:
        for table in models.Base.metadata.sorted_tables:
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows.get(table.name, ()):
                row = _complete(table, row)
                groups.setdefault(tuple(sorted(row)), []).append(row)
            for group in groups.values():  # an executemany needs the same keys in every row
                conn.execute(table.insert(), group)


def _complete(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with the seed's defaults (Core fills the other columns with theirs)."""
    full = {"created_at": LONG_AGO, "deleted": False, **row}
    if table.name == "quota_usages":
        full.setdefault("live", 1)
    return full


#: One sample call per registered function, in the order the matrix runs them.
SAMPLES: dict[str, dict[str, Any]] = {
    # --- reads
    "service_get": {"service_id": SERVICE},
    "service_get_by_host_and_topic": {"host": "h1", "topic": "cinder-volume"},
    "service_get_all": {},
    "service_get_all_by_topic": {"topic": "cinder-volume"},
    "service_get_all_by_host": {"host": "h1"},
    "service_get_all_volume_sorted": {},
    "service_get_by_args": {"host": "h1", "binary": "cinder-volume"},
    "volume_get": {"volume_id": "p1-vol"},
    "volume_get_all": {},
    "volume_get_all_by_host": {"host": "h1"},
    "volume_get_all_by_instance_uuid": {"instance_uuid": INSTANCE},
    "volume_get_all_by_project": {"project_id": "p1"},
    "volume_data_get_for_project": {"project_id": "p1"},
    "volume_get_active_by_window": {"begin": "2000-01-01T00:00:00"},
    "volume_metadata_get": {"volume_id": "p1-vol"},
    "volume_admin_metadata_get": {"volume_id": "p1-vol"},
    "snapshot_get": {"snapshot_id": "p1-snap"},
    "snapshot_get_all": {},
    "snapshot_get_all_by_project": {"project_id": "p1"},
    "snapshot_get_all_for_volume": {"volume_id": "p1-vol"},
    "volume_type_get": {"id": VOLUME_TYPE},
    "volume_type_get_by_name": {"name": "gold"},
    "volume_type_get_all": {"inactive": True},
    "volume_type_extra_specs_get": {"volume_type_id": VOLUME_TYPE},
    "iscsi_target_count_by_host": {"host": "h1"},
    "volume_get_iscsi_target_num": {"volume_id": "p1-vol"},
    "migration_get": {"migration_id": MIGRATION},
    "migration_get_by_instance_and_status": {"instance_uuid": INSTANCE, "status": "finished"},
    "migration_get_all_unconfirmed": {"confirm_window": 60},
    "sm_backend_conf_get": {"sm_backend_conf_id": BACKEND},
    "sm_backend_conf_get_by_sr": {"sr_uuid": "sr-1"},
    "sm_backend_conf_get_all": {},
    "sm_flavor_get": {"sm_flavor": "gold-flavor"},
    "sm_flavor_get_all": {},
    "sm_volume_get": {"volume_id": "p1-vol"},
    "sm_volume_get_all": {},
    "quota_get": {"project_id": "p1", "resource": "volumes"},
    "quota_get_all_by_project": {"project_id": "p1"},
    "quota_class_get": {"class_name": "c1", "resource": "volumes"},
    "quota_class_get_all_by_name": {"class_name": "c1"},
    "quota_usage_get": {"project_id": "p1", "resource": "volumes"},
    "quota_usage_get_all_by_project": {"project_id": "p1"},
    "reservation_get": {"uuid": "p1-res-get"},
    "reservation_get_all_by_project": {"project_id": "p1"},
    # --- creates and updates
    "service_create": {"values": {"host": "h2", "binary": "cinder-volume", "topic": "cinder-volume"}},
    "service_update": {"service_id": SERVICE, "values": {"report_count": 5}},
    "volume_create": {"values": {"project_id": "p1", "user_id": "u1", "size": 1, "metadata": {"a": "b"}}},
    "volume_update": {"volume_id": "p1-vol", "values": {"display_name": "renamed"}},
    "volume_attached": {"volume_id": "p1-vol", "instance_id": INSTANCE, "mountpoint": "/dev/vdb"},
    "volume_detached": {"volume_id": "p1-vol"},
    "volume_metadata_update": {"volume_id": "p1-vol", "metadata": {"k": "v9"}, "delete": False},
    "volume_metadata_delete": {"volume_id": "p1-vol", "key": "k2"},
    "volume_admin_metadata_update": {"volume_id": "p1-vol", "metadata": {"ak": "av9"}, "delete": False},
    "volume_admin_metadata_delete": {"volume_id": "p1-vol", "key": "ak"},
    "snapshot_create": {"values": {"volume_id": "p1-vol", "project_id": "p1"}},
    "snapshot_update": {"snapshot_id": "p1-snap", "values": {"status": "available"}},
    "volume_type_create": {"values": {"name": "silver", "extra_specs": {"x": "1"}}},
    "volume_type_extra_specs_update_or_create": {
        "volume_type_id": VOLUME_TYPE, "extra_specs": {"qos": "low"}
    },
    "volume_type_extra_specs_delete": {"volume_type_id": VOLUME_TYPE, "key": "qos"},
    "iscsi_target_create_safe": {"values": {"target_num": 3, "host": "h1"}},
    "volume_allocate_iscsi_target": {"volume_id": "p1-vol", "host": "h1"},
    "migration_create": {"values": {"instance_uuid": INSTANCE, "status": "migrating"}},
    "migration_update": {"id": MIGRATION, "values": {"status": "confirmed"}},
    "sm_flavor_create": {"values": {"label": "silver-flavor"}},
    "sm_flavor_update": {"sm_flavor_id": "gold-flavor", "values": {"description": "d"}},
    "sm_backend_conf_create": {"values": {"flavor_id": FLAVOR, "sr_uuid": "sr-2"}},
    "sm_backend_conf_update": {"sm_backend_conf_id": BACKEND, "values": {"sr_type": "nfs"}},
    "sm_volume_create": {"values": {"id": "p1-vol-gone", "backend_id": BACKEND}},
    "sm_volume_update": {"volume_id": "p1-vol", "values": {"vdi_uuid": "vdi-2"}},
    "quota_create": {"project_id": "p1", "resource": "backups", "limit": 3},
    "quota_update": {"project_id": "p1", "resource": "volumes", "limit": 20},
    "quota_class_create": {"class_name": "c1", "resource": "snapshots", "limit": 3},
    "quota_class_update": {"class_name": "c1", "resource": "volumes", "limit": 6},
    "quota_usage_create": {
        "project_id": "p1", "resource": "backups", "in_use": 0, "reserved": 0, "until_refresh": None
    },
    "quota_usage_update": {
        "project_id": "p1", "resource": "gigabytes", "in_use": 2, "reserved": 0, "until_refresh": None
    },
    "reservation_create": {
        "uuid": "p1-res-new", "usage": {"id": usage_id("p1", "volumes")}, "project_id": "p1",
        "resource": "volumes", "delta": 1, "expire": "2100-01-01T00:00:00",
    },
    "quota_reserve": {
        "resources": ["volumes"], "quotas": {"volumes": 100}, "deltas": {"volumes": 1}, "project_id": "p1"
    },
    "reservation_commit": {"reservations": ["p1-res-commit"]},
    "reservation_rollback": {"reservations": ["p1-res-rollback"]},
    "reservation_expire": {},
    # --- destroys
    "reservation_destroy": {"uuid": "p1-res-doomed"},
    "quota_usage_destroy": {"project_id": "p1", "resource": "snapshots"},
    "quota_destroy": {"project_id": "p1", "resource": "snapshots"},
    "quota_class_destroy": {"class_name": "c1", "resource": "gigabytes"},
    "quota_class_destroy_all_by_name": {"class_name": "c-doomed"},
    "service_destroy": {"service_id": SERVICE_DOOMED},
    "volume_destroy": {"volume_id": "p1-vol-doomed"},
    "snapshot_destroy": {"snapshot_id": "p1-snap-doomed"},
    "volume_type_destroy": {"name": "doomed-type"},
    "sm_volume_delete": {"volume_id": "p1-vol-doomed"},
    "sm_backend_conf_delete": {"sm_backend_conf_id": BACKEND_DOOMED},
    "sm_flavor_delete": {"sm_flavor_id": "doomed-flavor"},
    "quota_destroy_all_by_project": {"project_id": "p1"},
}  # fmt: skip


# --- contexts ---------------------------------------------------------------------------------
WHO = ("admin", "user", "other", "anon")


def context(who: str, read_deleted: str = "no") -> RequestContext:
    """``admin``; ``user`` (u1 of p1, quota class c1); ``other`` (u2 of p2, class c2); ``anon``."""
    if who == "admin":
        return admin_context(read_deleted=read_deleted)
    if who == "anon":
        return RequestContext(read_deleted=read_deleted)
    user, project, quota_class = {"user": ("u1", "p1", "c1"), "other": ("u2", "p2", "c2")}[who]
    return RequestContext(
        user_id=user,
        project_id=project,
        roles=("member",),
        quota_class=quota_class,
        read_deleted=read_deleted,
    )


# --- snapshots of the database ----------------------------------------------------------------
def table_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by primary key (to compare before and after a call)."""
    with engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))]
            for table in models.Base.metadata.sorted_tables
        }


PROJECT_MODELS = (models.Volume, models.Snapshot, models.Quota, models.QuotaUsage, models.Reservation)
VOLUME_CHILDREN = (models.VolumeMetadata, models.VolumeAdminMetadata)


def project_rows(db: Any, project: str) -> dict[str, list[dict[str, Any]]]:
    """The project's rows (and its volumes' metadata), read through ``db.rows``, as column dicts."""
    found = {m.__tablename__: db.rows(m, m.project_id == project) for m in PROJECT_MODELS}
    for m in VOLUME_CHILDREN:
        found[m.__tablename__] = db.rows(m, m.volume_id.like(f"{project}-%"))
    return {
        name: sorted(
            ({c.key: getattr(r, c.key) for c in r.__mapper__.column_attrs} for r in rows),
            key=lambda d: str(d.get("id")),
        )
        for name, rows in found.items()
    }


def leaks(reply: Any, project: str) -> list[Any]:
    """The parts of ``reply`` that belong to ``project``: records with its ``project_id``, and any
    string (key or value) holding its ``<project>-`` prefix."""
    marker = f"{project}-"
    if isinstance(reply, dict):
        own = [reply] if reply.get("project_id") == project else []
        keys = [k for k in reply if marker in k]
        return own + keys + [x for v in reply.values() for x in leaks(v, project)]
    if isinstance(reply, list | tuple):
        return [x for v in reply for x in leaks(v, project)]
    if isinstance(reply, str) and marker in reply:
        return [reply]
    return []
