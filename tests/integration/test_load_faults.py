"""The real daemon (2 worker processes) under load from 32 client threads, then under faults.

Each client thread has its own ``dbworker.client.Client`` and runs a mixed workload: reads, creates
with a caller-chosen id and metadata, updates of its own volumes, destroys racing in the project,
and quota_reserve followed by reservation_commit or reservation_rollback (``load_ledger.py``). The
clients keep a ledger of what the daemon acknowledged; afterwards the database must match it
exactly: no lost and no duplicated write, nothing half-written, ``in_use`` equal to the committed
deltas and nothing left ``reserved``.

Under a fault (broker connections closed, database connections killed, a worker SIGKILLed or
SIGTERMed) the clients retry as ``dbworker.client`` does: a call that timed out
(``MessagingTimeout``), or a write that lost its database connection while committing
(``DBUnavailable``), is sent again with its idempotency key, and the worker answers a key it has
kept with the recorded outcome instead of running the call again. So every call ends with one
known outcome (0 unknown), and no write runs twice, not even a request the broker delivers again
after the connection that acked it closed. The daemon must serve again within 60 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import oslo_messaging
import pytest
import sqlalchemy as sa
from daemons import Daemon, sync_schema, wait_for
from load_ledger import CALLS, run_load, settle_and_check
from testenv import service_url

from dbworker.client import Client
from dbworker.tools.testing import kill_database_sessions

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.timeout(300)]

POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql")
MYSQL = pytest.param("mysql", marks=pytest.mark.mysql, id="mysql")


@pytest.fixture(scope="module")
def database_url(request: pytest.FixtureRequest, private_database_url) -> str:
    """A private database of the kind the test is parametrized with (indirect), at the head."""
    url = private_database_url(request.param)
    sync_schema(url)
    return url


def start_daemon(daemon, transport) -> Daemon:
    """Start the daemon with 2 workers of 8 threads each and wait until it serves."""
    worker = daemon(dbworker__workers=2, executor_thread_pool_size=8)
    wait_serving(worker, transport, timeout=60)
    return worker


def wait_serving(worker: Daemon, transport, timeout: float, workers: int = 2) -> float:
    """Wait until the ``workers`` consume the topic and health answers with the database ok;
    return the seconds it took."""
    probe = Client(transport, topic=worker.topic, timeout=3)
    started = time.monotonic()
    while consumers(worker.topic) != workers or not _healthy(probe):
        assert worker.proc is not None and worker.proc.poll() is None, f"daemon exited:\n{worker.log[-3000:]}"
        assert time.monotonic() < started + timeout, f"not serving after {timeout}s:\n{worker.log[-3000:]}"
        time.sleep(0.5)
    return time.monotonic() - started


def _healthy(probe: Client) -> bool:
    try:
        return probe.health()["database"] == "ok"
    except oslo_messaging.MessagingTimeout:
        return False


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` on the local node and return its output."""
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def consumers(topic: str) -> int:
    """Return how many consumers the broker has on the workers' shared ``topic`` queue."""
    counts = dict(line.split("\t") for line in rabbitmqctl("list_queues", "name", "consumers").splitlines())
    return int(counts.get(topic, 0))


def close_broker_connections(worker: Daemon) -> None:
    """Make the broker close every connection of the daemon's workers, and no other, at once.

    oslo.messaging names each connection ``<argv0>:<pid>:<uuid>`` (``connection_name``). One
    ``rabbitmqctl eval`` calls what ``rabbitmqctl close_connection`` calls, for all of them: one
    CLI start instead of one per connection (seconds each on a busy machine)."""
    pids, victims = set(worker.workers()), {}
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        match = re.search(r'"connection_name","[^"]*:(\d+):[0-9a-f-]{36}"', line)
        if match and int(match.group(1)) in pids:
            victims[line.split("\t")[0]] = int(match.group(1))
    assert set(victims.values()) == pids, f"connections {victims} for workers {pids}"
    listed = ",".join(f'"{pid}"' for pid in victims)
    close = 'rabbit_networking:close_connection(rabbit_misc:string_to_pid(P), "dbworker fault test")'
    replies = rabbitmqctl("eval", f"[{close} || P <- [{listed}]].").strip()
    assert replies == "[" + ",".join(["ok"] * len(victims)) + "]", replies


def _kill_database_sessions(worker: Daemon, url: str, victim: int) -> None:
    assert kill_database_sessions(url, service_url(sa.make_url(url).get_backend_name())), (
        "no connection to kill"
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("database_url", [POSTGRESQL, MYSQL], indirect=True)
def test_two_workers_serve_32_clients_for_30s_and_the_database_matches_the_clients_ledger(
    daemon, transport, database_url
) -> None:
    worker = start_daemon(daemon, transport)
    ledger = run_load(worker, transport, seconds=30, timeout=60)
    print(f"load: {ledger.seconds:.1f}s, outcomes {dict(ledger.outcomes)}")
    assert ledger.seconds >= 30
    assert ledger.count(unknown=True) == 0, ledger.outcomes  # every call answered
    for name in CALLS:
        assert ledger.outcomes[name, "ok"] > 0, (name, ledger.outcomes)
    assert ledger.outcomes["quota_reserve", "OverQuota"] > 0, ledger.outcomes
    assert settle_and_check(ledger, worker, transport, database_url) == 0  # no fault, no redelivery


FAULTS = {
    "broker-closes-connections": lambda worker, url, victim: close_broker_connections(worker),
    "database-kills-connections": _kill_database_sessions,
    "worker-sigkill": lambda worker, url, victim: os.kill(victim, signal.SIGKILL),
    "worker-sigterm": lambda worker, url, victim: os.kill(victim, signal.SIGTERM),
}


@pytest.mark.parametrize(
    ("database_url", "fault"),
    [
        *[pytest.param("postgresql", f, marks=pytest.mark.postgresql, id=f"postgresql-{f}") for f in FAULTS],
        *[pytest.param("mysql", f, marks=pytest.mark.mysql, id=f"mysql-{f}") for f in FAULTS],
    ],
    indirect=["database_url"],
)
def test_after_a_fault_under_load_the_daemon_serves_again_and_no_write_is_lost_or_doubled(
    daemon, transport, database_url, fault
) -> None:
    worker = start_daemon(daemon, transport)
    victim = worker.workers()[0]
    ledger = run_load(
        worker, transport, 10, timeout=10, fault=lambda: FAULTS[fault](worker, database_url, victim)
    )
    if fault.startswith("worker-"):  # the master forks a new worker
        wait_for(lambda: len(worker.workers()) == 2 and victim not in worker.workers(), timeout=60)
        worker.wait_for_log("consuming topic", count=3)
    recovery = wait_serving(worker, transport, timeout=60)
    print(f"{fault}: {ledger.seconds:.1f}s, fault at {ledger.fault_at:.1f}s, serving {recovery:.1f}s after")
    print(f"outcomes {dict(ledger.outcomes)}")
    assert ledger.count(unknown=True) == 0, ledger.outcomes  # every call ended with one known outcome
    dropped = settle_and_check(ledger, worker, transport, database_url)  # no write ran twice
    print(f"deliveries not run again (redelivered, or a retry answered from its record): {dropped}")
