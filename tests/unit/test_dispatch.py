"""The dispatcher: one transaction per call, typed errors, bounded re-runs, strict replies."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import sqlalchemy as sa
from oslo_db import exception as db_exc

from dbworker import exception
from dbworker.core.context import RequestContext, admin_context
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Auth, Registry, handler
from dbworker.core.settings import DEFAULT_SETTINGS, Settings
from dbworker.models import Service
from dbworker.session import make_sessionmaker


def _registry(*functions):
    module = types.ModuleType("fake_handlers")
    for fn in functions:
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    return Registry.from_modules([module])


@handler(auth=Auth.ADMIN, writes=True)
def write_then_fail(tx, ctx, host: str):
    tx.add(Service(host=host))
    tx.flush()
    raise exception.NotFound()


@handler(auth=Auth.ADMIN, writes=True)
def write_then_over_quota(tx, ctx, host: str):
    tx.add(Service(host=host))
    tx.flush()
    raise exception.OverQuota(overs=["volumes"], quotas={}, usages={})


@handler(auth=Auth.ADMIN)
def reply_with(tx, ctx, kind: str):
    return {"set": {1}, "object": object()}[kind]


@handler(auth=Auth.ADMIN, writes=True, retry_on_deadlock=True)
def deadlock_twice(tx, ctx, host: str):
    tx.add(Service(host=host))
    tx.flush()
    deadlock_twice.calls += 1
    if deadlock_twice.calls <= 2:
        raise db_exc.DBDeadlock(Exception("Deadlock found when trying to get lock"))
    return "done"


@handler(auth=Auth.ADMIN, writes=True)
def duplicate_entry(tx, ctx):
    raise db_exc.DBDuplicateEntry(columns=["INSERT INTO secret VALUES ('password')"])


@handler(auth=Auth.CONTEXT, project_arg="project_id")
def project_read(tx, ctx, project_id: str, limit: int | None = None):
    return [project_id, limit]


@handler(auth=Auth.ADMIN)
def topic(tx, ctx, *, settings: Settings) -> str:
    return settings.volume_topic


@pytest.fixture
def dispatcher(database):
    registry = _registry(
        write_then_fail,
        write_then_over_quota,
        reply_with,
        deadlock_twice,
        duplicate_entry,
        project_read,
        topic,
    )
    yield Dispatcher(registry, make_sessionmaker(database.engine), retry_interval=0)
    database.wipe()


def _hosts(database):
    return [row.host for row in database.rows(Service)]


def test_an_error_rolls_back_everything_the_call_wrote(dispatcher, database):
    with pytest.raises(exception.NotFound):
        dispatcher.call("write_then_fail", admin_context(), {"host": "h"})
    assert _hosts(database) == []


def test_a_commit_first_error_keeps_the_writes_and_still_raises(dispatcher, database):
    with pytest.raises(exception.OverQuota):
        dispatcher.call("write_then_over_quota", admin_context(), {"host": "kept"})
    assert _hosts(database) == ["kept"]


@pytest.mark.parametrize("kind", ["set", "object"])
def test_a_reply_that_is_not_json_data_is_an_immediate_error(dispatcher, kind):
    with pytest.raises(TypeError):
        dispatcher.call("reply_with", admin_context(), {"kind": kind})


def test_a_deadlock_re_runs_the_whole_call_and_keeps_only_the_last_run(dispatcher, database):
    deadlock_twice.calls = 0
    assert dispatcher.call("deadlock_twice", admin_context(), {"host": "h"}) == "done"
    assert deadlock_twice.calls == 3
    assert _hosts(database) == ["h"]
    assert dispatcher.counters["retries"] == 2


def test_a_deadlock_that_persists_becomes_db_busy(database):
    deadlock_twice.calls = -100
    registry = _registry(deadlock_twice)
    dispatcher = Dispatcher(
        registry, make_sessionmaker(database.engine), max_deadlock_retries=2, retry_interval=0
    )
    with pytest.raises(exception.DBBusy) as caught:
        dispatcher.call("deadlock_twice", admin_context(), {"host": "h"})
    assert caught.value.kwargs["attempts"] == 3
    assert _hosts(database) == []
    database.wipe()


def test_a_duplicate_entry_is_typed_and_carries_no_sql(dispatcher):
    with pytest.raises(exception.Duplicate) as caught:
        dispatcher.call("duplicate_entry", admin_context(), {})
    assert "INSERT" not in str(caught.value) and "password" not in json.dumps(caught.value.kwargs)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({}, "project_id"),
        ({"project_id": "p1", "extra": 1}, "extra"),
        ({"project_id": 5}, "project_id"),
        ({"project_id": "p1", "limit": True}, "limit"),
        ({"project_id": "p1", "limit": "3"}, "limit"),
    ],
)
def test_bad_arguments_are_invalid_input_naming_the_argument(dispatcher, kwargs, culprit):
    with pytest.raises(exception.InvalidInput) as caught:
        dispatcher.call("project_read", admin_context(), kwargs)
    assert repr(culprit) in str(caught.value)


def test_declared_authorization_runs_before_the_handler(dispatcher, database):
    user = RequestContext(user_id="u", project_id="p1")
    with pytest.raises(exception.AdminRequired):
        dispatcher.call("write_then_fail", user, {"host": "h"})
    with pytest.raises(exception.NotAuthorized):
        dispatcher.call("project_read", RequestContext(), {"project_id": "p1"})
    with pytest.raises(exception.NotAuthorized):
        dispatcher.call("project_read", user, {"project_id": "p2"})
    assert dispatcher.call("project_read", user, {"project_id": "p1"}) == ["p1", None]


def test_health_reports_ok_with_a_database_and_degraded_without(dispatcher):
    assert dispatcher.health()["status"] == "ok"
    broken = Dispatcher(
        dispatcher.registry,
        make_sessionmaker(sa.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")),
    )
    assert broken.health() | {"version": None} == {
        "status": "degraded",
        "version": None,
        "host": "localhost",
        "database": "unreachable",
    }


def test_a_handler_gets_the_dispatchers_settings_and_folsoms_only_when_none_were_given(dispatcher):
    configured = Settings(**{**dataclasses.asdict(DEFAULT_SETTINGS), "volume_topic": "configured"})
    given = Dispatcher(dispatcher.registry, dispatcher.sessions, settings=configured)
    assert given.call("topic", admin_context(), {}) == "configured"
    assert dispatcher.call("topic", admin_context(), {}) == DEFAULT_SETTINGS.volume_topic
