"""A worker process's databases: the primary's engine and, with ``[database] slave_connection``,
the read replica's (:mod:`dbworker.core.replica`), each with the configured pool.

Per worker process (README, "Sizing the pools"): ``T = [DEFAULT] executor_thread_pool_size``
threads, and ``[database] max_pool_size = T + 2`` connections unless set (plus ``max_overflow``),
to the primary and as many to the replica.
"""

from __future__ import annotations

import os

from oslo_config import cfg
from sqlalchemy.engine import Engine

from dbworker import options
from dbworker.core.replica import Database, Replica
from dbworker.session import make_engine, make_sessionmaker


def workers(conf: cfg.ConfigOpts) -> int:
    """Return the number of worker processes: ``[dbworker] workers``, default the CPU count."""
    return conf.dbworker.workers or os.cpu_count() or 1


def pool_size(conf: cfg.ConfigOpts) -> int:
    """Return each worker's ``max_pool_size``: as configured, else threads + 2."""
    location = conf.get_location("max_pool_size", "database")
    if location is not None and location.location not in (
        cfg.Locations.opt_default,
        cfg.Locations.set_default,
    ):
        return conf.database.max_pool_size
    return conf.executor_thread_pool_size + options.POOL_HEADROOM


def build_engine(conf: cfg.ConfigOpts, *, url: str | None = None, max_pool_size: int | None = None) -> Engine:
    """Return an engine for ``url`` (default ``[database] connection``) with the configured pool."""
    db = conf.database
    return make_engine(
        url or db.connection,
        max_pool_size=max_pool_size or pool_size(conf),
        max_overflow=db.max_overflow,
        pool_timeout=db.pool_timeout,
        connection_recycle_time=db.connection_recycle_time,
        connection_parameters=db.connection_parameters,
    )


def build_replica(conf: cfg.ConfigOpts, primary: Engine) -> Replica | None:
    """Return the read replica of ``[database] slave_connection`` beside ``primary`` (None when
    unset), its lag bound ``[dbworker] replica_max_lag``; not yet checked.

    Raises:
        ValueError: the replica is not the primary's database and driver, or has no replicas.
    """
    url = conf.database.slave_connection
    if not url:
        return None
    engine = build_engine(conf, url=url)
    try:
        return Replica(
            Database(engine, make_sessionmaker(engine)), primary, max_lag=conf.dbworker.replica_max_lag
        )
    except ValueError:
        engine.dispose()
        raise
