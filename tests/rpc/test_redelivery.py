"""At-most-once over redelivery (contract §6): a write call records its RPC message's unique id in
``rpc_calls`` inside its own transaction, so a second delivery of the same message (the broker lost
the ack and delivered it again, to the same or another worker) is not run again and gets no reply.

On SQLite, PostgreSQL and MariaDB: through the dispatcher, through two real RPC servers over
kombu+memory (a raw message published twice with one ``_unique_id``), and two deliveries racing.
"""

from __future__ import annotations

import logging
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from daemons import ADMIN, wait_for
from oslo_db import exception as db_exc
from raw_peer import RawPeer
from testenv import DATABASES

from dbworker import client, exception, schema
from dbworker.core.context import RequestContext, admin_context
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Auth, Registry, handler
from dbworker.edge import rpc
from dbworker.edge.delivery import (
    CallTerms,
    KeyTaken,
    MessageRecord,
    RecordTrimmer,
    Redelivered,
    trim_delivery_records,
    usable_id,
)
from dbworker.handlers import build_registry
from dbworker.models import QuotaUsage, Reservation, RpcCall, Service, Volume, utcnow
from dbworker.session import make_engine, make_sessionmaker
from dbworker.tools.purge import purge

USER = RequestContext.from_dict({"user_id": "u1", "project_id": "p1", "roles": ["member"]})


@pytest.fixture
def dispatcher(db) -> Dispatcher:
    return Dispatcher(build_registry(), make_sessionmaker(db.engine), retry_interval=0)


# --- the dispatcher -------------------------------------------------------------------------------
def test_a_write_delivered_twice_runs_once_and_the_second_delivery_is_dropped(dispatcher, db, caplog):
    ctx = admin_context()
    values = {"project_id": "p1", "size": 1}  # no id: a second run would create a second volume
    first = dispatcher.call("volume_create", ctx, {"values": values}, record=MessageRecord("m-1"))
    with caplog.at_level(logging.WARNING, logger="dbworker.core.dispatch"), pytest.raises(Redelivered):
        dispatcher.call("volume_create", ctx, {"values": values}, record=MessageRecord("m-1"))

    assert [v.id for v in db.rows(Volume)] == [first["id"]]
    assert [(r.unique_id, r.method) for r in db.rows(RpcCall)] == [("m-1", "volume_create")]
    assert dispatcher.counters["redeliveries_dropped"] == 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "m-1" in warning[0] and "volume_create" in warning[0]


def test_a_read_or_an_in_process_call_records_nothing(dispatcher, db):
    created = dispatcher.call("volume_create", admin_context(), {"values": {"size": 1}})  # LocalAPI: no id
    dispatcher.call(
        "volume_get", admin_context(), {"volume_id": created["id"]}, record=MessageRecord("m-read")
    )
    dispatcher.call(
        "volume_get", admin_context(), {"volume_id": created["id"]}, record=MessageRecord("m-read")
    )
    assert db.rows(RpcCall) == []


def test_a_write_that_failed_left_no_record_so_its_redelivery_runs(dispatcher, db):
    """The failed call wrote nothing (its reply, the error, was sent): running it again cannot
    apply a write twice."""
    with pytest.raises(exception.VolumeNotFound):
        dispatcher.call("volume_destroy", admin_context(), {"volume_id": "v1"}, record=MessageRecord("m-2"))
    assert db.rows(RpcCall) == []
    dispatcher.call("volume_create", admin_context(), {"values": {"id": "v1"}})
    dispatcher.call("volume_destroy", admin_context(), {"volume_id": "v1"}, record=MessageRecord("m-2"))
    assert [r.unique_id for r in db.rows(RpcCall)] == ["m-2"]


def test_over_quota_commits_the_usage_refresh_with_the_record_and_its_redelivery_is_dropped(dispatcher, db):
    dispatcher.call("volume_create", admin_context(), {"values": {"project_id": "p1", "size": 95}})
    args = {"resources": ["volumes", "gigabytes"], "quotas": {"volumes": 3, "gigabytes": 100}}
    args["deltas"] = {"volumes": 1, "gigabytes": 10}
    with pytest.raises(exception.OverQuota):
        dispatcher.call("quota_reserve", USER, args, record=MessageRecord("m-3"))
    assert sorted((u.resource, u.in_use) for u in db.rows(QuotaUsage)) == [("gigabytes", 95), ("volumes", 1)]
    assert [r.method for r in db.rows(RpcCall)] == ["quota_reserve"]
    with pytest.raises(Redelivered):
        dispatcher.call("quota_reserve", USER, args, record=MessageRecord("m-3"))
    assert db.rows(Reservation) == []


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def deadlock_once(tx, ctx, host: str):
    tx.add(Service(host=host))
    tx.flush()
    deadlock_once.calls += 1
    if deadlock_once.calls == 1:
        raise db_exc.DBDeadlock(Exception("Deadlock found when trying to get lock"))
    return "done"


def _registry(*functions: Callable) -> Registry:
    module = types.ModuleType("redelivery_handlers")
    for fn in functions:
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    return Registry.from_modules([module])


def test_a_deadlock_re_run_records_its_delivery_again_and_runs_once_more(db):
    """The record was in the rolled-back transaction: the re-run inserts it and is not dropped."""
    deadlock_once.calls = 0
    dispatcher = Dispatcher(_registry(deadlock_once), make_sessionmaker(db.engine), retry_interval=0)
    assert (
        dispatcher.call("deadlock_once", admin_context(), {"host": "h"}, record=MessageRecord("m-4"))
        == "done"
    )
    assert (deadlock_once.calls, dispatcher.counters["retries"]) == (2, 1)
    assert [s.host for s in db.rows(Service)] == ["h"]
    assert [r.unique_id for r in db.rows(RpcCall)] == ["m-4"]


# --- trimming the records ----------------------------------------------------------------------
def _add_records(engine: sa.Engine, ages: dict[str, timedelta]) -> None:
    now = utcnow()
    with sa.orm.Session(engine) as session, session.begin():
        session.add_all(
            RpcCall(unique_id=k, method="volume_create", created_at=now - a) for k, a in ages.items()
        )


def test_db_purge_deletes_the_records_older_than_its_age_but_never_younger_than_an_hour(db):
    _add_records(db.engine, {"m-now": timedelta(0), "m-2h": timedelta(hours=2), "m-3d": timedelta(days=3)})

    assert purge(db.engine, timedelta(days=1))["rpc_calls"] == 1
    assert sorted(r.unique_id for r in db.rows(RpcCall)) == ["m-2h", "m-now"]
    assert purge(db.engine, timedelta(days=0))["rpc_calls"] == 1  # age 0: still an hour
    assert [r.unique_id for r in db.rows(RpcCall)] == ["m-now"]


def test_trimming_deletes_the_records_older_than_the_age_in_batches_never_younger_than_an_hour(db):
    old = {f"m-old-{n}": timedelta(hours=2, seconds=n) for n in range(25)}
    _add_records(db.engine, {**old, "m-now": timedelta(0), "m-30min": timedelta(minutes=30)})

    assert trim_delivery_records(db.engine, timedelta(0), batch=10) == 25  # age 0: still an hour
    assert sorted(r.unique_id for r in db.rows(RpcCall)) == ["m-30min", "m-now"]
    assert trim_delivery_records(db.engine, timedelta(0), batch=10) == 0


def test_each_worker_trims_records_in_a_thread_that_ends_when_stopped(db):
    _add_records(db.engine, {"m-2h": timedelta(hours=2), "m-now": timedelta(0)})
    trimmer = RecordTrimmer(db.engine, age=timedelta(hours=1), interval=0.1)
    trimmer.start()
    try:
        wait_for(lambda: [r.unique_id for r in db.rows(RpcCall)] == ["m-now"], timeout=10)
    finally:
        trimmer.stop()
    assert not trimmer._thread.is_alive()


def test_a_trim_interval_of_0_starts_no_thread(db):
    trimmer = RecordTrimmer(db.engine, age=timedelta(hours=1), interval=0)
    trimmer.start()
    assert not trimmer._thread.is_alive()
    trimmer.stop()


# --- two deliveries racing (PostgreSQL, MariaDB) ---------------------------------------------------
@handler(auth=Auth.ADMIN, writes=True)
def write_and_hold(tx, ctx, host: str, fail: bool):
    """Write a service row, then wait (bounded) until the test releases the first delivery."""
    tx.add(Service(host=host))
    tx.flush()
    if write_and_hold.holding is not None:
        entered, release = write_and_hold.holding
        write_and_hold.holding = None  # only the first delivery holds
        entered.set()
        assert release.wait(timeout=30)
    if fail:
        raise exception.NotFound()
    return host


write_and_hold.holding = None

WAITING_ON_A_LOCK = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'",
    # Not information_schema.innodb_trx: MariaDB serves it from a cache that was seen stale for
    # seconds (a waiting insert not listed). The processlist shows the insert still running.
    "mysql": "SELECT count(*) FROM information_schema.processlist "
    "WHERE command = 'Query' AND info LIKE 'INSERT INTO rpc_calls%'",
}


@pytest.fixture(scope="module", params=[p for p in DATABASES if p.values[0] != "sqlite"])
def server_database(request, private_database_url) -> Iterator[sa.Engine]:
    engine = make_engine(private_database_url(request.param))
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def _waiting_on_a_lock(engine: sa.Engine) -> int:
    """How many sessions of the test's database wait on a lock (a new transaction each time:
    PostgreSQL's activity view is a snapshot per transaction)."""
    kind = "postgresql" if engine.dialect.name == "postgresql" else "mysql"
    with engine.connect() as conn:
        return conn.execute(sa.text(WAITING_ON_A_LOCK[kind])).scalar()


@pytest.mark.parametrize("by", ["message", "key"])
@pytest.mark.parametrize("first_fails", [False, True], ids=["first-commits", "first-rolls-back"])
def test_a_second_delivery_waits_for_the_first_then_gets_one_outcome(server_database, first_fails, by):
    """The second delivery's insert waits on the record the running first one holds.

    By message id: if the first commits, the second is dropped; if it rolls back (wrote nothing),
    the second runs. By idempotency key: both deliveries end with one outcome, the one kept under
    the key (a first that rolled back keeps its error unless the second ran first), and the row is
    written once, or not at all when the error was kept."""
    engine = server_database
    entered, release = threading.Event(), threading.Event()
    write_and_hold.holding = (entered, release)
    dispatcher = Dispatcher(_registry(write_and_hold), make_sessionmaker(engine), retry_interval=0)
    delivery, host = uuid.uuid4().hex, uuid.uuid4().hex
    outcomes: dict[str, object] = {}

    def deliver(which: str, fail: bool) -> None:
        args = {"host": host, "fail": fail}
        record = (
            MessageRecord(delivery)
            if by == "message"
            else CallTerms(key=delivery).record("write_and_hold", admin_context(), {"host": host}, None)
        )  # the digest leaves `fail` out: one logical call, delivered twice
        try:
            try:
                outcomes[which] = dispatcher.call("write_and_hold", admin_context(), args, record=record)
            except KeyTaken as taken:
                outcomes[which] = taken.record.answer(engine)
        except Exception as err:
            outcomes[which] = type(err)

    first = threading.Thread(target=deliver, args=("first", first_fails))
    first.start()
    assert entered.wait(timeout=30)
    second = threading.Thread(target=deliver, args=("second", False))
    second.start()
    wait_for(lambda: _waiting_on_a_lock(engine) >= 1, 30, what=lambda: f"{outcomes} {second.is_alive()}")
    assert "second" not in outcomes  # it waits on the record
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)

    with engine.connect() as conn:
        hosts = conn.execute(sa.select(Service.host).where(Service.host == host)).scalars().all()
        records = conn.execute(sa.select(RpcCall.unique_id).where(RpcCall.unique_id.endswith(delivery))).all()
    assert len(records) == 1
    if by == "message":
        assert len(hosts) == 1  # applied exactly once
        expected = {"first": exception.NotFound, "second": host} if first_fails else {"first": host}
        assert outcomes == {"second": Redelivered, **expected}
    else:
        assert outcomes["first"] == outcomes["second"]
        assert len(hosts) == (1 if outcomes["first"] == host else 0)
        assert first_fails or outcomes["first"] == host


# --- through the RPC server, over kombu+memory --------------------------------------------------
@pytest.fixture
def transport(rpc_conf) -> Iterator[object]:
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    yield transport
    transport.cleanup()


def test_a_message_redelivered_to_another_worker_is_applied_once_and_answered_once(db, transport):
    topic = f"dbworker-redelivery-{uuid.uuid4().hex[:8]}"
    peer = RawPeer(topic)
    message = {
        "method": "volume_create",
        "args": {"values": {"project_id": "p1", "size": 1}},  # no id: each run creates a volume
        "version": "1.0",
        "_unique_id": uuid.uuid4().hex,
        "_msg_id": uuid.uuid4().hex,
        **{f"_context_{k}": v for k, v in {**ADMIN, "request_id": "req-redelivered"}.items()},
    }
    dispatchers = []
    try:
        for _ in range(2):  # two workers in turn: oslo's own duplicate cache is per listener
            dispatcher = Dispatcher(build_registry(), make_sessionmaker(db.engine))
            dispatchers.append(dispatcher)
            server = rpc.build_server(transport, dispatcher, topic=topic, host="w", pool_size=2)
            server.start()
            try:
                peer.publish(message)
                wait_for(lambda d=dispatcher: sum(d.counters.values()) == 1, 30)
            finally:
                server.stop()
                server.wait()  # every reply of an accepted call is sent before this returns
            peer.drain()
    finally:
        peer.close()

    assert [d.counters for d in dispatchers] == [{"calls_ok": 1}, {"redeliveries_dropped": 1}]
    assert len(peer.replies) == 1 and peer.replies[0]["failure"] is None
    assert [v.id for v in db.rows(Volume)] == [peer.replies[0]["result"]["id"]]
    assert [r.unique_id for r in db.rows(RpcCall)] == [message["_unique_id"]]


@pytest.mark.parametrize(
    ("value", "recorded"),
    [
        (uuid.uuid4().hex, True),
        ("x" * 36, True),
        ("x" * 37, False),
        ("", False),
        (None, False),
        (42, False),
        (["a"], False),
        ("a\x00b", False),
        ("\udc80", False),
        ("é", False),
    ],
)
def test_only_a_short_printable_ascii_unique_id_is_recorded(value, recorded):
    """A message without a usable id (oslo's are 32 hex digits) runs as before, without the record,
    rather than failing its call on the column."""
    assert usable_id(value) == (value if recorded else None)
