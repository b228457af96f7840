"""What the benchmark calls: the seeded data and one ``Call`` per operation and system under test.

Every system does the same work: ``volume_get`` reads one of :data:`READ_VOLUMES` volumes of project
``p-bench`` (two metadata items, a volume type with two extra specs) with a user context; inserts go
to project ``p-create``; ``volume_get_all_by_project`` lists the ten volumes of ``p-list``; each
client thread reserves and commits quota in its own project (``p-quota-<thread>``), as Cinder's
projects do. Filler volumes (no metadata) in other projects bring ``volumes`` to the wanted size.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import oslo_messaging
import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy.orm import Session, joinedload, selectinload

from bench.measure import Call
from dbworker import client as dbclient
from dbworker import migration
from dbworker.models import Volume, VolumeMetadata, VolumeType, VolumeTypeExtraSpecs, utcnow
from dbworker.session import make_engine

READ_VOLUMES = 100
LIST_VOLUMES = 10
READER = {"user_id": "u-bench", "project_id": "p-bench", "is_admin": False, "roles": ["member"]}
LISTER = {**READER, "project_id": "p-list"}
CREATOR = {**READER, "project_id": "p-create"}
#: The operations measured against dbworker, in report order.
OPERATIONS = ("volume_get", "volume_create", "volume_get_all_by_project", "quota_reserve+commit")


class Data:
    """The seeded database: schema at head, a volume type, the read and list volumes, filler."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url, max_pool_size=18)
        migration.upgrade(self.engine)
        with Session(self.engine) as tx, tx.begin():
            volume_type = VolumeType(name="bench-type", created_at=utcnow(), deleted=False)
            tx.add(volume_type)
            tx.flush()
            tx.add_all(
                VolumeTypeExtraSpecs(volume_type_id=volume_type.id, key=k, value=v, deleted=False)
                for k, v in (("volume_backend_name", "lvm"), ("qos", "gold"))
            )
            self.type_id = volume_type.id
        self.read_ids = self._volumes("p-bench", READ_VOLUMES, metadata=True)
        self._volumes("p-list", LIST_VOLUMES, metadata=True)
        self.rows = READ_VOLUMES + LIST_VOLUMES

    def fill(self, rows: int, batch: int = 5000) -> None:
        """Add filler volumes until ``volumes`` holds ``rows`` rows, then ANALYZE the table."""
        while self.rows < rows:
            count = min(batch, rows - self.rows)
            self._volumes(f"p-fill-{self.rows // batch}", count, metadata=False)
            self.rows += count
        with self.engine.connect() as conn:
            conn.execute(
                sa.text(
                    "ANALYZE volumes" if self.engine.dialect.name == "postgresql" else "ANALYZE TABLE volumes"
                )
            )
            conn.commit()

    def _volumes(self, project: str, count: int, *, metadata: bool) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        now = utcnow()
        rows = [
            {
                "id": i,
                "user_id": "u-bench",
                "project_id": project,
                "size": 1,
                "host": "bench-host",
                "availability_zone": "nova",
                "status": "available",
                "attach_status": "detached",
                "display_name": f"vol-{n}",
                "volume_type_id": self.type_id,
                "created_at": now,
                "deleted": False,
            }
            for n, i in enumerate(ids)
        ]
        with self.engine.begin() as conn:
            conn.execute(sa.insert(Volume.__table__), rows)
            if metadata:
                items = [
                    {"volume_id": i, "key": k, "value": v, "created_at": now, "deleted": False}
                    for i in ids
                    for k, v in (("purpose", "bench"), ("tier", "1"))
                ]
                conn.execute(sa.insert(VolumeMetadata.__table__), items)
        return ids

    def read_id(self, index: int) -> str:
        """Return one of the read volumes' ids, cycling through them by ``index``."""
        return self.read_ids[index % len(self.read_ids)]

    def dispose(self) -> None:
        self.engine.dispose()


def create_values(type_id: int) -> dict[str, Any]:
    """The ``values`` of every benchmarked ``volume_create``."""
    return {
        "size": 1,
        "status": "creating",
        "display_name": "bench",
        "volume_type_id": type_id,
        "metadata": {"purpose": "bench"},
    }


def quota_context(thread: int) -> dict[str, Any]:
    """The user context of client thread ``thread``, in its own project."""
    return {**READER, "project_id": f"p-quota-{thread}"}


# --- dbworker over RPC (dbworker.client against the real daemon) ----------------------------------
def transport(url: str) -> oslo_messaging.Transport:
    """Return an RPC transport to ``url`` that rebuilds dbworker's typed errors."""
    conf = cfg.CONF  # oslo.messaging registers its tracing options only on the global CONF
    conf([], project="dbworker-bench")
    return dbclient.get_transport(conf, url)


def dbworker_calls(api: Any, data: Data) -> dict[str, Call]:
    """Return the benchmarked operations on ``api`` (a ``dbworker.client.Client`` or a ``LocalAPI``)."""
    values = create_values(data.type_id)

    def reserve_commit(thread: int, _i: int) -> object:
        ctx = quota_context(thread)
        uuids = api.quota_reserve(
            ctx, ["volumes", "gigabytes"], {"volumes": -1, "gigabytes": -1}, {"volumes": 1, "gigabytes": 1}
        )
        return api.reservation_commit(ctx, uuids)

    return {
        "volume_get": lambda t, i: api.volume_get(READER, data.read_id(t * 7919 + i)),
        "volume_create": lambda t, i: api.volume_create(CREATOR, values),
        "volume_get_all_by_project": lambda t, i: api.volume_get_all_by_project(LISTER, "p-list"),
        "quota_reserve+commit": reserve_commit,
    }


# --- the baselines ----------------------------------------------------------------------------------
def echo_call(rpc_transport: oslo_messaging.Transport, topic: str, data: Data, timeout: float = 30) -> Call:
    """A call to the bare echo server, sending a volume id (the size of a volume_get request)."""
    target = oslo_messaging.Target(topic=topic, version="1.0")
    rpc = oslo_messaging.get_rpc_client(rpc_transport, target, timeout=timeout)
    return lambda t, i: rpc.call({}, "echo", arg=data.read_id(t * 7919 + i))


def direct_calls(data: Data) -> dict[str, Call]:
    """The same read and insert in plain SQLAlchemy ORM, one transaction each, no broker."""
    columns = [c.key for c in Volume.__table__.columns]
    loads = [  # as dbworker's volume handlers load them
        selectinload(Volume.volume_metadata),
        joinedload(Volume.volume_type).selectinload(VolumeType.extra_specs),
    ]

    def read(t: int, i: int) -> dict[str, Any]:
        query = sa.select(Volume).where(
            Volume.id == data.read_id(t * 7919 + i), Volume.deleted == False, Volume.project_id == "p-bench"
        )
        with Session(data.engine) as tx, tx.begin():
            volume = tx.scalars(query.options(*loads)).one()
            out = {key: getattr(volume, key) for key in columns}
            out["metadata"] = {m.key: m.value for m in volume.volume_metadata}
            out["extra_specs"] = {s.key: s.value for s in volume.volume_type.extra_specs}
            return out

    def insert(t: int, i: int) -> str:
        volume_id = str(uuid.uuid4())
        with Session(data.engine) as tx, tx.begin():
            tx.add(
                Volume(
                    id=volume_id,
                    user_id="u-bench",
                    project_id="p-create",
                    size=1,
                    status="creating",
                    display_name="bench",
                    volume_type_id=data.type_id,
                    deleted=False,
                )
            )
            tx.flush()
            tx.add(VolumeMetadata(volume_id=volume_id, key="purpose", value="bench", deleted=False))
        return volume_id

    return {"volume_get": read, "volume_create": insert}


def celery_call(broker_url: str, queue: str, database_url: str, data: Data) -> tuple[Call, Callable[[], Any]]:
    """Return ``(volume_get call, ping)`` through the Celery app of :mod:`bench.celery_app`."""
    os.environ.update(BENCH_BROKER_URL=broker_url, BENCH_CELERY_QUEUE=queue, BENCH_DATABASE_URL=database_url)
    from bench import celery_app

    def call(t: int, i: int) -> object:
        result = celery_app.volume_get.apply_async((READER, data.read_id(t * 7919 + i)), queue=queue)
        return result.get(timeout=30)

    return call, lambda: celery_app.ping.apply_async(queue=queue).get(timeout=0.5)
