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
from sqlalchemy.orm import Session

from bench import peer_sql
from bench.measure import Call
from dbworker import client as dbclient
from dbworker import schema
from dbworker.models import Volume, VolumeMetadata, VolumeType, VolumeTypeExtraSpecs, utcnow
from dbworker.session import make_engine

READ_VOLUMES = 100
LIST_VOLUMES = 10
READER = {"user_id": "u-bench", "project_id": "p-bench", "is_admin": False, "roles": ["member"]}
LISTER = {**READER, "project_id": "p-list"}
CREATOR = {**READER, "project_id": "p-create"}
#: The operations measured against dbworker, in report order.
OPERATIONS = ("volume_get", "volume_create", "volume_get_all_by_project", "quota_reserve+commit")


#: The tables the benchmarked calls read, whose statistics :meth:`Data.analyze` refreshes.
ANALYZED = ("volumes", "volume_metadata", "volume_types", "volume_type_extra_specs")


class Data:
    """The seeded database: schema at head, a volume type, the read and list volumes, filler."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url, max_pool_size=18)
        self.engines = [self.engine]  # disposed with the data
        schema.upgrade(self.engine)
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
        """Add filler volumes until ``volumes`` holds ``rows`` rows, then :meth:`analyze`."""
        while self.rows < rows:
            count = min(batch, rows - self.rows)
            self._volumes(f"p-fill-{self.rows // batch}", count, metadata=False)
            self.rows += count
        self.analyze()

    def analyze(self) -> None:
        """Refresh the planner's statistics of :data:`ANALYZED` (``ANALYZE``), as autovacuum would
        on a server that runs it: the bench's creates grow ``volumes`` and ``volume_metadata``, and
        this machine's PostgreSQL runs with ``autovacuum = off`` (measured: with statistics from
        before the creates, the project listing's plan scanned all of ``volume_metadata``)."""
        postgresql = self.engine.dialect.name == "postgresql"
        with self.engine.connect() as conn:
            for table in ANALYZED:
                conn.execute(sa.text(f"ANALYZE {table}" if postgresql else f"ANALYZE TABLE {table}"))
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
        for engine in self.engines:
            engine.dispose()


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


#: The daemon that serves no metrics (the baseline of their cost).
NO_METRICS = "dbworker-1, no metrics"

#: The rows of the replica pair: ``volume_get`` on the primary, and sent with ``use_slave``.
ON_PRIMARY, ON_REPLICA = "dbworker-1, primary", "dbworker-1, replica"

#: The row that measures what a call's terms cost: ``volume_create`` sent without them.
CREATE_WITHOUT_TERMS = "volume_create, no key or deadline"


class ClientWithoutTerms(dbclient.Client):
    """``dbworker.client`` as it was before a call carried terms: one attempt, the caller's context
    as is (no ``deadline``, no ``idempotency_key``), so the worker records a write by its message's
    id. The baseline for the cost of keys and deadlines."""

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        return self._attempt(name, ctxt, kwargs, self._timeout)


def create_without_terms(rpc_transport: oslo_messaging.Transport, topic: str, data: Data) -> Call:
    """``volume_create`` as in :func:`dbworker_calls`, sent by :class:`ClientWithoutTerms`."""
    api, values = ClientWithoutTerms(rpc_transport, topic=topic, timeout=30), create_values(data.type_id)
    return lambda t, i: api.volume_create(CREATOR, values)


# --- the baselines ----------------------------------------------------------------------------------
def echo_call(rpc_transport: oslo_messaging.Transport, topic: str, data: Data, timeout: float = 30) -> Call:
    """A call to the bare echo server, sending a volume id (the size of a volume_get request)."""
    target = oslo_messaging.Target(topic=topic, version="1.0")
    rpc = oslo_messaging.get_rpc_client(rpc_transport, target, timeout=timeout)
    return lambda t, i: rpc.call({}, "echo", arg=data.read_id(t * 7919 + i))


def direct_calls(data: Data) -> dict[str, Call]:
    """The no-broker floor: the peers' Core statements (:mod:`bench.peer_sql`) on a plain pooled
    engine in this process, one transaction per call. ``volume_get`` returns dbworker's reply;
    ``volume_create`` inserts the volume and its metadata item and re-reads it, as dbworker's does."""
    engine = peer_sql.make_engine(data.url)
    data.engines.append(engine)
    values = create_values(data.type_id)

    def read(t: int, i: int) -> dict[str, Any]:
        with engine.begin() as conn:
            return peer_sql.volume_get(conn, data.read_id(t * 7919 + i), READER["project_id"])

    def insert(t: int, i: int) -> dict[str, Any]:
        with engine.begin() as conn:
            return peer_sql.volume_create(conn, values, CREATOR["project_id"], CREATOR["user_id"])

    return {"volume_get": read, "volume_create": insert}


def oslo_peer_calls(rpc_transport: oslo_messaging.Transport, topic: str, data: Data) -> dict[str, Call]:
    """Calls to the bare oslo.messaging peer (:mod:`bench.oslo_peer`): the same read, one row."""
    target = oslo_messaging.Target(topic=topic, version="1.0")
    rpc = oslo_messaging.get_rpc_client(rpc_transport, target, timeout=30)
    return {
        op: (lambda t, i, op=op: rpc.call(READER, op, volume_id=data.read_id(t * 7919 + i)))
        for op in ("volume_get", "volume_row")
    }


def celery_calls(broker_url: str, queue: str, database_url: str, data: Data) -> dict[str, Call]:
    """Calls to the Celery peer (:mod:`bench.celery_app`): the same read and the one-row read."""
    os.environ.update(BENCH_BROKER_URL=broker_url, BENCH_CELERY_QUEUE=queue, BENCH_DATABASE_URL=database_url)
    from bench import celery_app

    def task(name: str) -> Call:
        def call(t: int, i: int) -> object:
            result = getattr(celery_app, name).apply_async((READER, data.read_id(t * 7919 + i)), queue=queue)
            return result.get(timeout=30)

        return call

    return {"volume_get": task("volume_get"), "volume_row": task("volume_row")}


def celery_ping(queue: str) -> Callable[[], Any]:
    """One round trip to the Celery worker (its first answer marks its start-up)."""
    from bench import celery_app

    return lambda: celery_app.ping.apply_async(queue=queue).get(timeout=0.5)
