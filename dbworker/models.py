"""SQLAlchemy models for every Folsom table, with the legacy table and column names.

Column types follow the schema Folsom's migrations (001, 002) created, which is what a Folsom-era
database holds, with dbworker's fixes: a unique ``(target_num, host)`` on ``iscsi_targets``,
no foreign key to the absent ``instances`` table, the modern ``volume_admin_metadata`` table, and one
live ``quota_usages`` row per ``(project_id, resource)``. One table is dbworker's own: ``rpc_calls``,
the RPC write calls already applied (:class:`RpcCall`).

Relationships are ``lazy="raise"`` and view-only: a handler eager-loads what its reply needs and
writes child rows explicitly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship


def utcnow() -> datetime:
    """Return the current time as naive UTC, as the legacy DATETIME columns hold it."""
    return datetime.now(UTC).replace(tzinfo=None)


#: DATETIME with microseconds on MySQL/MariaDB (their default drops them), as on the others.
DateTimeUs = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: A JSON document of up to 16 MB (MySQL's TEXT holds 64 KB).
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    type_annotation_map = {str: String(255), datetime: DateTimeUs, bool: Boolean(), int: Integer()}


class CinderBase:
    """Folsom's ``CinderBase`` columns: timestamps and the soft-delete pair."""

    __table_args__ = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

    created_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=utcnow)
    deleted_at: Mapped[datetime | None]
    deleted: Mapped[bool | None] = mapped_column(default=False)


class Service(CinderBase, Base):
    """A running service (cinder-volume, cinder-scheduler) on a host."""

    __tablename__ = "services"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str | None]
    binary: Mapped[str | None]
    topic: Mapped[str | None]
    report_count: Mapped[int] = mapped_column(default=0)
    disabled: Mapped[bool | None] = mapped_column(default=False)
    availability_zone: Mapped[str | None] = mapped_column(default="cinder")


class Volume(CinderBase, Base):
    """A block storage device that can be attached to an instance."""

    __tablename__ = "volumes"
    __table_args__ = (
        Index("volumes_project_id_idx", "project_id"),
        Index("volumes_host_idx", "host"),
        CinderBase.__table_args__,
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ec2_id: Mapped[str | None]
    user_id: Mapped[str | None]
    project_id: Mapped[str | None]
    snapshot_id: Mapped[str | None] = mapped_column(String(36))
    host: Mapped[str | None]
    size: Mapped[int | None]
    availability_zone: Mapped[str | None]
    instance_uuid: Mapped[str | None] = mapped_column(String(36))
    mountpoint: Mapped[str | None]
    attach_time: Mapped[str | None]  # legacy: a string, not a datetime
    status: Mapped[str | None]
    attach_status: Mapped[str | None]
    scheduled_at: Mapped[datetime | None]
    launched_at: Mapped[datetime | None]
    terminated_at: Mapped[datetime | None]
    display_name: Mapped[str | None]
    display_description: Mapped[str | None]
    provider_location: Mapped[str | None] = mapped_column(String(256))
    provider_auth: Mapped[str | None] = mapped_column(String(256))
    volume_type_id: Mapped[int | None]  # no foreign key, as in Folsom

    volume_metadata: Mapped[list[VolumeMetadata]] = relationship(
        primaryjoin="and_(VolumeMetadata.volume_id == Volume.id, VolumeMetadata.deleted == False)",
        order_by="VolumeMetadata.id",
        viewonly=True,
        lazy="raise",
    )
    volume_admin_metadata: Mapped[list[VolumeAdminMetadata]] = relationship(
        primaryjoin="and_(VolumeAdminMetadata.volume_id == Volume.id, VolumeAdminMetadata.deleted == False)",
        order_by="VolumeAdminMetadata.id",
        viewonly=True,
        lazy="raise",
    )
    volume_type: Mapped[VolumeType | None] = relationship(
        primaryjoin=lambda: and_(
            foreign(Volume.volume_type_id) == VolumeType.id,
            VolumeType.deleted == False,
        ),
        viewonly=True,
        lazy="raise",
    )


class VolumeMetadata(CinderBase, Base):
    """A metadata key/value pair of a volume."""

    __tablename__ = "volume_metadata"
    __table_args__ = (
        Index("volume_metadata_volume_id_idx", "volume_id"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str | None]
    value: Mapped[str | None]
    volume_id: Mapped[str] = mapped_column(String(36), ForeignKey("volumes.id"))


class VolumeAdminMetadata(CinderBase, Base):
    """An administrator's metadata key/value pair of a volume (modern Cinder's table)."""

    __tablename__ = "volume_admin_metadata"
    __table_args__ = (
        Index("volume_admin_metadata_volume_id_idx", "volume_id"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str | None]
    value: Mapped[str | None]
    volume_id: Mapped[str] = mapped_column(String(36), ForeignKey("volumes.id"))


class VolumeType(CinderBase, Base):
    """A volume type; its name is unique among live types (checked by the handlers, as in Folsom)."""

    __tablename__ = "volume_types"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None]

    extra_specs: Mapped[list[VolumeTypeExtraSpecs]] = relationship(
        primaryjoin="and_(VolumeTypeExtraSpecs.volume_type_id == VolumeType.id, "
        "VolumeTypeExtraSpecs.deleted == False)",
        order_by="VolumeTypeExtraSpecs.id",
        viewonly=True,
        lazy="raise",
    )


class VolumeTypeExtraSpecs(CinderBase, Base):
    """An extra spec key/value pair of a volume type."""

    __tablename__ = "volume_type_extra_specs"
    __table_args__ = (
        Index("volume_type_extra_specs_volume_type_id_idx", "volume_type_id"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str | None]
    value: Mapped[str | None]
    volume_type_id: Mapped[int] = mapped_column(ForeignKey("volume_types.id"))


class Snapshot(CinderBase, Base):
    """A point-in-time copy of a volume."""

    __tablename__ = "snapshots"
    __table_args__ = (
        Index("snapshots_project_id_idx", "project_id"),
        Index("snapshots_volume_id_idx", "volume_id"),
        CinderBase.__table_args__,
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str | None]
    project_id: Mapped[str | None]
    volume_id: Mapped[str] = mapped_column(String(36))  # NOT NULL, no foreign key, as in Folsom
    status: Mapped[str | None]
    progress: Mapped[str | None]
    volume_size: Mapped[int | None]
    scheduled_at: Mapped[datetime | None]  # in Folsom's migration, unmapped by its model
    display_name: Mapped[str | None]
    display_description: Mapped[str | None]


class IscsiTarget(CinderBase, Base):
    """An iSCSI target number on a host, free while ``volume_id`` is NULL."""

    __tablename__ = "iscsi_targets"
    __table_args__ = (
        UniqueConstraint("target_num", "host", name="uniq_iscsi_targets0target_num0host"),
        Index("iscsi_targets_host_idx", "host"),
        Index("iscsi_targets_volume_id_idx", "volume_id"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    target_num: Mapped[int | None]
    host: Mapped[str | None]
    volume_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("volumes.id"))


class Migration(CinderBase, Base):
    """A host-to-host migration record (a nova leftover; no foreign key to ``instances``)."""

    __tablename__ = "migrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    source_compute: Mapped[str | None]
    dest_compute: Mapped[str | None]
    dest_host: Mapped[str | None]
    old_instance_type_id: Mapped[int | None]
    new_instance_type_id: Mapped[int | None]
    instance_uuid: Mapped[str | None]
    status: Mapped[str | None]


class Quota(CinderBase, Base):
    """A project's quota override for one resource; a NULL hard limit means unlimited."""

    __tablename__ = "quotas"
    __table_args__ = (Index("quotas_project_id_idx", "project_id"), CinderBase.__table_args__)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str | None]
    resource: Mapped[str]
    hard_limit: Mapped[int | None]


class QuotaClass(CinderBase, Base):
    """A quota class's override for one resource."""

    __tablename__ = "quota_classes"
    __table_args__ = (Index("ix_quota_classes_class_name", "class_name"), CinderBase.__table_args__)
    id: Mapped[int] = mapped_column(primary_key=True)
    class_name: Mapped[str | None]
    resource: Mapped[str | None]
    hard_limit: Mapped[int | None]


class QuotaUsage(CinderBase, Base):
    """A project's usage of one resource: committed ``in_use`` and outstanding ``reserved``.

    ``live`` is 1 while the row is not deleted and NULL after: the unique key on
    ``(project_id, resource, live)`` keeps one live row per pair on every database.
    """

    __tablename__ = "quota_usages"
    __table_args__ = (
        Index("ix_quota_usages_project_id", "project_id"),
        UniqueConstraint("project_id", "resource", "live", name="uniq_quota_usages0live"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str | None]
    resource: Mapped[str | None]
    in_use: Mapped[int]
    reserved: Mapped[int]
    until_refresh: Mapped[int | None]
    live: Mapped[int | None] = mapped_column(default=1)

    @property
    def total(self) -> int:
        return self.in_use + self.reserved


class Reservation(CinderBase, Base):
    """An outstanding change to a usage, committed or rolled back by its uuid."""

    __tablename__ = "reservations"
    __table_args__ = (
        Index("ix_reservations_project_id", "project_id"),
        Index("reservations_uuid_idx", "uuid"),
        CinderBase.__table_args__,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36))
    usage_id: Mapped[int] = mapped_column(ForeignKey("quota_usages.id"))
    project_id: Mapped[str | None]
    resource: Mapped[str | None]
    delta: Mapped[int]
    expire: Mapped[datetime | None]


class SmFlavor(CinderBase, Base):
    """A storage-manager flavor, found by its label."""

    __tablename__ = "sm_flavors"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None]
    description: Mapped[str | None]


class SmBackendConfig(CinderBase, Base):
    """A storage-manager backend (storage repository) configuration."""

    __tablename__ = "sm_backend_config"
    id: Mapped[int] = mapped_column(primary_key=True)
    flavor_id: Mapped[int] = mapped_column(ForeignKey("sm_flavors.id"))
    sr_uuid: Mapped[str | None]
    sr_type: Mapped[str | None]
    config_params: Mapped[str | None] = mapped_column(String(2047))


class SmVolume(CinderBase, Base):
    """A storage-manager volume: a volume's placement on a backend."""

    __tablename__ = "sm_volume"
    id: Mapped[str] = mapped_column(String(36), ForeignKey("volumes.id"), primary_key=True)
    backend_id: Mapped[int] = mapped_column(ForeignKey("sm_backend_config.id"))
    vdi_uuid: Mapped[str | None]


class RpcCall(Base):
    """A write call's record, inserted in the call's own transaction (``dbworker.edge.delivery``):
    by its message's ``_unique_id``, so a redelivery of a message whose call committed finds the
    key taken and is not run again (at-most-once); or by its caller's idempotency key (``key:``
    and the key), with the call's ``digest`` and its ``outcome`` (JSON: the reply, or the typed
    error), so a caller's retry is answered with that outcome. Not a Cinder table: no soft delete;
    the workers and ``db purge`` remove old rows."""

    __tablename__ = "rpc_calls"
    __table_args__ = (Index("rpc_calls_created_at_idx", "created_at"), CinderBase.__table_args__)
    unique_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    method: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    digest: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(LongText)


#: Tables children first, the order in which rows can be deleted without breaking a foreign key.
def tables_children_first() -> list:
    return list(reversed(Base.metadata.sorted_tables))
