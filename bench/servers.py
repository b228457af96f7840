"""The servers a run starts: the dbworker daemon, the bare echo server, the bare oslo.messaging peer
and a Celery worker. Each is a :class:`bench.services.Process` stopped by its pid (group).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.services import ROOT, Process, Resources, python, unique, wait_until
from dbworker import client as dbclient
from dbworker.options import DEFAULT_THREADS
from dbworker.tools.testing import free_port

THREADS = DEFAULT_THREADS  # dbworker's executor_thread_pool_size; the echo server and the peers use it too


@dataclass
class Server:
    """A started server: its process, its topic/queue, the seconds to its first answered call and,
    for the daemon, the seconds from process start to milestones of its log."""

    process: Process
    topic: str
    first_answer_s: float
    milestones: dict[str, float] = field(default_factory=dict)


#: Log lines of the daemon's start: configured and checked (master), consuming (each worker).
MILESTONES = {
    "startup checks done (master logs 'Starting')": "Starting ",
    "a worker consuming": "consuming topic",
}


def daemon_config(
    res: Resources,
    name: str,
    transport_url: str,
    database_url: str,
    workers: int,
    metrics: bool = True,
    replica_url: str | None = None,
) -> Path:
    """Write a dbworker configuration for a private topic, with its metrics served on a free port
    (as shipped: on) or none, and ``replica_url`` as its read replica if given; return its path."""
    topic = unique("bench-dbworker")
    res.broker_queues(
        transport_url, [topic, f"{topic}.{socket.gethostname()}"]
    )  # the daemon's [DEFAULT] host
    return res.write_config(
        name,
        {
            "DEFAULT": {
                "transport_url": transport_url,
                "executor_thread_pool_size": THREADS,
                "graceful_shutdown_timeout": 20,
                "rpc_response_timeout": 30,
            },
            "dbworker": {
                "workers": workers,
                "topic": topic,
                "broker_connect_timeout": 10,
                "metrics_port": free_port() if metrics else 0,
            },
            "database": {"connection": database_url}
            | ({"slave_connection": replica_url} if replica_url else {}),
        },
    )


def topic_of(config: Path) -> str:
    """Return the ``[dbworker] topic`` of a configuration :func:`daemon_config` wrote."""
    return next(
        line.split("=", 1)[1].strip() for line in config.read_text().splitlines() if line.startswith("topic")
    )


def start_daemon(
    res: Resources,
    rpc_transport: Any,
    transport_url: str,
    database_url: str,
    workers: int,
    name: str,
    source: Path = ROOT,
    metrics: bool = True,
    replica_url: str | None = None,
) -> tuple[Server, dbclient.Client]:
    """Start ``python -m dbworker`` with ``workers`` processes (the ``dbworker`` package of
    ``source``: this checkout, or a reference tree); wait until a call is answered."""
    config = daemon_config(res, name, transport_url, database_url, workers, metrics, replica_url)
    topic = topic_of(config)
    process = res.spawn(name, python("-m", "dbworker", "--config-file", str(config)), source=source)
    probe = dbclient.Client(rpc_transport, topic=topic, timeout=0.5, retry=1)
    first = wait_until("dbworker health", lambda: probe.health(), process, timeout=60)
    _wait_for_log(process, "consuming topic", workers)
    server = Server(process, topic, first, _milestones(process))
    return server, dbclient.Client(rpc_transport, topic=topic, timeout=30)


def _milestones(process: Process) -> dict[str, float]:
    """Return the seconds from process start to the first log line of each :data:`MILESTONES`."""
    found = {}
    for line in process.log.read_text(errors="replace").splitlines():
        for name, text in MILESTONES.items():
            if name not in found and text in line:
                with contextlib.suppress(ValueError):
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                    found[name] = round(stamp - process.started_at, 2)
    return found


def start_echo(res: Resources, transport_url: str, ping: Callable[[str], Any]) -> Server:
    """Start the bare oslo.messaging echo server; ``ping(topic)`` makes one call to it."""
    topic = unique("bench-echo")
    res.broker_queues(transport_url, [topic, f"{topic}.bench-echo"])
    process = res.spawn("echo", python("-m", "bench.echo_server", transport_url, topic, str(THREADS)))
    first = wait_until("echo", lambda: ping(topic), process, timeout=60)
    return Server(process, topic, first)


def start_oslo_peer(
    res: Resources, transport_url: str, database_url: str, ping: Callable[[str], Any]
) -> Server:
    """Start the bare oslo.messaging server reading the database (:mod:`bench.oslo_peer`)."""
    topic = unique("bench-oslo-peer")
    res.broker_queues(transport_url, [topic, f"{topic}.bench-oslo-peer"])
    argv = python("-m", "bench.oslo_peer", transport_url, topic, str(THREADS), database_url)
    process = res.spawn("oslo-peer", argv)
    first = wait_until("oslo peer", lambda: ping(topic), process, timeout=60)
    return Server(process, topic, first)


def start_celery(
    res: Resources, broker_url: str, queue: str, database_url: str, ping: Callable[[], Any]
) -> Server:
    """Start a Celery worker (threads pool, THREADS threads) consuming ``queue``."""
    argv = python(
        "-m",
        "celery",
        "-A",
        "bench.celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(THREADS),
        "--queues",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    )
    env = {"BENCH_BROKER_URL": broker_url, "BENCH_CELERY_QUEUE": queue, "BENCH_DATABASE_URL": database_url}
    res.broker_queues(broker_url, [queue])
    process = res.spawn("celery", argv, env)
    first = wait_until("celery", ping, process, timeout=90)
    return Server(process, queue, first)


def celery_broker_url(transport_url: str) -> str:
    """Return oslo's ``rabbit://user:pass@host:port/`` as Celery's ``amqp://user:pass@host:port//``."""
    rest = transport_url.split("://", 1)[1]
    return "amqp://" + (rest if rest.endswith("//") else rest.rstrip("/") + "//")


def _wait_for_log(process: Process, text: str, count: int, timeout: float = 30) -> None:
    """Wait until ``text`` appears ``count`` times in the process's log (every worker consumes)."""

    def seen() -> None:
        if process.log.read_text(errors="replace").count(text) < count:
            raise LookupError(text)

    wait_until(f"{count} x {text!r}", seen, process, timeout)
