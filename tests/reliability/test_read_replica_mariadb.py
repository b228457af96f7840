"""Read calls on a real MariaDB replica (a private primary and a GTID replica,
``dbworker.tools.mariadb_replica``): an opted-in read runs there (the replica's own general log
says), one that did not opt in never does, and a replica whose replication or server is stopped is
down, its reads running on the primary, until it is back. The MariaDB lag is the replica's own
``Seconds_Behind_Master`` (NULL: down); the routing rule is the one of ``test_read_replica.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from replicas import ADMIN, ON_REPLICA, local_api, new_volume, replica_of, wait_for_state
from testenv import _unavailable

from dbworker.api import LocalAPI
from dbworker.core.replica import Database, NotAReplica, Replica, ReplicaState
from dbworker.schema import upgrade
from dbworker.session import make_engine, make_sessionmaker
from dbworker.tools.mariadb_replica import ReplicaPair, available

pytestmark = pytest.mark.mysql


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    reason = available()
    if reason:
        _unavailable(f"a private MariaDB primary and replica: {reason}")
    with ReplicaPair(general_log=True) as pair:
        primary = make_engine(pair.primary_url)
        upgrade(primary)
        primary.dispose()
        pair.wait_caught_up()
        yield pair


@pytest.fixture(scope="module")
def engines(pair: ReplicaPair) -> Iterator[tuple[Any, Any]]:
    primary, replica = make_engine(pair.primary_url), make_engine(pair.replica_url)
    yield primary, replica
    primary.dispose()
    replica.dispose()


@pytest.fixture
def make_api(pair: ReplicaPair, engines: tuple[Any, Any]) -> Iterator[Callable[..., LocalAPI]]:
    """A factory: ``make_api(max_lag)`` is an in-process API whose dispatcher has the replica as
    its read replica (checked once); the replica is running, replicating and caught up afterwards."""

    def make(max_lag: float = 30.0) -> LocalAPI:
        return local_api(*engines, max_lag)

    yield make
    if not pair.replica_running:  # a test stopped it
        pair.start_replica()
    pair.start_replication()  # a no-op (a warning) while it runs
    pair.wait_caught_up()


def test_a_read_that_opts_in_runs_on_the_replica_and_one_that_does_not_on_the_primary(pair, make_api):
    api = make_api()
    assert replica_of(api).state is ReplicaState.OK and replica_of(api).lag() < 5
    opted, plain = new_volume(api), new_volume(api)
    pair.wait_caught_up()

    assert api.volume_get(ON_REPLICA, opted)["id"] == opted
    assert api.volume_get(ADMIN, plain)["id"] == plain

    log = pair.replica_log()
    assert opted in log  # the replica ran the opted-in read (its general log)
    assert plain not in log  # the other read, and both creates (ROW events), ran on the primary
    assert api.dispatcher.counters["replica_calls"] == 1


def test_replication_stopped_is_down_and_its_reads_run_on_the_primary_until_it_restarts(pair, make_api):
    api = make_api()
    replica = replica_of(api)
    pair.stop_replication()
    assert replica.check() is ReplicaState.DOWN  # Seconds_Behind_Master is NULL
    assert replica.lag() is None and not replica.usable()

    volume_id = new_volume(api)  # not on the replica: an opted-in read there would miss it
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert volume_id not in pair.replica_log()
    assert api.dispatcher.counters["replica_fallbacks_down"] == 1
    assert api.health()["replica"] == {"state": "down", "lag_seconds": None}

    pair.start_replication()
    pair.wait_caught_up()
    wait_for_state(replica, ReplicaState.OK)
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert volume_id in pair.replica_log()
    assert api.dispatcher.counters["replica_calls"] == 1


def test_a_replica_server_down_sends_reads_to_the_primary_until_it_is_back(pair, make_api):
    api = make_api()
    replica = replica_of(api)
    volume_id = new_volume(api)
    pair.wait_caught_up()
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id  # a pooled replica connection
    pair.stop_replica()

    # The pooled connection is dead: the read fails there, runs on the primary, marks it down.
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert replica.state is ReplicaState.DOWN
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id  # not tried there again
    assert api.dispatcher.counters["replica_fallbacks_down"] == 2
    assert replica.check() is ReplicaState.DOWN  # unreachable

    pair.start_replica()
    pair.wait_caught_up()
    wait_for_state(replica, ReplicaState.OK)
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert api.dispatcher.counters["replica_calls"] == 2


def test_a_primary_named_as_the_replica_is_down_not_a_replica(pair, engines):
    primary, _replica = engines
    replica = Replica(Database(primary, make_sessionmaker(primary)), primary, max_lag=30)
    with pytest.raises(NotAReplica, match="SHOW REPLICA STATUS is empty"):
        replica._mysql_lag()
    assert replica.check() is ReplicaState.DOWN
    assert replica.lag() is None and not replica.usable()


def test_a_replica_behind_the_bound_sends_opted_in_reads_to_the_primary(pair, make_api):
    api = make_api(max_lag=0.5)
    replica = replica_of(api)
    # A transaction on the replica locks the volumes (and the gaps between): the replication
    # thread's next insert waits for it, and Seconds_Behind_Master grows.
    blocker = pymysql.connect(host="127.0.0.1", port=pair.replica_port, user="root", database="test")
    try:
        with blocker.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT id FROM volumes FOR UPDATE")
        volume_id = new_volume(api)
        wait_for_state(replica, ReplicaState.LAGGING)  # at 1 s: Seconds_Behind_Master is whole

        assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
        assert volume_id not in pair.replica_log()
        assert api.dispatcher.counters["replica_fallbacks_lagging"] == 1
        assert api.health()["replica"]["state"] == "lagging"
    finally:
        blocker.rollback()
        blocker.close()
    pair.wait_caught_up()
    wait_for_state(replica, ReplicaState.OK)
    assert api.volume_get(ON_REPLICA, volume_id)["id"] == volume_id
    assert api.dispatcher.counters["replica_calls"] == 1


def test_a_replica_user_without_the_monitor_privilege_is_down_and_says_what_to_grant(pair, engines):
    primary, _replica = engines
    root = pymysql.connect(host="127.0.0.1", port=pair.replica_port, user="root")
    with root, root.cursor() as cursor:  # read_only lets a SUPER user write the grant tables
        cursor.execute("CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1'")
        cursor.execute("GRANT SELECT ON test.* TO 'reader'@'127.0.0.1'")
    engine = make_engine(pair.replica_url.replace("root@", "reader@"))
    replica = Replica(Database(engine, make_sessionmaker(engine)), primary, max_lag=30)
    try:
        with pytest.raises(NotAReplica, match="denied: grant SLAVE MONITOR"):
            replica._mysql_lag()
        assert replica.check() is ReplicaState.DOWN
    finally:
        engine.dispose()
