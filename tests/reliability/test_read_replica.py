"""Read calls on a real PostgreSQL streaming replica (a private primary and hot standby,
``dbworker.tools.pg_replica``): which calls run there (the standby's own statement log says),
which never do, and what happens when it lags or goes down.

The rule (README, "Read replicas"): a read runs on the replica only when its caller opted in
(context ``use_slave``) and the replica is within ``replica_max_lag``; every write, and every read
that did not opt in, runs on the primary, so a caller never misses its own write unless it asked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from replicas import ADMIN, ON_REPLICA, REGISTRY, local_api, new_volume, replica_of, wait_for_state
from samples import SAMPLES, seed
from testenv import _unavailable

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.core.replica import Database, Replica, ReplicaState
from dbworker.schema import upgrade
from dbworker.session import make_engine, make_sessionmaker
from dbworker.tools.pg_replica import StreamingPair, available

pytestmark = pytest.mark.postgresql

READS = [name for name in SAMPLES if not REGISTRY[name].writes]


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    reason = available()
    if reason:
        _unavailable(f"a private PostgreSQL primary and standby: {reason}")
    with StreamingPair(log_statements=True) as pair:
        primary = make_engine(pair.primary_url)
        upgrade(primary)
        seed(primary)
        primary.dispose()
        pair.wait_caught_up()
        yield pair


@pytest.fixture(scope="module")
def engines(pair: StreamingPair) -> Iterator[tuple[Any, Any]]:
    primary, standby = make_engine(pair.primary_url), make_engine(pair.standby_url)
    yield primary, standby
    primary.dispose()
    standby.dispose()


@pytest.fixture
def make_api(pair: StreamingPair, engines: tuple[Any, Any]) -> Iterator[Callable[..., LocalAPI]]:
    """A factory: ``make_api(max_lag)`` is an in-process API whose dispatcher has the standby as
    its read replica (checked once); the standby is running and caught up again afterwards."""

    def make(max_lag: float = 30.0) -> LocalAPI:
        return local_api(*engines, max_lag)

    yield make
    try:
        pair.resume_replay()
    except psycopg.OperationalError:  # a test stopped it
        pair.start_standby()
    pair.wait_caught_up()


def test_a_read_that_opts_in_runs_on_the_standby_and_one_that_does_not_on_the_primary(pair, make_api):
    api = make_api()
    opted, plain = new_volume(api), new_volume(api)
    pair.wait_caught_up()

    assert api.volume_get(ON_REPLICA, opted)["id"] == opted
    assert api.volume_get(ADMIN, plain)["id"] == plain

    log = pair.standby_log()
    assert opted in log  # the standby ran the opted-in read (log_statement = all)
    assert plain not in log  # the other read, and both creates, ran on the primary
    assert api.dispatcher.counters["replica_calls"] == 1


def test_a_write_that_opts_in_still_runs_on_the_primary(pair, make_api):
    api = make_api()
    volume_id = str(uuid.uuid4())
    created = api.volume_create(ON_REPLICA, {"id": volume_id, "project_id": "p1", "size": 1})
    assert created["id"] == volume_id  # a standby would have refused the INSERT
    assert api.dispatcher.counters["replica_calls"] == 0


@pytest.mark.parametrize("name", READS)
def test_every_read_function_answers_on_the_standby_as_on_the_primary(pair, make_api, name):
    api = make_api()
    assert api.call(ON_REPLICA, name, **SAMPLES[name]) == api.call(ADMIN, name, **SAMPLES[name])
    assert api.dispatcher.counters["replica_calls"] == 1


def test_an_opted_in_caller_may_miss_its_own_write_within_the_bound_and_others_never(pair, make_api):
    api = make_api(max_lag=30)
    pair.pause_replay()
    volume_id = new_volume(api)
    assert replica_of(api).check() is ReplicaState.OK  # behind, but within 30 s

    with pytest.raises(exception.VolumeNotFound):  # what the caller accepted by opting in
        api.volume_get(ON_REPLICA, volume_id)
    assert api.volume_get(ADMIN, volume_id)["id"] == volume_id  # not opted in: the primary
    pair.resume_replay()
    pair.wait_caught_up()
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id


def test_a_standby_behind_the_bound_sends_opted_in_reads_to_the_primary(pair, make_api):
    api = make_api(max_lag=0.5)
    replica = replica_of(api)
    pair.pause_replay()
    volume_id = new_volume(api)
    wait_for_state(replica, ReplicaState.LAGGING)  # once the bound passes 0.5 s

    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert volume_id not in pair.standby_log()
    assert api.dispatcher.counters["replica_fallbacks_lagging"] == 1
    health = api.health()
    assert health["status"] == "ok"
    assert health["replica"]["state"] == "lagging" and health["replica"]["lag_seconds"] > 0.5

    pair.resume_replay()
    wait_for_state(replica, ReplicaState.OK)
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert api.dispatcher.counters["replica_calls"] == 1


def test_a_standby_down_sends_reads_to_the_primary_until_it_is_back(pair, make_api):
    api = make_api()
    replica = replica_of(api)
    volume_id = new_volume(api)
    pair.wait_caught_up()
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id  # a pooled standby connection
    pair.stop_standby()

    # The pooled connection is dead: the read fails there, runs on the primary, marks it down.
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert replica.state is ReplicaState.DOWN
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id  # not tried there again
    assert api.dispatcher.counters["replica_fallbacks_down"] == 2
    health = api.health()
    assert health["status"] == "ok" and health["replica"] == {"state": "down", "lag_seconds": None}

    pair.start_standby()
    pair.wait_caught_up()
    wait_for_state(replica, ReplicaState.OK)
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert api.dispatcher.counters["replica_calls"] == 2


def test_a_primary_named_as_the_replica_is_down_not_a_standby(pair, engines):
    primary, _standby = engines
    replica = Replica(Database(primary, make_sessionmaker(primary)), primary, max_lag=30)
    assert replica.check() is ReplicaState.DOWN
    assert replica.lag() is None and not replica.usable()


@pytest.mark.parametrize(
    ("primary_url", "replica_url", "refused"),
    [
        ("sqlite://", "sqlite://", "sqlite has no replicas"),
        (
            "postgresql+psycopg://u@h/db",
            "postgresql+psycopg2://u@h/db",
            "replica's URL is postgresql+psycopg2://",
        ),
    ],
)
def test_a_replica_of_another_driver_or_of_sqlite_is_refused(primary_url, replica_url, refused):
    primary, standby = make_engine(primary_url), make_engine(replica_url)
    with pytest.raises(ValueError, match=re.escape(refused)):
        Replica(Database(standby, make_sessionmaker(standby)), primary, max_lag=1)
