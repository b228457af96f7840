"""A call's terms (issue 14): its deadline, and a write's idempotency key.

A call taken after its deadline is not run, writes nothing and gets no reply. A write sent again
with its key is answered with the outcome kept under the key (its reply or its typed error) and
not run again; the key used for another call is refused; a key whose record was trimmed runs
again. Through the dispatcher on SQLite, PostgreSQL and MariaDB, and through a real RPC server
over kombu+memory. (Two deliveries of one key racing: test_redelivery.py.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from daemons import ADMIN, wait_for
from oslo_db import exception as db_exc
from raw_peer import RawPeer

from dbworker import client, exception
from dbworker.core.context import RequestContext, admin_context
from dbworker.core.dispatch import Dispatcher
from dbworker.core.hooks import DeadlinePassed
from dbworker.core.registry import Auth, Registry, handler
from dbworker.edge import rpc
from dbworker.edge.delivery import KEY_PREFIX, MAX_KEY, CallTerms, KeyTaken, trim_delivery_records
from dbworker.handlers import build_registry
from dbworker.models import Reservation, RpcCall, Service, Volume, utcnow
from dbworker.session import make_sessionmaker

USER = RequestContext.from_dict({"user_id": "u1", "project_id": "p1", "roles": ["member"]})


@pytest.fixture
def dispatcher(db) -> Dispatcher:
    return Dispatcher(build_registry(), make_sessionmaker(db.engine), retry_interval=0)


def call_with_key(dispatcher: Dispatcher, name: str, ctx: RequestContext, kwargs: dict, key: str) -> Any:
    """Call as the RPC edge does with an idempotency key: a kept key is answered from its record."""
    record = CallTerms(key=key).record(name, ctx, kwargs, None)
    try:
        return dispatcher.call(name, ctx, kwargs, record=record)
    except KeyTaken as taken:
        return taken.record.answer(dispatcher.engine)


# --- idempotency keys, through the dispatcher -------------------------------------------------------
def test_a_write_sent_again_with_its_key_gets_the_first_reply_and_is_not_run_again(dispatcher, db):
    key, args = uuid.uuid4().hex, {"values": {"project_id": "p1", "size": 1}}  # no id: a re-run adds one
    first = call_with_key(dispatcher, "volume_create", admin_context(), args, key)
    again = call_with_key(dispatcher, "volume_create", admin_context(), args, key)

    assert again == first
    assert [v.id for v in db.rows(Volume)] == [first["id"]]
    (record,) = db.rows(RpcCall)
    assert (record.unique_id, record.method, len(record.digest)) == (KEY_PREFIX + key, "volume_create", 64)
    assert dispatcher.counters == {"calls_ok": 1, "calls_answered_from_record": 1}


def test_a_kept_error_is_the_answer_even_once_the_call_would_succeed(dispatcher, db):
    key, args = uuid.uuid4().hex, {"volume_id": "v1"}
    with pytest.raises(exception.VolumeNotFound) as first:
        call_with_key(dispatcher, "volume_destroy", admin_context(), args, key)
    dispatcher.call("volume_create", admin_context(), {"values": {"id": "v1"}})

    with pytest.raises(exception.VolumeNotFound) as again:
        call_with_key(dispatcher, "volume_destroy", admin_context(), args, key)

    assert (str(again.value), again.value.kwargs) == (str(first.value), first.value.kwargs)
    assert [v.deleted for v in db.rows(Volume)] == [False]  # not run: v1 is still there


def test_an_over_quota_outcome_is_kept_with_its_usage_refresh(dispatcher, db):
    dispatcher.call("volume_create", admin_context(), {"values": {"project_id": "p1", "size": 95}})
    args = {"resources": ["volumes", "gigabytes"], "quotas": {"volumes": 3, "gigabytes": 100}}
    args["deltas"] = {"volumes": 1, "gigabytes": 10}
    key = uuid.uuid4().hex
    for _ in range(2):
        with pytest.raises(exception.OverQuota):
            call_with_key(dispatcher, "quota_reserve", USER, args, key)
    assert db.rows(Reservation) == []
    assert dispatcher.counters["calls_answered_from_record"] == 1


@pytest.mark.parametrize(
    ("name", "ctx", "kwargs"),
    [
        ("volume_create", admin_context(), {"values": {"project_id": "p1", "size": 2}}),  # other arguments
        ("volume_create", USER, {"values": {"project_id": "p1", "size": 1}}),  # another caller
        ("service_create", admin_context(), {"values": {"host": "h"}}),  # another function
    ],
    ids=["arguments", "caller", "function"],
)
def test_a_key_used_again_for_another_call_is_refused_and_runs_nothing(dispatcher, db, name, ctx, kwargs):
    key = uuid.uuid4().hex
    call_with_key(
        dispatcher, "volume_create", admin_context(), {"values": {"project_id": "p1", "size": 1}}, key
    )

    with pytest.raises(exception.IdempotencyKeyReused, match=key):
        call_with_key(dispatcher, name, ctx, kwargs, key)
    assert (len(db.rows(Volume)), db.rows(Service)) == (1, [])


def test_a_key_sent_again_after_its_record_was_trimmed_runs_again(dispatcher, db):
    key, args = uuid.uuid4().hex, {"values": {"project_id": "p1", "size": 1}}
    first = call_with_key(dispatcher, "volume_create", admin_context(), args, key)
    with db.engine.begin() as conn:
        conn.execute(sa.update(RpcCall).values(created_at=utcnow() - timedelta(hours=2)))
    assert trim_delivery_records(db.engine, timedelta(hours=1)) == 1

    again = call_with_key(dispatcher, "volume_create", admin_context(), args, key)
    assert again["id"] != first["id"] and len(db.rows(Volume)) == 2


def test_a_read_with_a_key_keeps_nothing(dispatcher, db):
    created = dispatcher.call("volume_create", admin_context(), {"values": {"size": 1}})
    call_with_key(dispatcher, "volume_get", admin_context(), {"volume_id": created["id"]}, uuid.uuid4().hex)
    assert db.rows(RpcCall) == []


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def always_deadlocks(tx, ctx, host: str):
    tx.add(Service(host=host))
    tx.flush()
    raise db_exc.DBDeadlock(Exception("Deadlock found when trying to get lock"))


def test_a_database_failure_is_not_kept_so_a_retry_of_the_key_runs_again(db):
    """DBBusy, DBUnavailable and DBError say nothing of the call: its retry must run it."""
    registry = Registry.from_modules([_module_of(always_deadlocks)])
    dispatcher = Dispatcher(registry, make_sessionmaker(db.engine), max_deadlock_retries=1, retry_interval=0)
    key = uuid.uuid4().hex
    for _ in range(2):
        with pytest.raises(exception.DBBusy):
            call_with_key(dispatcher, "always_deadlocks", admin_context(), {"host": "h"}, key)
    assert db.rows(RpcCall) == [] and db.rows(Service) == []


def _module_of(fn: Any) -> Any:
    import types

    module = types.ModuleType("call_terms_handlers")
    fn.__module__ = module.__name__
    setattr(module, fn.__name__, fn)
    return module


# --- deadlines, through the dispatcher -----------------------------------------------------------
def test_a_call_past_its_deadline_is_not_run_counted_and_logged(dispatcher, db, caplog):
    args = {"values": {"project_id": "p1", "size": 1}}
    with caplog.at_level(logging.WARNING, logger="dbworker.core.dispatch"), pytest.raises(DeadlinePassed):
        dispatcher.call("volume_create", admin_context(), args, deadline=time.time() - 0.5)
    dispatcher.call("volume_create", admin_context(), args, deadline=time.time() + 30)

    assert len(db.rows(Volume)) == 1
    assert dispatcher.counters == {"calls_expired": 1, "calls_ok": 1}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("volume_create: taken ") and "after its deadline; not run" in warning


# --- the terms a context carries --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ctxt", "terms"),
    [
        ({}, CallTerms()),
        (
            {"deadline": 1796000000.25, "idempotency_key": "k" * MAX_KEY},
            CallTerms(1796000000.25, "k" * MAX_KEY),
        ),
        ({"deadline": 1796000000}, CallTerms(1796000000.0)),
        ({"deadline": None, "idempotency_key": None}, CallTerms()),
        ({"use_slave": True}, CallTerms(use_replica=True)),
        ({"use_slave": False, "deadline": None}, CallTerms()),
    ],
)
def test_the_terms_are_read_from_the_context(ctxt, terms):
    assert CallTerms.from_context(ctxt) == terms


@pytest.mark.parametrize(
    "ctxt",
    [
        {"deadline": True},
        {"deadline": "2026-12-07T10:00:00"},
        {"deadline": float("nan")},
        {"deadline": float("inf")},
        {"deadline": [1]},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * (MAX_KEY + 1)},
        {"idempotency_key": 42},
        {"idempotency_key": "é"},
        {"idempotency_key": "a\x00b"},
        {"use_slave": "yes"},
        {"use_slave": 1},
    ],
)
def test_a_malformed_term_is_refused_as_invalid_input(ctxt):
    with pytest.raises(exception.InvalidInput):
        CallTerms.from_context(ctxt)


# --- through the RPC server, over kombu+memory ------------------------------------------------------
@pytest.fixture
def served(db, rpc_conf) -> Iterator[tuple[RawPeer, Dispatcher]]:
    """A bounded RPC server on its own topic (allowance 0.2 s), and a raw peer calling it."""
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    topic = f"dbworker-terms-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(build_registry(), make_sessionmaker(db.engine))
    server = rpc.build_server(
        transport, dispatcher, topic=topic, host="w", pool_size=2, deadline_allowance=0.2
    )
    peer = RawPeer(topic)
    server.start()
    try:
        yield peer, dispatcher
    finally:
        server.stop()
        server.wait()
        peer.close()
        transport.cleanup()


def _message(method: str, args: dict, **context: Any) -> dict:
    return {
        "method": method,
        "args": args,
        "version": "1.0",
        "_unique_id": uuid.uuid4().hex,
        "_msg_id": uuid.uuid4().hex,
        **{f"_context_{k}": v for k, v in {**ADMIN, **context}.items()},
    }


def test_over_rpc_a_retry_with_the_key_is_answered_with_the_first_reply(served, db):
    peer, _ = served
    key, args = uuid.uuid4().hex, {"values": {"project_id": "p1", "size": 1}}
    for sent in (1, 2):  # two messages (two ids): a caller's retry, not a redelivery
        peer.publish(_message("volume_create", args, idempotency_key=key, deadline=time.time() + 30))
        wait_for(lambda n=sent: peer.drain() or len(peer.replies) == n, 30)

    first, again = peer.replies
    assert first["failure"] is again["failure"] is None and first["result"] == again["result"]
    assert [v.id for v in db.rows(Volume)] == [first["result"]["id"]]


def test_over_rpc_a_call_taken_past_its_deadline_is_not_run_and_gets_no_reply(served, db):
    peer, dispatcher = served
    late = _message("volume_create", {"values": {"size": 1}}, deadline=time.time() - 1)
    peer.publish(late)
    wait_for(lambda: dispatcher.counters["calls_expired"] == 1, 30)
    peer.publish(_message("volume_get_all", {}, deadline=time.time() + 30))  # answered after it
    wait_for(lambda: peer.drain() or len(peer.replies) == 1, 30)

    assert peer.replies[0]["failure"] is None and peer.replies[0]["result"] == []
    assert db.rows(Volume) == []


def test_over_rpc_a_malformed_key_is_answered_with_invalid_input(served, db):
    peer, _ = served
    peer.publish(_message("volume_create", {"values": {"size": 1}}, idempotency_key="k" * (MAX_KEY + 1)))
    wait_for(lambda: peer.drain() or len(peer.replies) == 1, 30)

    assert '"class": "InvalidInput"' in peer.replies[0]["failure"]
    assert db.rows(Volume) == []
