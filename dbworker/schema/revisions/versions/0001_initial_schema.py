"""The initial schema: Folsom's tables with dbworker's fixes (see ``dbworker.models``).

Folsom's column names and types (migrations 001 and 002), plus a unique ``(target_num, host)`` on
``iscsi_targets``, no foreign key to the absent ``instances`` table, the modern
``volume_admin_metadata`` table and ``quota_usages.live`` (one live usage per project and resource).
Written out in full rather than derived from ``dbworker.models``, so later model changes need a
revision of their own; a test checks that head matches the models on every database.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: InnoDB and 4-byte UTF-8 on MySQL/MariaDB; ignored elsewhere.
TABLE_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _datetime() -> sa.types.TypeEngine:
    """DATETIME with microseconds on MySQL/MariaDB, as on PostgreSQL and SQLite."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _string(length: int = 255) -> sa.String:
    return sa.String(length=length)


def _cinder_columns() -> list[sa.Column]:
    """``CinderBase``'s timestamps and soft-delete pair, which every table has."""
    return [
        sa.Column("created_at", _datetime(), nullable=True),
        sa.Column("updated_at", _datetime(), nullable=True),
        sa.Column("deleted_at", _datetime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=True),
    ]


def _key_value_table(name: str, parent: str, parent_type: sa.types.TypeEngine) -> None:
    """A ``key``/``value`` child table of ``parent`` (metadata, admin metadata, extra specs)."""
    parent_column = f"{parent[:-1]}_id"
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _string(), nullable=True),
        sa.Column("value", _string(), nullable=True),
        sa.Column(parent_column, parent_type, nullable=False),
        *_cinder_columns(),
        sa.ForeignKeyConstraint([parent_column], [f"{parent}.id"]),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index(f"{name}_{parent_column}_idx", name, [parent_column], unique=False)


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", _string(), nullable=True),
        sa.Column("binary", _string(), nullable=True),
        sa.Column("topic", _string(), nullable=True),
        sa.Column("report_count", sa.Integer(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=True),
        sa.Column("availability_zone", _string(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "volumes",
        sa.Column("id", _string(36), nullable=False),
        sa.Column("ec2_id", _string(), nullable=True),
        sa.Column("user_id", _string(), nullable=True),
        sa.Column("project_id", _string(), nullable=True),
        sa.Column("snapshot_id", _string(36), nullable=True),
        sa.Column("host", _string(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("availability_zone", _string(), nullable=True),
        sa.Column("instance_uuid", _string(36), nullable=True),
        sa.Column("mountpoint", _string(), nullable=True),
        sa.Column("attach_time", _string(), nullable=True),
        sa.Column("status", _string(), nullable=True),
        sa.Column("attach_status", _string(), nullable=True),
        sa.Column("scheduled_at", _datetime(), nullable=True),
        sa.Column("launched_at", _datetime(), nullable=True),
        sa.Column("terminated_at", _datetime(), nullable=True),
        sa.Column("display_name", _string(), nullable=True),
        sa.Column("display_description", _string(), nullable=True),
        sa.Column("provider_location", _string(256), nullable=True),
        sa.Column("provider_auth", _string(256), nullable=True),
        sa.Column("volume_type_id", sa.Integer(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("volumes_host_idx", "volumes", ["host"], unique=False)
    op.create_index("volumes_project_id_idx", "volumes", ["project_id"], unique=False)
    _key_value_table("volume_metadata", "volumes", _string(36))
    _key_value_table("volume_admin_metadata", "volumes", _string(36))

    op.create_table(
        "volume_types",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _string(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    _key_value_table("volume_type_extra_specs", "volume_types", sa.Integer())

    op.create_table(
        "snapshots",
        sa.Column("id", _string(36), nullable=False),
        sa.Column("user_id", _string(), nullable=True),
        sa.Column("project_id", _string(), nullable=True),
        sa.Column("volume_id", _string(36), nullable=False),
        sa.Column("status", _string(), nullable=True),
        sa.Column("progress", _string(), nullable=True),
        sa.Column("volume_size", sa.Integer(), nullable=True),
        sa.Column("scheduled_at", _datetime(), nullable=True),
        sa.Column("display_name", _string(), nullable=True),
        sa.Column("display_description", _string(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("snapshots_project_id_idx", "snapshots", ["project_id"], unique=False)
    op.create_index("snapshots_volume_id_idx", "snapshots", ["volume_id"], unique=False)

    op.create_table(
        "iscsi_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_num", sa.Integer(), nullable=True),
        sa.Column("host", _string(), nullable=True),
        sa.Column("volume_id", _string(36), nullable=True),
        *_cinder_columns(),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target_num", "host", name="uniq_iscsi_targets0target_num0host"),
        **TABLE_OPTIONS,
    )
    op.create_index("iscsi_targets_host_idx", "iscsi_targets", ["host"], unique=False)
    op.create_index("iscsi_targets_volume_id_idx", "iscsi_targets", ["volume_id"], unique=False)

    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_compute", _string(), nullable=True),
        sa.Column("dest_compute", _string(), nullable=True),
        sa.Column("dest_host", _string(), nullable=True),
        sa.Column("old_instance_type_id", sa.Integer(), nullable=True),
        sa.Column("new_instance_type_id", sa.Integer(), nullable=True),
        sa.Column("instance_uuid", _string(), nullable=True),
        sa.Column("status", _string(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", _string(), nullable=True),
        sa.Column("resource", _string(), nullable=False),
        sa.Column("hard_limit", sa.Integer(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("quotas_project_id_idx", "quotas", ["project_id"], unique=False)
    op.create_table(
        "quota_classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_name", _string(), nullable=True),
        sa.Column("resource", _string(), nullable=True),
        sa.Column("hard_limit", sa.Integer(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_quota_classes_class_name", "quota_classes", ["class_name"], unique=False)
    op.create_table(
        "quota_usages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", _string(), nullable=True),
        sa.Column("resource", _string(), nullable=True),
        sa.Column("in_use", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("until_refresh", sa.Integer(), nullable=True),
        sa.Column("live", sa.Integer(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "resource", "live", name="uniq_quota_usages0live"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_quota_usages_project_id", "quota_usages", ["project_id"], unique=False)
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", _string(36), nullable=False),
        sa.Column("usage_id", sa.Integer(), nullable=False),
        sa.Column("project_id", _string(), nullable=True),
        sa.Column("resource", _string(), nullable=True),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("expire", _datetime(), nullable=True),
        *_cinder_columns(),
        sa.ForeignKeyConstraint(["usage_id"], ["quota_usages.id"]),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_reservations_project_id", "reservations", ["project_id"], unique=False)
    op.create_index("reservations_uuid_idx", "reservations", ["uuid"], unique=False)

    op.create_table(
        "sm_flavors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label", _string(), nullable=True),
        sa.Column("description", _string(), nullable=True),
        *_cinder_columns(),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "sm_backend_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flavor_id", sa.Integer(), nullable=False),
        sa.Column("sr_uuid", _string(), nullable=True),
        sa.Column("sr_type", _string(), nullable=True),
        sa.Column("config_params", _string(2047), nullable=True),
        *_cinder_columns(),
        sa.ForeignKeyConstraint(["flavor_id"], ["sm_flavors.id"]),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "sm_volume",
        sa.Column("id", _string(36), nullable=False),
        sa.Column("backend_id", sa.Integer(), nullable=False),
        sa.Column("vdi_uuid", _string(), nullable=True),
        *_cinder_columns(),
        sa.ForeignKeyConstraint(["backend_id"], ["sm_backend_config.id"]),
        sa.ForeignKeyConstraint(["id"], ["volumes.id"]),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )


#: Every table, parents first (downgrade drops them in reverse).
TABLES = (
    "services",
    "volumes",
    "volume_metadata",
    "volume_admin_metadata",
    "volume_types",
    "volume_type_extra_specs",
    "snapshots",
    "iscsi_targets",
    "migrations",
    "quotas",
    "quota_classes",
    "quota_usages",
    "reservations",
    "sm_flavors",
    "sm_backend_config",
    "sm_volume",
)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
