"""The yardstick's SQL: dbworker's ``volume_get`` read (and a volume insert) in plain SQLAlchemy Core,
written as a competent user of SQLAlchemy would write it for this one job.

It imports nothing from dbworker: the Celery task (:mod:`bench.celery_app`), the bare oslo.messaging
server (:mod:`bench.oslo_peer`) and the no-broker "direct" rows all use it, so the peers do the same
work as ``volume_get`` with no dbworker code in their processes. The tables are declared here (the
columns of Folsom's schema that dbworker's migrations create); the statements are built once, at
import, with bound parameters; each call is one transaction on a pooled engine.

``volume_get`` returns exactly dbworker's reply for a user context (``bench.check`` compares the
two as JSON): every column of the volume, ``name`` = ``"volume-%s" % id``, its live metadata as a
dict (``metadata``) and as records (``volume_metadata``, by id), and its live volume type as a record
with ``extra_specs`` as a dict (``None`` without a type); datetimes as ``%Y-%m-%dT%H:%M:%S.%f``.
It reads all of it in ONE statement (the volume left-joined to its type, its live metadata and its
type's live extra specs): one round trip and one snapshot, at the price of ``metadata x specs`` rows
(2 x 2 = 4 for the benchmark's volumes).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Boolean, Column, DateTime, Integer, String, and_, bindparam

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
NAME_TEMPLATE = "volume-%s"

meta = sa.MetaData()


def _cinder_columns() -> list[Column[Any]]:
    """Folsom's CinderBase columns, in every table."""
    return [
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
        Column("deleted_at", DateTime),
        Column("deleted", Boolean),
    ]


volumes = sa.Table(
    "volumes",
    meta,
    *_cinder_columns(),
    Column("id", String(36), primary_key=True),
    *(Column(name, String(255)) for name in ("ec2_id", "user_id", "project_id", "snapshot_id", "host")),
    Column("size", Integer),
    Column("availability_zone", String(255)),
    Column("instance_uuid", String(36)),
    Column("mountpoint", String(255)),
    Column("attach_time", String(255)),
    Column("status", String(255)),
    Column("attach_status", String(255)),
    *(Column(name, DateTime) for name in ("scheduled_at", "launched_at", "terminated_at")),
    *(Column(name, String(255)) for name in ("display_name", "display_description")),
    Column("provider_location", String(256)),
    Column("provider_auth", String(256)),
    Column("volume_type_id", Integer),
)
volume_types = sa.Table(
    "volume_types", meta, *_cinder_columns(), Column("id", Integer, primary_key=True), Column("name", String)
)
volume_metadata = sa.Table(
    "volume_metadata",
    meta,
    *_cinder_columns(),
    Column("id", Integer, primary_key=True),
    Column("key", String(255)),
    Column("value", String(255)),
    Column("volume_id", String(36)),
)
extra_specs = sa.Table(
    "volume_type_extra_specs",
    meta,
    *_cinder_columns(),
    Column("id", Integer, primary_key=True),
    Column("key", String(255)),
    Column("value", String(255)),
    Column("volume_type_id", Integer),
)

_SPEC_COLUMNS = (extra_specs.c.id, extra_specs.c.key, extra_specs.c.value)
_V, _T, _M = len(volumes.c), len(volume_types.c), len(volume_metadata.c)

#: The volume, its live type, live metadata and the type's live extra specs, in one statement.
VOLUME_GET = (
    sa.select(*volumes.c, *volume_types.c, *volume_metadata.c, *_SPEC_COLUMNS)
    .select_from(
        volumes.outerjoin(
            volume_types,
            and_(volume_types.c.id == volumes.c.volume_type_id, volume_types.c.deleted == False),
        )
        .outerjoin(
            volume_metadata,
            and_(volume_metadata.c.volume_id == volumes.c.id, volume_metadata.c.deleted == False),
        )
        .outerjoin(
            extra_specs,
            and_(extra_specs.c.volume_type_id == volume_types.c.id, extra_specs.c.deleted == False),
        )
    )
    .where(
        volumes.c.id == bindparam("volume_id"),
        volumes.c.deleted == False,
        volumes.c.project_id == bindparam("project_id"),
    )
    .order_by(volume_metadata.c.id, extra_specs.c.id)
    .set_label_style(sa.LABEL_STYLE_TABLENAME_PLUS_COL)
)

#: The simpler peer: the volume's own row only.
VOLUME_ROW = sa.select(volumes).where(
    volumes.c.id == bindparam("volume_id"),
    volumes.c.deleted == False,
    volumes.c.project_id == bindparam("project_id"),
)

INSERT_VOLUME = sa.insert(volumes)
INSERT_METADATA = sa.insert(volume_metadata)


class NotFound(LookupError):
    """No live volume with that id in the caller's project."""


def _shape(table: sa.Table) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = tuple(c.name for c in table.c)
    return names, tuple(c.name for c in table.c if isinstance(c.type, DateTime))


_SHAPES = {t.name: _shape(t) for t in (volumes, volume_types, volume_metadata)}


def record(table: str, values: Any) -> dict[str, Any]:
    """Return one row's values (in the table's column order) as a dict, datetimes as strings."""
    names, times = _SHAPES[table]
    out = dict(zip(names, values, strict=True))
    for name in times:
        value = out[name]
        if value is not None:
            out[name] = value.strftime(TIME_FORMAT)
    return out


def volume_get(conn: sa.Connection, volume_id: str, project_id: str) -> dict[str, Any]:
    """Return the volume's reply (see the module's docstring); raise NotFound."""
    rows = conn.execute(VOLUME_GET, {"volume_id": volume_id, "project_id": project_id}).all()
    if not rows:
        raise NotFound(volume_id)
    first = rows[0]
    volume = record("volumes", first[:_V])
    items: dict[int, Any] = {}
    specs: dict[int, Any] = {}
    for row in rows:
        m = row[_V + _T : _V + _T + _M]
        if m[4] is not None:  # volume_metadata.id (after the 4 CinderBase columns)
            items.setdefault(m[4], m)
        spec_id = row[_V + _T + _M]
        if spec_id is not None:
            specs.setdefault(spec_id, row[_V + _T + _M + 1 :])
    metadata = [record("volume_metadata", m) for m in items.values()]
    volume_type = None
    if first[_V + 4] is not None:  # volume_types.id
        volume_type = record("volume_types", first[_V : _V + _T])
        volume_type["extra_specs"] = {key: value for key, value in specs.values()}
    volume["name"] = NAME_TEMPLATE % volume["id"]
    volume["metadata"] = {m["key"]: m["value"] for m in metadata}
    volume["volume_metadata"] = metadata
    volume["volume_type"] = volume_type
    return volume


def volume_row(conn: sa.Connection, volume_id: str, project_id: str) -> dict[str, Any]:
    """Return the volume's own row as a dict (datetimes as strings) plus ``name``; raise NotFound."""
    row = conn.execute(VOLUME_ROW, {"volume_id": volume_id, "project_id": project_id}).first()
    if row is None:
        raise NotFound(volume_id)
    volume = record("volumes", row)
    volume["name"] = NAME_TEMPLATE % volume["id"]
    return volume


def volume_create(
    conn: sa.Connection, values: dict[str, Any], project_id: str, user_id: str
) -> dict[str, Any]:
    """Insert a volume and its ``metadata`` items, then return its :func:`volume_get` reply."""
    now = datetime.now(UTC).replace(tzinfo=None)
    volume_id = str(uuid.uuid4())
    row = {k: v for k, v in values.items() if k != "metadata"}
    row.update(id=volume_id, project_id=project_id, user_id=user_id, created_at=now, deleted=False)
    conn.execute(INSERT_VOLUME, row)
    items = [
        {"volume_id": volume_id, "key": k, "value": str(v), "created_at": now, "deleted": False}
        for k, v in sorted(values.get("metadata", {}).items())
    ]
    if items:
        conn.execute(INSERT_METADATA, items)
    return volume_get(conn, volume_id, project_id)


def make_engine(url: str, pool_size: int = 18) -> sa.Engine:
    """A pooled engine for up to 16 threads, the bench's client threads (a server may pass its own size;
    extra pooled connections stay idle); no pre-ping, as dbworker's."""
    return sa.create_engine(url, pool_size=pool_size, max_overflow=2, pool_pre_ping=False)
