"""A read replica: which calls it may serve, and whether it is fit to serve them now.

A read call whose caller opted in (the context's ``use_slave``) runs on the replica while the
replica is *usable*: reachable, a standby, and no further behind the primary than ``max_lag``
seconds. Otherwise it runs on the primary, and so does every write call (its reads included). A
:class:`Replica` keeps the replica's state as last measured by :meth:`Replica.check`, which a
:class:`ReplicaMonitor` thread runs every few seconds; a call that loses its replica connection
marks it down at once (:meth:`Replica.mark_down`) and runs again on the primary.

The lag is a bound, not an estimate. PostgreSQL: each check reads the primary's flushed WAL
position (``pg_current_wal_flush_lsn()``: every commit a caller has seen is flushed, with
``synchronous_commit`` on), then the standby's replayed position; the standby holds every commit
the primary had made by the newest check whose primary position it has replayed, so its lag is at
most the time since that check (an idle primary costs nothing; a standby cut off from its primary
is seen lagging). The flushed position, not the inserted one: WAL that no commit flushes (a
read's page pruning, say) can wait unflushed, and unsent, for seconds, and counted as lag (seen:
a standby "lagging" for 12 s after a daemon started). With ``synchronous_commit`` off, a commit
is seen before its flush, and the bound can fall short by up to three ``wal_writer_delay``.
MariaDB and MySQL: ``Seconds_Behind_Master`` (the replica's own estimate, in whole seconds; NULL,
replication stopped, counts as down). Between two checks the bound grows with the clock.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from oslo_db import exception as db_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

LOG = logging.getLogger(__name__)

#: Primary WAL positions kept for the lag bound (one per check: an hour at one check a second).
_HISTORY = 3600


class ReplicaState(enum.Enum):
    """What the last check found."""

    OK = "ok"  # a standby within the lag bound: opted-in reads run there
    LAGGING = "lagging"  # reachable, but further behind than the bound (or not yet measured)
    DOWN = "down"  # unreachable, replication stopped, or not a standby


@dataclass(frozen=True)
class Database:
    """An engine and the sessionmaker a call's transaction is opened with."""

    engine: Engine
    sessions: sessionmaker[Session]


class NotAReplica(Exception):
    """The replica's database says it is no standby (or its replication stopped)."""


class Replica:
    """The replica's database and its state.

    Parameters:
        database: the replica's engine and sessionmaker (``[database] slave_connection``).
        primary: the primary's engine, read by :meth:`check` for the lag bound.
        max_lag: seconds the replica may be behind for opted-in reads to run there.

    Raises:
        ValueError: the two engines are not the same database and driver, or it is one
            (SQLite) that has no replicas.
    """

    def __init__(self, database: Database, primary: Engine, *, max_lag: float) -> None:
        dialect, driver = database.engine.url.drivername, primary.url.drivername
        if dialect != driver:  # one driver: the dispatcher catches one driver's errors
            raise ValueError(f"the replica's URL is {dialect}://, the primary's {driver}://")
        dialect = database.engine.dialect.name
        if dialect not in ("postgresql", "mysql", "mariadb"):
            raise ValueError(f"{dialect} has no replicas: slave_connection needs PostgreSQL or MariaDB")
        self.database, self.primary, self.max_lag = database, primary, max_lag
        self.state = ReplicaState.LAGGING  # until the first check
        self._lag: float | None = None  # the bound at self._checked (None: unknown)
        self._checked = time.monotonic()
        self._positions: collections.deque[tuple[float, int]] = collections.deque(maxlen=_HISTORY)
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """True if an opted-in read may run on the replica now (its state is ok and its lag
        bound, grown by the time since the check, is within ``max_lag``)."""
        lag = self.lag()
        return self.state is ReplicaState.OK and lag is not None and lag <= self.max_lag

    def lag(self) -> float | None:
        """Seconds the replica may be behind the primary now, at most; None if unknown (down)."""
        lag = self._lag
        return None if lag is None else lag + (time.monotonic() - self._checked)

    def mark_down(self, reason: str) -> None:
        """Send opted-in reads to the primary until a check finds the replica fit again."""
        if self.state is not ReplicaState.DOWN:
            LOG.warning("Read replica down (%s): reads go to the primary", reason)
        self.state, self._lag = ReplicaState.DOWN, None

    def check(self) -> ReplicaState:
        """Measure the replica's lag bound now and return its new state (never raises: a failed
        connection or query is a replica down)."""
        with self._lock:
            previous = self.state
            try:
                lag = self._measure()
            except NotAReplica as err:
                self.state, self._lag, why = ReplicaState.DOWN, None, str(err)
            except Exception as err:
                self.state, self._lag, why = ReplicaState.DOWN, None, f"unreachable: {type(err).__name__}"
            else:
                ok = lag is not None and lag <= self.max_lag
                self.state, self._lag = (ReplicaState.OK if ok else ReplicaState.LAGGING), lag
                behind = "not yet measured" if lag is None else f"at most {lag:.1f}s behind"
                why = f"{behind}, bound {self.max_lag:g}s"
            self._checked = time.monotonic()
            if self.state is not previous:
                level = logging.INFO if self.state is ReplicaState.OK else logging.WARNING
                LOG.log(level, "Read replica %s (%s)", self.state.value, why)
            return self.state

    def _measure(self) -> float | None:
        if self.primary.dialect.name == "postgresql":
            return self._postgresql_lag()
        return self._mysql_lag()

    def _postgresql_lag(self) -> float | None:
        asked = time.monotonic()  # the primary's position then is at most the one read
        with self.primary.connect() as conn:
            position, block, segment = conn.execute(_WAL_POSITION).one()
        self._positions.append((asked, wal_end(int(position), block, int(segment))))
        with self.database.engine.connect() as conn:
            standby, replayed = conn.execute(
                text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'")
            ).one()
        if not standby or replayed is None:
            raise NotAReplica("not a standby: pg_is_in_recovery() is false")
        newest = None  # the newest check whose primary position the standby has replayed
        while self._positions and self._positions[0][1] <= replayed:
            newest = self._positions.popleft()
        if newest is None:
            return None
        self._positions.appendleft(newest)  # still the bound until a newer one is replayed
        return time.monotonic() - newest[0]

    def _mysql_lag(self) -> float | None:
        with self.database.engine.connect() as conn:
            row = _replica_status(conn)
        if row is None:
            raise NotAReplica("not a replica: SHOW REPLICA STATUS is empty")
        behind = next((row[k] for k in ("Seconds_Behind_Master", "Seconds_Behind_Source") if k in row), None)
        if behind is None:
            raise NotAReplica("replication stopped: Seconds_Behind_Master is NULL")
        return float(behind)


def _replica_status(conn: Connection) -> Mapping[str, Any] | None:
    """The replica's status row (MariaDB 10.5+ and MySQL 8.0.22+: ``SHOW REPLICA STATUS``; older:
    ``SHOW SLAVE STATUS``, which MySQL 8.4 no longer has); None when the server is no replica.

    Raises:
        NotAReplica: the ``slave_connection`` user may not read it (MySQL error 1227).
    """
    for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
        try:
            return conn.execute(text(statement)).mappings().first()
        except (db_exc.DBError, sqlalchemy.exc.DBAPIError) as err:  # oslo.db's filters wrap them
            orig = getattr(getattr(err, "inner_exception", err), "orig", None)
            if getattr(orig, "args", (None,))[:1] == (_ACCESS_DENIED,):
                raise NotAReplica(
                    f"{statement} denied: grant SLAVE MONITOR (MariaDB) or REPLICATION CLIENT "
                    "(MySQL) to the slave_connection user"
                ) from None
            failed = err
    raise failed


#: MySQL's "Access denied; you need the ... privilege" error.
_ACCESS_DENIED = 1227


#: The primary's flushed WAL position, and its WAL page and segment sizes in bytes.
_WAL_POSITION = text(
    "SELECT pg_current_wal_flush_lsn() - '0/0', current_setting('wal_block_size')::int,"
    " (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')"
)


def wal_end(position: int, block: int = 8192, segment: int = 16 << 20) -> int:
    """Return where a standby's replay of the WAL up to ``position`` (the primary's) ends: ``position``,
    or the page's start when ``position`` is just past a page header (24 bytes; 40 at a segment's
    first page), where a record that ended at the page's end leaves the primary's position; a standby
    replays only to the record's end (seen: insert 0/3002018, replayed 0/3002000 on an idle
    primary)."""
    offset = position % block
    return position - offset if offset == (40 if position % segment < block else 24) else position


class ReplicaMonitor:
    """A daemon thread that runs :meth:`Replica.check` every ``interval`` seconds."""

    def __init__(self, replica: Replica, *, interval: float) -> None:
        self.replica, self.interval = replica, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbworker-replica-monitor", daemon=True)

    def start(self) -> None:
        """Check the replica now, then start the thread."""
        self.replica.check()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (it ends after its current check)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.replica.check()
