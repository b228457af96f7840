"""The daemon's startup checks, in the master process before any fork: the database (and the read
replica, if configured) reachable and at the schema's head, the broker reachable.
"""

from __future__ import annotations

import contextlib
import logging
import time

import oslo_messaging
from oslo_config import cfg
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from dbworker.core.replica import ReplicaState
from dbworker.daemon.engines import build_engine, build_replica, pool_size, workers
from dbworker.daemon.masking import mask

LOG = logging.getLogger(__name__)


class StartupError(Exception):
    """The worker cannot start; the message says why and what to do."""


def check_startup(conf: cfg.ConfigOpts) -> None:
    """Refuse to start on an unreachable or outdated database or an unreachable broker.

    Raises:
        StartupError: with a message naming the problem and the fix.
    """
    _check_database(conf)
    _check_replica(conf)
    _check_broker(conf)


def _check_replica(conf: cfg.ConfigOpts) -> None:
    """Refuse a ``slave_connection`` that cannot be a replica of the primary (another database or
    driver, SQLite, not a URL); warn, and start, when the replica is down or lagging: opted-in
    reads run on the primary until a worker's check finds it fit."""
    if not conf.database.slave_connection:
        return
    try:
        shown = make_url(conf.database.slave_connection).render_as_string(hide_password=True)
    except Exception:
        raise StartupError("[database] slave_connection is not a database URL") from None
    primary = build_engine(conf, max_pool_size=1)
    replica = None
    try:
        replica = build_replica(conf, primary)
        state = replica.check() if replica is not None else None
        if replica is not None and state is ReplicaState.LAGGING and replica.lag() is None:
            time.sleep(conf.dbworker.replica_check_interval)  # a bound needs two checks on a busy primary
            state = replica.check()
    except Exception as err:
        raise StartupError(f"Invalid [database] slave_connection {shown}: {mask(str(err))}") from None
    finally:
        primary.dispose()
        if replica is not None:
            replica.database.engine.dispose()
    if state is ReplicaState.OK:
        LOG.info("Read replica %s: ok, reads that opt in (use_slave) may run there", shown)
    else:
        LOG.warning(
            "Read replica %s is %s: reads that opt in run on the primary until it is fit",
            shown,
            state.value if state is not None else "absent",
        )


def _check_database(conf: cfg.ConfigOpts) -> None:
    from dbworker import schema

    shown = make_url(conf.database.connection).render_as_string(hide_password=True)
    try:
        engine = build_engine(conf, max_pool_size=1)
    except Exception as err:
        raise StartupError(f"Invalid [database] connection {shown}: {mask(str(err))}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = schema.current(engine), schema.head()
        _warn_connection_budget(conf, engine)
    except Exception as err:
        raise StartupError(f"The database {shown} is unreachable: {_reason(err)}") from None
    finally:
        engine.dispose()
    if current != head:
        state = f"at revision {current}" if current else "not initialised"
        config_files = " ".join(f"--config-file {path}" for path in conf.config_file) or "..."
        raise StartupError(
            f"The database {shown} is {state}; this dbworker needs revision {head}. "
            f"Run `dbworker-manage {config_files} db sync` first."
        )


def _reason(err: BaseException) -> str:
    cause = getattr(err, "orig", None) or getattr(err, "inner_exception", None) or err
    return mask(str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__)


def _warn_connection_budget(conf: cfg.ConfigOpts, engine: Engine) -> None:
    query = {"postgresql": "SHOW max_connections", "mysql": "SELECT @@max_connections"}
    sql = query.get(engine.dialect.name)
    if sql is None:
        return
    with engine.connect() as conn:
        limit = int(conn.execute(text(sql)).scalar() or 0)
    wanted = workers(conf) * (pool_size(conf) + conf.database.max_overflow)
    if limit and wanted > limit:
        LOG.warning(
            "%d workers x (max_pool_size %d + max_overflow %d) = %d database connections on this "
            "host alone, but the database allows %d: lower [dbworker] workers or "
            "[DEFAULT] executor_thread_pool_size",
            workers(conf),
            pool_size(conf),
            conf.database.max_overflow,
            wanted,
            limit,
        )


def _check_broker(conf: cfg.ConfigOpts) -> None:
    """Connect to one of the broker's hosts, retrying with backoff for broker_connect_timeout."""
    url = oslo_messaging.TransportURL.parse(conf)
    if url.transport not in ("rabbit", "kombu+rabbit", "amqp") or not url.hosts:
        return
    import kombu

    deadline = time.monotonic() + conf.dbworker.broker_connect_timeout
    delay = 0.5
    while True:
        errors = []
        for host in url.hosts:
            connection = kombu.Connection(
                hostname=host.hostname,
                port=host.port or 5672,
                userid=host.username,
                password=host.password,
                virtual_host=url.virtual_host or "/",
                ssl=conf.oslo_messaging_rabbit.ssl,
                connect_timeout=min(5.0, max(1.0, deadline - time.monotonic())),
            )
            try:
                connection.connect()
                return
            except Exception as err:
                errors.append(f"{host.hostname}:{host.port or 5672}: {mask(str(err)) or type(err).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    connection.release()
        if time.monotonic() + delay > deadline:
            raise StartupError(
                "The message broker is unreachable after "
                f"{conf.dbworker.broker_connect_timeout}s ([dbworker] broker_connect_timeout): "
                + "; ".join(errors)
            )
        LOG.warning("The message broker is unreachable (%s), retrying in %.1fs", "; ".join(errors), delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
