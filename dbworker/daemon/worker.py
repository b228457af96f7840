"""The worker daemon's process model: configuration, and the service each worker runs.

``dbworker.daemon.cmd.main`` parses the configuration, runs the startup checks
(:mod:`dbworker.daemon.startup`) in the master process (before any fork), then hands a
:class:`WorkerService` to oslo.service's launcher, which forks ``[dbworker] workers`` processes
(cotyledon, threading backend). Each worker process builds its own engines
(:mod:`dbworker.daemon.engines`), dispatcher, transport and bounded RPC server in
:meth:`WorkerService.start`.

Per worker process (README, "Sizing the pools"): ``T = [DEFAULT] executor_thread_pool_size``
(default 8) threads, ``[database] max_pool_size = T + 2`` unless set (plus ``max_overflow``), and
``[oslo_messaging_rabbit] rabbit_qos_prefetch_count = 1`` unless set: the bounded server
(``flow_control.BoundedRPCServer``) accepts a call only when a thread is free, so a backlog stays on
the broker. A deployment opens at most ``workers x (max_pool_size + max_overflow) x hosts`` database
connections; the startup check warns when one host alone exceeds ``max_connections``.

Each worker process also runs a thread that deletes old ``rpc_calls`` delivery records
(:class:`dbworker.edge.delivery.RecordTrimmer`) and, with a read replica, one that checks its lag
(:class:`dbworker.core.replica.ReplicaMonitor`).

Signals (cotyledon): SIGTERM makes each worker stop taking calls, answer the running ones
(:meth:`WorkerService.stop`) and exit, within ``[DEFAULT] graceful_shutdown_timeout``. SIGHUP
re-reads the configuration in the master (``restart_method='mutate'``), then replaces every worker:
each drains as on SIGTERM and a new one is forked with the new values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
from datetime import timedelta
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_log import log as oslo_log
from oslo_messaging import opts as messaging_opts
from oslo_service import service as oslo_service
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from dbworker import __version__, options
from dbworker.core import logcontext
from dbworker.core.dispatch import Dispatcher
from dbworker.core.replica import ReplicaMonitor
from dbworker.core.settings import Settings
from dbworker.daemon import masking, metrics
from dbworker.daemon.engines import build_engine, build_replica, pool_size, workers
from dbworker.daemon.masking import mask
from dbworker.daemon.startup import StartupError
from dbworker.edge import flow_control, inflate, rpc
from dbworker.edge.delivery import RecordTrimmer
from dbworker.handlers import build_registry
from dbworker.session import make_sessionmaker

LOG = logging.getLogger(__name__)


# --- configuration --------------------------------------------------------------------------------
def configure(conf: cfg.ConfigOpts, argv: list[str] | None) -> None:
    """Register every option the daemon reads on ``conf``, parse ``argv`` and set up logging.

    Raises:
        StartupError: a config file is missing or unreadable, or an option has an invalid value.
    """
    options.register_opts(conf)
    oslo_log.register_options(conf)
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    options.set_messaging_defaults(conf)
    try:
        conf(argv, project="dbworker", version=__version__)
        _validate(conf)
    except (cfg.Error, ValueError) as err:
        raise StartupError(f"Invalid configuration: {err}") from None
    # oslo.db logs each database error it has no specific class for with the driver's traceback,
    # whose message can carry row values; the dispatcher logs such errors itself, without them.
    quiet = ["alembic=WARN", "oslo_db.sqlalchemy.exc_filters=ERROR"]
    oslo_log.set_defaults(default_log_levels=[*oslo_log.get_default_log_levels(), *quiet])
    oslo_log.setup(conf, "dbworker", version=__version__)
    logcontext.install_formatter()
    masking.install()


def update_sample_defaults() -> None:
    """The ``oslo.config.opts.defaults`` hook: ``etc/dbworker.conf`` shows dbworker's own defaults
    for the oslo.messaging options it overrides, not the library's.

    The generator copies oslo.messaging's option objects (``oslo_messaging.opts._opts``, private;
    the sample-config test fails if that changes), so their defaults are changed in place.
    """
    for group, opts in messaging_opts._opts:
        cfg.set_defaults(opts, **options.MESSAGING_DEFAULTS.get(group, {}))


def _validate(conf: cfg.ConfigOpts) -> None:
    """Read every registered option once, so a bad value fails now and not in a worker."""
    for name in list(conf):
        value = conf[name]
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for opt in list(value):
                value[opt]
    if conf.executor_thread_pool_size < 1:
        raise ValueError("[DEFAULT] executor_thread_pool_size must be at least 1")
    try:
        make_url(conf.database.connection)
    except sa_exc.ArgumentError:
        raise ValueError("[database] connection is not a database URL") from None
    oslo_messaging.TransportURL.parse(conf)


def settings(conf: cfg.ConfigOpts) -> Settings:
    """Return the ``[dbworker]`` values handlers read: every field of :class:`Settings` from the
    option of the same name."""
    return Settings(**{field.name: conf.dbworker[field.name] for field in dataclasses.fields(Settings)})


# --- the service each worker process runs ---------------------------------------------------------
class ReadyNotifier:
    """Sends systemd ``READY=1`` once, from the first worker that consumes.

    cotyledon's master would send it as soon as it starts; :func:`take_notify_socket` takes the
    socket away from it before the launch, and the workers (forked from the master) share a flag.
    """

    def __init__(self, notify_socket: str | None) -> None:
        self._socket = notify_socket
        self._sent = multiprocessing.get_context("fork").Value("b", 0) if notify_socket else None

    def ready(self) -> None:
        """Send ``READY=1`` unless a worker already did (check-and-set under a shared lock)."""
        if not self._socket or self._sent is None:
            return
        with self._sent.get_lock():
            if self._sent.value:
                return
            self._sent.value = 1
        address = "\0" + self._socket[1:] if self._socket.startswith("@") else self._socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.closing(sock):
            try:
                sock.connect(address)
                sock.sendall(b"READY=1")
            except OSError:
                LOG.warning("systemd notification to %s failed", self._socket, exc_info=True)


def take_notify_socket() -> str | None:
    """Remove ``NOTIFY_SOCKET`` from the environment and return it."""
    return os.environ.pop("NOTIFY_SOCKET", None)


class WorkerService(oslo_service.ServiceBase):
    """One worker process: an engine, a dispatcher, a transport and a bounded RPC server."""

    def __init__(self, conf: cfg.ConfigOpts, notifier: ReadyNotifier) -> None:
        self.conf = conf
        self.notifier = notifier
        self._engine: Engine | None = None
        self._transport: oslo_messaging.Transport | None = None
        self._server: flow_control.BoundedRPCServer | None = None
        self._trimmer: RecordTrimmer | None = None
        self._metrics: metrics.WorkerMetrics | None = None
        self._monitor: ReplicaMonitor | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Build everything in this (forked) process and start consuming."""
        conf = self.conf
        threads = conf.executor_thread_pool_size
        self._engine = build_engine(conf)
        replica = build_replica(conf, self._engine)
        if replica is not None:
            self._monitor = ReplicaMonitor(replica, interval=conf.dbworker.replica_check_interval)
            self._monitor.start()
        self._metrics = metrics.WorkerMetrics() if conf.dbworker.metrics_port else None
        dispatcher = Dispatcher(
            build_registry(),
            make_sessionmaker(self._engine),
            settings=settings(conf),
            max_deadlock_retries=conf.dbworker.max_deadlock_retries,
            host=conf.host,
            observer=self._metrics,
            replica=replica,
        )
        inflate.install()  # before any message arrives: kombu inflates bodies without a limit
        self._transport = rpc.get_transport(conf)
        self._server = rpc.build_server(
            self._transport,
            dispatcher,
            topic=conf.dbworker.topic,
            host=conf.host,
            pool_size=threads,
            deadline_allowance=conf.dbworker.deadline_allowance,
            on_listener_death=_end_this_worker,
        )
        self._server.start()
        if self._metrics is not None:
            self._metrics.watch(self._server.load, threads, self._engine, replica)
        self._trimmer = RecordTrimmer(
            self._engine,
            age=timedelta(seconds=conf.dbworker.delivery_record_age),
            interval=conf.dbworker.delivery_record_trim_interval,
        )
        self._trimmer.start()
        LOG.info(
            "Worker %d consuming topic %r on %s with %d threads, %d+%d database connections",
            os.getpid(),
            conf.dbworker.topic,
            conf.host,
            threads,
            pool_size(conf),
            conf.database.max_overflow,
        )
        self.notifier.ready()

    def stop(self) -> None:
        """Stop taking calls, finish and answer the running ones, then release everything."""
        LOG.info("Worker %d stopping: draining running calls", os.getpid())
        if self._server is not None:
            self._server.stop()
            LOG.info("Worker %d no longer takes calls; finishing the running ones", os.getpid())
            self._server.wait()
        if self._trimmer is not None:
            self._trimmer.stop()
        if self._metrics is not None:
            self._metrics.stop()
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor.replica.database.engine.dispose()
        if self._transport is not None:
            self._transport.cleanup()
        if self._engine is not None:
            self._engine.dispose()
        LOG.info("Worker %d stopped", os.getpid())
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def reset(self) -> None:
        """Nothing to do: SIGHUP replaces the worker process (see the module docstring)."""


def _end_this_worker() -> None:
    """Drain and end this worker process (SIGTERM to itself); the master starts a new one."""
    os.kill(os.getpid(), signal.SIGTERM)


def launch(conf: cfg.ConfigOpts) -> Any:
    """Fork the workers and return oslo.service's launcher (call ``.wait()`` on it)."""
    notifier = ReadyNotifier(take_notify_socket())
    count = workers(conf)
    LOG.info(
        "Starting %d worker processes on topic %r (transport %s, database %s)",
        count,
        conf.dbworker.topic,
        mask(conf.transport_url or options.DEFAULT_TRANSPORT_URL),
        make_url(conf.database.connection).render_as_string(hide_password=True),
    )
    return oslo_service.launch(conf, WorkerService(conf, notifier), workers=count, restart_method="mutate")
