"""Engines and sessions, through oslo.db: its exception filters, SQLite foreign keys, MySQL modes.

The dispatcher owns the transaction (it commits, re-runs, translates errors); this module builds
the engine and the sessionmaker, begins a call's transaction with its database's set-up
(:func:`begin_call`: REPEATABLE READ or autocommit on PostgreSQL, ``BEGIN IMMEDIATE`` for a
SQLite write), and says which database errors are worth re-running a call for.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import sqlalchemy.exc
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import engines
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str,
    *,
    max_pool_size: int | None = 10,
    max_overflow: int | None = 2,
    pool_timeout: int | None = 10,
    connection_recycle_time: int = 3600,
    connection_parameters: str = "",
    max_retries: int = 0,
    **kwargs: Any,
) -> Engine:
    """Return an engine for ``url`` with oslo.db's error filters and pool sizing.

    SQLite runs with foreign keys on and waits (rather than failing) on a locked file; MySQL and
    MariaDB run in ``TRADITIONAL`` mode with ``utf8mb4``. ``max_retries`` is how many times
    oslo.db tries to connect at creation (0: not at all; the first call connects). Connections
    are not pinged before use: a dead one fails the call's first statement, which the dispatcher
    re-runs on a fresh connection.
    """
    if url.startswith("sqlite"):
        max_pool_size = max_overflow = pool_timeout = None  # SQLite has no connection pool
    if url.startswith("mysql") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    engine = engines.create_engine(
        url,
        sqlite_fk=True,
        mysql_sql_mode="TRADITIONAL",
        max_pool_size=max_pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connection_recycle_time=connection_recycle_time,
        connection_parameters=connection_parameters,
        max_retries=max_retries,
        thread_checkin=False,  # oslo.db's time.sleep(0) on check-in is for eventlet; we run threads
        **kwargs,
    )
    # oslo.db hard-codes pool_pre_ping: a `SELECT 1` round trip before every call. The dispatcher
    # re-runs a call whose connection turns out dead (before it commits) and SQLAlchemy then
    # invalidates the whole pool, so the ping only costs time (bench/analysis.md). oslo.db has no
    # option for it; the pool's attribute is set directly (SQLAlchemy pinned below 2.2).
    engine.pool._pre_ping = False
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "connect", _prepare_only_when_asked)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_busy_timeout)
        for listener in list(engine.dispatch.begin):  # replaced by _sqlite_begin (same marker)
            if getattr(listener, "__name__", "") == "_sqlite_emit_begin":
                event.remove(engine, "begin", listener)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


#: Execution options of a connection whose transaction writes: on SQLite it begins with the write
#: lock (``BEGIN IMMEDIATE``); other databases lock rows as the statements need them.
_WRITES_OPTION = "dbworker_writes"
WRITE_TRANSACTION = {_WRITES_OPTION: True}


def _prepare_only_when_asked(dbapi_connection: Any, _record: Any) -> None:
    """psycopg 3 prepares on the server only the statements run with ``prepare=True``.

    By default it prepares any statement a connection runs five times, and PostgreSQL may then
    run it with one generic plan for every value, kept while the tables grow: right for a lookup
    by primary key, wrong for a listing whose best plan depends on how many rows the value finds
    (measured: a project listing's generic plan scanned all of ``volume_metadata`` on every call).
    ``records.PreparedRead`` asks for it where the plan cannot depend on the value. (``None``
    would also refuse ``prepare=True``: the threshold is set beyond reach instead.)
    """
    dbapi_connection.prepare_threshold = sys.maxsize


def _sqlite_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout = 30000")


def _sqlite_begin(conn: Any) -> None:
    """Begin SQLite's transaction as oslo.db does (it sets the driver to autocommit and emits
    ``BEGIN`` itself, marking ``conn.info["in_transaction"]``), but a :data:`WRITE_TRANSACTION`
    with ``BEGIN IMMEDIATE``.

    Under a deferred BEGIN, a call that reads and then writes (``quota_reserve``,
    ``volume_allocate_iscsi_target``, a create that checks a name first) fails at once with
    "database is locked" when another call writes meanwhile: SQLite cannot let it upgrade its read
    lock. Taking the write lock at BEGIN makes such calls wait for each other, up to the busy
    timeout, and each sees what the previous one committed.
    """
    if "in_transaction" not in conn.info:
        writes = conn.get_execution_options().get(_WRITES_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
        conn.info["in_transaction"] = True


#: A read call's isolation on PostgreSQL: one snapshot for the whole call, so a reply read by
#: several statements (a volume, then its metadata) never mixes two commits, as READ COMMITTED can.
_READ_SNAPSHOT = {"isolation_level": "REPEATABLE READ"}
#: A read call of one statement: that statement is its own snapshot; no BEGIN, no COMMIT.
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def transaction_options(
    dialect: str, *, writes: bool, single_statement: bool = False
) -> dict[str, Any] | None:
    """Return the execution options a call's connection needs before its transaction begins.

    On PostgreSQL a ``single_statement`` read runs in autocommit (no BEGIN, no COMMIT: one round
    trip; the drivers switch it on the client) and other reads in REPEATABLE READ (one snapshot).
    MySQL/MariaDB keep their default (a read is one statement and a COMMIT; switching autocommit
    would cost two more round trips there). SQLite writes begin with the write lock
    (:data:`WRITE_TRANSACTION`).
    """
    if dialect == "postgresql" and not writes:
        return _AUTOCOMMIT if single_statement else _READ_SNAPSHOT
    if dialect == "sqlite" and writes:
        return WRITE_TRANSACTION
    return None


def begin_call(
    engine: Engine,
    sessions: sessionmaker[Session],
    *,
    core: bool,
    writes: bool,
    single_statement: bool = False,
) -> Session | Connection:
    """Return a call's open transaction, set up for ``engine``'s database
    (:func:`transaction_options`): a ``Connection`` of ``engine`` for a ``core`` handler, else a
    ``Session`` of ``sessions``. A ``single_statement`` read begins none: its one statement is its
    own snapshot (in autocommit on PostgreSQL; elsewhere the driver's implicit transaction ends
    when the connection goes back to the pool). The caller commits, and closes what it gets.

    Raises:
        what connecting raises (a database error, to translate like any other); a connection
        that fails its set-up is closed first.
    """
    options = transaction_options(engine.dialect.name, writes=writes, single_statement=single_statement)
    if core:
        conn = engine.connect()
        try:
            if options:
                conn.execution_options(**options)
            if not single_statement:
                conn.begin()
        except BaseException:
            conn.close()
            raise
        return conn
    tx = sessions()
    tx.begin()
    if options:
        tx.connection(execution_options=options)
    return tx


def raise_driver_error(conn: Connection, err: Exception) -> NoReturn:
    """Raise a driver error that happened past SQLAlchemy's statement execution (a
    :class:`dbworker.core.records.PreparedRead`, a connection setting) exactly as SQLAlchemy raises
    one: wrapped, through oslo.db's filters (``DBConnectionError``...), and on a lost connection
    with the connection and the pool's older connections invalidated, so a re-run connects anew.

    Uses SQLAlchemy's ``Connection._handle_dbapi_exception`` (private; the lost-connection tests
    in ``tests/reliability/test_single_statement.py`` fail if it changes). The statement and its
    parameters are not passed: they never reach a caller or a log.
    """
    conn._handle_dbapi_exception(err, None, None, None, None)
    raise AssertionError("unreachable: SQLAlchemy re-raises the driver error")  # pragma: no cover


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the sessionmaker the dispatcher opens one transaction per call with."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


def is_deadlock(exc: BaseException) -> bool:
    """True for a deadlock or serialization failure (MySQL 1213, PostgreSQL 40P01/40001)."""
    return isinstance(exc, db_exc.DBDeadlock)


def is_disconnect(exc: BaseException) -> bool:
    """True for a lost or refused database connection, or an exhausted connection pool."""
    if isinstance(exc, db_exc.DBConnectionError | sqlalchemy.exc.TimeoutError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated
