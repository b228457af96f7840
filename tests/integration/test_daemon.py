"""The ``dbworker`` daemon as operators run it: a real process tree against the local RabbitMQ and a
private PostgreSQL database, called by a plain oslo.messaging client (not ``dbworker.client``).

Slow calls come from a row lock the test holds on the ``services`` row that ``service_update``
changes: the call runs (and waits in PostgreSQL) until the test commits.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import oslo_messaging
import pytest
import sqlalchemy as sa
from daemons import ADMIN, broker_queue, on_broker, plain_transport, rpc, wait_for, wait_until_answering

from dbworker import exception
from dbworker.models import RpcCall, utcnow

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgresql, pytest.mark.slow, pytest.mark.timeout(120)]


@contextmanager
def locked_service(database_url: str, client: oslo_messaging.RPCClient) -> Iterator[tuple[int, Callable]]:
    """Create a service and hold a row lock on it; yields ``(service_id, waiting)``, where
    ``waiting()`` counts the database sessions blocked on the lock. Leaving releases the lock."""
    service = client.call(ADMIN, "service_create", values={"host": "h", "binary": "b", "topic": "t"})
    engine = sa.create_engine(database_url)
    with engine.connect() as watcher, engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM services WHERE id = :id FOR UPDATE"), {"id": service["id"]})
        watcher.execution_options(isolation_level="AUTOCOMMIT")

        def waiting() -> int:
            query = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return watcher.execute(sa.text(query)).scalar()

        try:
            yield service["id"], waiting
        finally:
            holder.commit()
    engine.dispose()


def updates(
    client: oslo_messaging.RPCClient, service_id: int, counts: range, pool: ThreadPoolExecutor
) -> list[Future]:
    """Send one ``service_update`` per value of ``counts`` (as ``report_count``) without waiting."""
    values = [{"report_count": n} for n in counts]
    return [
        pool.submit(client.call, ADMIN, "service_update", service_id=service_id, values=v) for v in values
    ]


def test_two_workers_answer_a_plain_oslo_messaging_client_with_json_and_typed_errors(
    daemon, transport, tmp_path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        worker = daemon(dbworker__workers=2, env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        client = rpc(transport, worker.topic)
        wait_until_answering(worker, client)
        systemd.settimeout(5)
        assert systemd.recv(64) == b"READY=1"
        systemd.settimeout(0.5)
        with pytest.raises(TimeoutError):
            systemd.recv(64)  # once, not once per worker
    assert len(worker.workers()) == 2

    created = client.call(
        {**ADMIN, "request_id": "req-daemon-roundtrip"},
        "service_create",
        values={"host": "h1", "binary": "cinder-volume", "topic": "volume"},
    )
    assert client.call(ADMIN, "service_get", service_id=created["id"]) == created
    assert created["host"] == "h1" and isinstance(created["created_at"], str)
    with pytest.raises(exception.ServiceNotFound) as raised:
        client.call(ADMIN, "service_get", service_id=created["id"] + 1000)
    assert raised.value.kwargs["service_id"] == created["id"] + 1000
    ping = client.prepare(namespace="baseapi").call({}, "ping", arg="x")
    assert ping == {"service": "dbworker", "arg": "x"}

    worker.wait_for_log("] service_create ")
    line = next(x for x in worker.log.splitlines() if "] service_create " in x)
    # oslo.log's context prefix names the request; the message does not repeat it.
    assert re.search(r"\[None req-daemon-roundtrip [^\]]*\] service_create [0-9.]+ms ok$", line), line
    assert line.count("req-daemon-roundtrip") == 1
    assert "guest:***@" in worker.log and "guest:guest@" not in worker.log


def _gone(pid: int) -> bool:
    """True once process ``pid`` no longer runs (exited, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or while, /proc was read
        return True


def test_sigterm_answers_running_calls_leaves_the_backlog_on_the_broker_and_exits(
    daemon, transport, database_url
) -> None:
    # Given a worker of two threads running two slow calls, with two more calls queued
    worker = daemon(executor_thread_pool_size=2)
    client = rpc(transport, worker.topic, timeout=80)  # the backlog outlives the drain
    wait_until_answering(worker, client)
    with ThreadPoolExecutor(4) as pool:
        with locked_service(database_url, client) as (service_id, waiting):
            running = updates(client, service_id, range(1, 3), pool)
            wait_for(lambda: waiting() == 2)
            backlog = updates(client, service_id, range(3, 5), pool)
            wait_for(lambda: on_broker(worker.topic) == 2, timeout=60)
            # When it gets SIGTERM
            worker.signal(signal.SIGTERM)
            worker.wait_for_log("no longer takes calls")
            # Then it stops consuming at once and gives back what the broker had pushed to it
            queue = broker_queue(worker.topic)
            assert (queue["consumers"], queue["messages_ready"], queue["messages_unacknowledged"]) == (
                0,
                2,
                0,
            )
            assert waiting() == 2 and not any(f.done() for f in running + backlog)
        # and answers the running calls, then exits
        assert sorted(f.result(timeout=20)["report_count"] for f in running) == [1, 2]
        assert worker.wait(timeout=25) == 0
        assert "Worker" in worker.log and "stopped" in worker.log
        # and the next worker on the topic answers the backlog: no accepted call was dropped
        assert not any(f.done() for f in backlog)
        daemon(dbworker__topic=worker.topic)
        assert sorted(f.result(timeout=40)["report_count"] for f in backlog) == [3, 4]


def test_sigkill_of_one_worker_loses_only_its_running_call_and_the_survivor_answers_the_rest(
    daemon, transport, database_url
) -> None:
    # Given two workers of one thread each
    worker = daemon(dbworker__workers=2, executor_thread_pool_size=1)
    # requests expire on the broker after the call timeout: keep it above the waits below
    client = rpc(transport, worker.topic, timeout=30)
    wait_until_answering(worker, client)
    victim = worker.workers()[0]
    with ThreadPoolExecutor(8) as pool:
        with locked_service(database_url, client) as (service_id, waiting):
            # When six slow calls are sent: each worker runs one, the other four stay the broker's
            calls = updates(client, service_id, range(1, 7), pool)
            wait_for(lambda: waiting() == 2)
            wait_for(lambda: on_broker(worker.topic) == 4, timeout=25)
            # and one worker dies while both run one
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: _gone(victim))
        outcomes = []
        for future in calls:
            try:
                outcomes.append(future.result(timeout=40)["report_count"])
            except oslo_messaging.MessagingTimeout:
                outcomes.append(None)
    # Then exactly the call the dead worker was running times out (at-most-once), and every other
    # one, including those the broker had pushed to the dead worker, is answered by the others.
    assert outcomes.count(None) == 1, outcomes
    assert on_broker(worker.topic) == 0


def test_sighup_reloads_the_configuration_without_dropping_calls(daemon, transport, database_url) -> None:
    worker = daemon(executor_thread_pool_size=2)
    client = rpc(transport, worker.topic, timeout=60)
    wait_until_answering(worker, client)
    before = worker.workers()
    with ThreadPoolExecutor(4) as pool:
        with locked_service(database_url, client) as (service_id, waiting):
            running = updates(client, service_id, range(1, 3), pool)
            wait_for(lambda: waiting() == 2)
            worker.sections["DEFAULT"]["debug"] = True
            worker.write_conf(worker.sections)
            worker.signal(signal.SIGHUP)
            worker.wait_for_log("Option DEFAULT.debug changed")
            queued = updates(client, service_id, range(3, 5), pool)  # sent while the worker is replaced
            # all four are running or on the broker (running counted first: a call moving from the
            # broker to a worker between the two reads is missed, never counted twice)
            wait_for(lambda: waiting() + on_broker(worker.topic) == 4, timeout=60)
        results = [f.result(timeout=70)["report_count"] for f in running + queued]
    assert sorted(results) == [1, 2, 3, 4]
    wait_for(lambda: len(worker.workers()) == 1 and worker.workers() != before)
    wait_until_answering(worker, client)
    assert " DEBUG " in worker.log


def test_a_worker_deletes_delivery_records_older_than_their_age_by_itself(daemon, transport, database_url):
    engine = sa.create_engine(database_url)
    old, young, now = uuid.uuid4().hex, uuid.uuid4().hex, utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(RpcCall),
            [
                {"unique_id": old, "method": "service_create", "created_at": now - timedelta(hours=2)},
                {"unique_id": young, "method": "service_create", "created_at": now},
            ],
        )

    def records() -> list[str]:
        with engine.connect() as conn:
            query = sa.select(RpcCall.unique_id).where(RpcCall.unique_id.in_([old, young]))
            return conn.execute(query).scalars().all()

    worker = daemon(dbworker__delivery_record_trim_interval=1)
    wait_until_answering(worker, rpc(transport, worker.topic))
    try:
        wait_for(lambda: records() == [young])
        worker.wait_for_log("Trimmed")
    finally:
        engine.dispose()


def test_two_hosts_and_several_processes_serve_one_topic(daemon, transport, database_url) -> None:
    # Given host a with two worker processes and host b with one, all of one thread, on one topic
    first = daemon(host="dbworker-a", dbworker__workers=2, executor_thread_pool_size=1)
    second = daemon(host="dbworker-b", dbworker__topic=first.topic, executor_thread_pool_size=1)
    client = rpc(transport, first.topic, timeout=60)
    wait_until_answering(first, client)
    wait_until_answering(second, client)
    # Then each host also answers on its own server queue
    assert client.prepare(server="dbworker-a").call({}, "health")["host"] == "dbworker-a"
    assert client.prepare(server="dbworker-b").call({}, "health")["host"] == "dbworker-b"
    with ThreadPoolExecutor(4) as pool:
        with locked_service(database_url, client) as (service_id, waiting):
            # When four slow calls are sent to the topic
            calls = updates(client, service_id, range(1, 5), pool)
            # Then the three processes run one each (one thread each), and the fourth waits on
            # the broker, not in a worker
            wait_for(lambda: waiting() == 3)
            wait_for(lambda: on_broker(first.topic) == 1, timeout=60)
        assert sorted(f.result(timeout=30)["report_count"] for f in calls) == [1, 2, 3, 4]


QUORUM_EXCHANGE = "dbworker-quorum-tests"  # durable (quorum queues): clients must declare it alike


@pytest.fixture
def quorum_transport(rabbit_url: str) -> Iterator[oslo_messaging.Transport]:
    transport = plain_transport(rabbit_url, rabbit_quorum_queue=True)
    yield transport
    transport.cleanup()


def test_a_daemon_on_quorum_queues_serves_and_keeps_its_backlog_on_the_broker(
    daemon, quorum_transport, rabbit_url, database_url
) -> None:
    worker = daemon(
        host="dbworker-q",
        control_exchange=QUORUM_EXCHANGE,
        oslo_messaging_rabbit__rabbit_quorum_queue="true",
        executor_thread_pool_size=1,
    )
    target = oslo_messaging.Target(exchange=QUORUM_EXCHANGE, topic=worker.topic, version="1.0")
    client = oslo_messaging.get_rpc_client(quorum_transport, target, timeout=60)
    try:
        wait_until_answering(worker, client)
        assert broker_queue(worker.topic)["type"] == "quorum"
        with ThreadPoolExecutor(3) as pool:
            with locked_service(database_url, client) as (service_id, waiting):
                calls = updates(client, service_id, range(1, 4), pool)
                wait_for(lambda: waiting() == 1)
                wait_for(lambda: on_broker(worker.topic) == 2, timeout=60)
            assert sorted(f.result(timeout=30)["report_count"] for f in calls) == [1, 2, 3]
    finally:
        worker.kill()  # deletes the (durable) quorum queues too


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"dbworker__workers": "zero"}, "Invalid configuration", id="bad-value"),
        pytest.param({"database__connection": "not a url"}, "Invalid configuration", id="bad-database-url"),
        pytest.param(
            {"database__connection": f"postgresql+psycopg2://u:secret@127.0.0.1:{_unused_port()}/x"},
            "is unreachable",
            id="database-down",
        ),
        pytest.param(
            {
                "transport_url": f"rabbit://guest:secret@127.0.0.1:{_unused_port()}/",
                "dbworker__broker_connect_timeout": 2,
            },
            "broker is unreachable after 2s",
            id="broker-down",
        ),
    ],
)
def test_the_daemon_refuses_to_start_with_a_clear_message(daemon, options, message) -> None:
    worker = daemon(**options)
    assert worker.wait(timeout=30) == 1
    assert message in worker.log
    assert "secret" not in worker.log
    assert "consuming" not in worker.log


def test_the_daemon_refuses_a_database_behind_the_migrations(daemon, private_database_url) -> None:
    worker = daemon(database__connection=private_database_url("postgresql"))
    assert worker.wait(timeout=30) == 1
    assert "dbworker-manage --config-file" in worker.log and "db sync" in worker.log
