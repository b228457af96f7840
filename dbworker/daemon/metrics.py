"""Prometheus metrics of a daemon: one scrape target per host, served by the master process.

With ``[dbworker] metrics_port`` set (0: none), the master process (before it forks the workers)
makes a private directory for prometheus_client's multiprocess mode and serves
``http://<metrics_host>:<metrics_port>/metrics`` from it: each worker process writes its values
to its own files there, and a scrape sums them (counters, histograms, ``livesum`` gauges) or
shows each live worker by its ``pid`` label (``liveall`` gauges). A worker replaced after SIGHUP or
a crash keeps counting in the totals; its gauges leave the scrape with it.

Per function (label ``function``): ``dbworker_calls_total`` (label ``outcome``: ``ok`` or the
error's class name: a typed error, ``DeadlinePassed``, ``Redelivered``, ``KeyTaken``...),
``dbworker_call_duration_seconds`` (histogram), ``dbworker_calls_in_flight``. Per worker process
(label ``pid``), sampled every :data:`SAMPLE_SECONDS`: ``dbworker_executor_threads`` (label
``state``: ``busy``, a call accepted and not yet answered, or ``free``),
``dbworker_deliveries_held`` (received, unacked, waiting for a thread),
``dbworker_db_pool_connections`` (label ``state``: ``checked_out``, ``overflow``). Counted:
``dbworker_redeliveries_dropped_total``, ``dbworker_calls_expired_total``,
``dbworker_calls_answered_from_record_total``, ``dbworker_db_retries_total``. With a read replica:
``dbworker_replica_calls_total`` (reads it served), ``dbworker_replica_fallbacks_total`` (label
``reason``: ``lagging``, ``down``, ``failed``: opted-in reads run on the primary),
``dbworker_replica_lag_seconds`` (the largest bound among the live workers; ``+Inf`` when down) and
``dbworker_replica_usable`` (0 when any live worker sends opted-in reads to the primary).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oslo_config import cfg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.metrics_core import Metric
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from dbworker.core.replica import Replica

LOG = logging.getLogger(__name__)

#: Seconds between two readings of a worker's threads, held deliveries and pool.
SAMPLE_SECONDS = 1.0
#: Call latency buckets, in seconds: a cached read takes about a millisecond, a call waiting on
#: a row lock or a slow database up to seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The dispatcher's counted events that are metrics of their own (``Dispatcher.counters`` keys).
EVENTS = {
    "redeliveries_dropped": (
        "dbworker_redeliveries_dropped",
        "Redelivered write calls not run again (no reply).",
    ),
    "calls_expired": ("dbworker_calls_expired", "Calls taken after their deadline: not run, no reply."),
    "calls_answered_from_record": (
        "dbworker_calls_answered_from_record",
        "Write calls whose idempotency key was kept: answered with the recorded outcome, not run again.",
    ),
    "retries": ("dbworker_db_retries", "Calls re-run after a deadlock or a lost database connection."),
    "replica_calls": ("dbworker_replica_calls", "Read calls served by the read replica."),
}
#: The dispatcher's counted reads that opted in to the replica and ran on the primary, by reason.
FALLBACKS = {
    "replica_fallbacks_lagging": "lagging",
    "replica_fallbacks_down": "down",
    "replica_fallbacks_failed": "failed",
}


class MetricsError(Exception):
    """The metrics endpoint cannot be served (its address is taken or invalid)."""


def serve(conf: cfg.ConfigOpts) -> Path | None:
    """In the master process, before the fork: serve the host's metrics if ``metrics_port`` is set.

    Returns the multiprocess directory (None when metrics are off). The directory is removed
    when the master exits.

    Raises:
        MetricsError: the address cannot be bound.
    """
    port, host = conf.dbworker.metrics_port, conf.dbworker.metrics_host
    if not port:
        return None
    path = Path(tempfile.mkdtemp(prefix="dbworker-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    use_multiprocess_values()
    registry = CollectorRegistry()
    registry.register(LiveWorkersCollector(path))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        shutil.rmtree(path, ignore_errors=True)
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {err.strerror or err}") from None
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))
    LOG.info("Serving metrics on http://%s:%d/metrics (worker files in %s)", host, port, path)
    return path


#: This process's pid, kept by a fork hook: prometheus_client asks for it on every value it
#: writes, and ``os.getpid()`` is a system call (the real daemon's profile under load put 0.02 ms
#: per call in that check alone).
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def use_multiprocess_values() -> None:
    """Have prometheus_client keep values in the files of ``PROMETHEUS_MULTIPROC_DIR`` (set
    first), one set per process, the process told by :data:`_PID`."""
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _PID[0])


class LiveWorkersCollector:
    """prometheus_client's multiprocess collector over ``path``, which first drops the live gauges
    of worker processes that have ended (a worker replaced after SIGHUP or a crash)."""

    _FILE = re.compile(r"gauge_live\w*_(\d+)\.db$")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._collector = multiprocess.MultiProcessCollector(None, str(path))

    def collect(self) -> Iterator[Metric]:
        for file in self.path.iterdir():
            match = self._FILE.match(file.name)
            if match and not _alive(int(match.group(1))):
                multiprocess.mark_process_dead(int(match.group(1)), str(self.path))
        yield from self._collector.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


class WorkerMetrics:
    """One worker process's metrics: the dispatcher's :class:`~dbworker.core.hooks.CallObserver`,
    and a thread sampling the server's threads and held deliveries and the engine's pool.

    ``registry``: where the metrics are registered (tests read it); in the daemon the values are
    the multiprocess files :func:`serve` set up, whatever the registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self._calls = Counter(
            "dbworker_calls",
            "Calls ended, by function and outcome.",
            ["function", "outcome"],
            registry=registry,
        )
        self._duration = Histogram(
            "dbworker_call_duration_seconds",
            "Seconds from a thread taking a call to its outcome, by function.",
            ["function"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "dbworker_calls_in_flight",
            "Calls running now, by function.",
            ["function"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._events = {key: Counter(name, text, registry=registry) for key, (name, text) in EVENTS.items()}
        fallbacks = Counter(
            "dbworker_replica_fallbacks",
            "Reads that opted in to the read replica and ran on the primary, by reason: lagging "
            "(beyond replica_max_lag, or not yet measured), down, or failed (a database error there).",
            ["reason"],
            registry=registry,
        )
        self._events.update({key: fallbacks.labels(reason) for key, reason in FALLBACKS.items()})
        self._replica_lag = Gauge(
            "dbworker_replica_lag_seconds",
            "The most any worker bounds the read replica's lag at (+Inf: down or not yet measured).",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._replica_usable = Gauge(
            "dbworker_replica_usable",
            "1 when every worker sends opted-in reads to the read replica, 0 when one sends them to "
            "the primary.",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self._threads = Gauge(
            "dbworker_executor_threads",
            "A worker's executor threads: busy (a call accepted, not yet answered) or free.",
            ["state"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self._held = Gauge(
            "dbworker_deliveries_held",
            "A worker's deliveries received and unacked, waiting for a free thread.",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self._pool = Gauge(
            "dbworker_db_pool_connections",
            "A worker's database connections: checked out, and opened beyond the pool (overflow).",
            ["state"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self._per_function: dict[str, tuple[Any, Any]] = {}
        self._per_outcome: dict[tuple[str, str], Any] = {}
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # --- the dispatcher's observer (on each call's thread) ---------------------------------------
    def started(self, name: str) -> None:
        """A call of ``name`` starts: one more in flight."""
        self._function(name)[0].inc()

    def finished(self, name: str, outcome: str, seconds: float) -> None:
        """A call of ``name`` ended with ``outcome`` after ``seconds``."""
        in_flight, duration = self._function(name)
        in_flight.dec()
        duration.observe(seconds)
        calls = self._per_outcome.get((name, outcome))
        if calls is None:
            calls = self._per_outcome[name, outcome] = self._calls.labels(name, outcome)
        calls.inc()

    def counted(self, key: str) -> None:
        """A dispatcher event: counted if it is one of :data:`EVENTS`."""
        counter = self._events.get(key)
        if counter is not None:
            counter.inc()

    def _function(self, name: str) -> tuple[Any, Any]:
        children = self._per_function.get(name)
        if children is None:
            children = self._per_function[name] = (self._in_flight.labels(name), self._duration.labels(name))
        return children

    # --- the sampler ------------------------------------------------------------------------------
    def watch(
        self,
        load: Callable[[], tuple[int, int]],
        threads: int,
        engine: Engine,
        replica: Replica | None = None,
    ) -> None:
        """Sample ``load()`` (busy threads, held deliveries) of ``threads``, ``engine``'s pool and
        the ``replica``'s state now and then every :data:`SAMPLE_SECONDS`, on a daemon thread,
        until :meth:`stop`."""
        self.sample(load, threads, engine, replica)

        def run() -> None:
            while not self._stop.wait(SAMPLE_SECONDS):
                self.sample(load, threads, engine, replica)

        self._sampler = threading.Thread(target=run, name="dbworker-metrics-sampler", daemon=True)
        self._sampler.start()

    def sample(
        self,
        load: Callable[[], tuple[int, int]],
        threads: int,
        engine: Engine,
        replica: Replica | None = None,
    ) -> None:
        """Read the worker's threads, held deliveries, pool and replica once into the gauges."""
        busy, held = load()
        self._threads.labels("busy").set(busy)
        self._threads.labels("free").set(max(0, threads - busy))
        self._held.set(held)
        pool = engine.pool
        if isinstance(pool, QueuePool):  # SQLite's pools keep no such counts
            self._pool.labels("checked_out").set(pool.checkedout())
            self._pool.labels("overflow").set(max(0, pool.overflow()))
        if replica is not None:
            lag = replica.lag()
            self._replica_lag.set(math.inf if lag is None else lag)
            self._replica_usable.set(1 if replica.usable() else 0)

    def stop(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
