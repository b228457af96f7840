"""The daemon with ``[database] slave_connection`` on a real PostgreSQL hot standby (a private
primary and standby, ``dbworker.tools.pg_replica``): opted-in reads served there, through the raw
wire and through ``dbworker.client``'s ``use_slave_for``; the standby down and back, as ``health``
and the metrics tell it; a daemon started with its standby down."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import ADMIN, Daemon, rpc, sync_schema, wait_for, wait_until_answering
from test_metrics_scrape import sample, scrape
from testenv import _unavailable

from dbworker.client import Client
from dbworker.tools.pg_replica import StreamingPair, available
from dbworker.tools.testing import free_port

pytestmark = [pytest.mark.postgresql, pytest.mark.rabbitmq, pytest.mark.slow]

ON_REPLICA = {**ADMIN, "use_slave": True}


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    reason = available()
    if reason:
        _unavailable(f"a private PostgreSQL primary and standby: {reason}")
    with StreamingPair(log_statements=True) as pair:
        sync_schema(pair.primary_url)
        pair.wait_caught_up()
        yield pair


@pytest.fixture
def replica_daemon(tmp_path: Path, rabbit_url: str, pair: StreamingPair) -> Iterator[Daemon]:
    """A daemon (not started) on the pair: the primary as ``connection``, the standby as
    ``slave_connection``, its metrics on a free port (``worker.metrics_port``)."""
    port = free_port()
    worker = Daemon(
        tmp_path,
        rabbit_url,
        pair.primary_url,
        database__slave_connection=pair.standby_url,
        dbworker__metrics_port=port,
        dbworker__replica_check_interval=0.2,
    )
    worker.metrics_port = port  # type: ignore[attr-defined]
    yield worker
    worker.kill()
    with contextlib.suppress(RuntimeError):  # it was running
        pair.start_standby()
    pair.wait_caught_up()


def replica_health(client) -> dict:
    return client.call({}, "health")["replica"]


def test_opted_in_reads_run_on_the_standby_and_fall_back_while_it_is_down(pair, replica_daemon, transport):
    worker = replica_daemon.start()
    client = rpc(transport, worker.topic)
    wait_until_answering(worker, client)
    wait_for(lambda: replica_health(client)["state"] == "ok", 15)  # measured (two checks)
    volume_id = client.call(ADMIN, "volume_create", values={"id": str(uuid.uuid4()), "size": 1})["id"]
    pair.wait_caught_up()

    assert client.call(ON_REPLICA, "volume_get", volume_id=volume_id)["id"] == volume_id
    assert volume_id in pair.standby_log()
    assert replica_health(client)["state"] == "ok"
    wait_for(lambda: sample(scrape(worker.metrics_port), "dbworker_replica_usable") == 1, 15)  # sampled 1/s
    samples = scrape(worker.metrics_port)
    assert sample(samples, "dbworker_replica_calls_total") == 1
    assert 0 <= sample(samples, "dbworker_replica_lag_seconds") < 10

    pair.stop_standby()
    wait_for(lambda: replica_health(client)["state"] == "down", 15)
    assert client.call(ON_REPLICA, "volume_get", volume_id=volume_id)["id"] == volume_id
    wait_for(lambda: sample(scrape(worker.metrics_port), "dbworker_replica_usable") == 0, 15)
    samples = scrape(worker.metrics_port)
    assert sample(samples, "dbworker_replica_fallbacks_total", reason="down") == 1
    assert sample(samples, "dbworker_replica_lag_seconds") == math.inf
    assert "Read replica down" in worker.log

    pair.start_standby()
    wait_for(lambda: replica_health(client)["state"] == "ok", 15)
    assert client.call(ON_REPLICA, "volume_get", volume_id=volume_id)["id"] == volume_id
    assert sample(scrape(worker.metrics_port), "dbworker_replica_calls_total") == 2


def test_the_client_sends_the_functions_of_use_slave_for_to_the_standby(pair, replica_daemon, transport):
    worker = replica_daemon.start()
    wait_until_answering(worker, rpc(transport, worker.topic))
    wait_for(lambda: replica_health(rpc(transport, worker.topic))["state"] == "ok", 15)
    client = Client(transport, topic=worker.topic, timeout=20, use_slave_for=["volume_get_all_by_project"])
    project = f"p-{uuid.uuid4().hex[:8]}"
    volume = client.volume_create(ADMIN, {"project_id": project, "size": 1})
    pair.wait_caught_up()

    assert [v["id"] for v in client.volume_get_all_by_project(ADMIN, project)] == [volume["id"]]
    assert client.volume_get(ADMIN, volume["id"])["id"] == volume["id"]
    log = pair.standby_log()
    assert project in log  # the listing, named in use_slave_for, ran on the standby
    assert volume["id"] not in log  # volume_get, not named, ran on the primary
    with pytest.raises(ValueError, match="volume_create writes"):
        Client(transport, topic=worker.topic, use_slave_for=["volume_create"])


def test_a_daemon_starts_with_its_standby_down_and_reads_on_the_primary(pair, replica_daemon, transport):
    pair.stop_standby()
    worker = replica_daemon.start()
    client = rpc(transport, worker.topic)
    wait_until_answering(worker, client)
    assert "is down: reads that opt in run on the primary" in worker.log
    volume_id = client.call(ADMIN, "volume_create", values={"size": 1})["id"]
    assert client.call(ON_REPLICA, "volume_get", volume_id=volume_id)["id"] == volume_id
    assert replica_health(client) == {"state": "down", "lag_seconds": None}
