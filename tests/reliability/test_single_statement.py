"""A ``single_statement`` handler runs without a transaction (autocommit): its reply is consistent
only because it reads with exactly one statement. Every such handler is held to that, for each kind
of context, on every database; and the dispatcher really gives it an autocommit connection."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from samples import SAMPLES, context, seed
from testenv import DB_FIXTURE_DATABASES, service_url

from dbworker.api import LocalAPI
from dbworker.core.records import PreparedRead
from dbworker.core.registry import Auth
from dbworker.handlers import build_registry
from dbworker.session import make_engine
from dbworker.tools.testing import kill_database_sessions

REGISTRY = build_registry()
SINGLE = sorted(name for name, handler in REGISTRY.items() if handler.single_statement)
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


def test_the_hot_reads_are_single_statement_handlers():
    assert {"volume_get", "volume_get_all_by_project"} <= set(SINGLE)
    assert not any(REGISTRY[name].writes for name in SINGLE)


@pytest.mark.parametrize(
    ("name", "who"),
    [
        (n, who)
        for n in SINGLE
        for who in ("admin", "user")
        if who == "admin" or REGISTRY[n].auth is not Auth.ADMIN
    ],
)
def test_a_single_statement_handler_reads_with_one_statement_in_autocommit(db, name, who, monkeypatch):
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    statements: list[str] = []
    autocommit: list[object] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not str(statement).lstrip().upper().startswith(TRANSACTION_CONTROL):
            statements.append(statement)
            dbapi = conn.connection.dbapi_connection
            driver = dbapi.autocommit if conn.dialect.name == "postgresql" else None  # both psycopgs
            autocommit.append((conn.get_execution_options().get("isolation_level"), driver))

    prepared_rows = PreparedRead.rows

    def count_prepared(self, conn, params):  # runs on the driver's cursor, past SQLAlchemy's events
        count(conn, None, self.statement, params, None, False)
        return prepared_rows(self, conn, params)

    monkeypatch.setattr(PreparedRead, "rows", count_prepared)
    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        api.call(context(who), name, **SAMPLES[name])
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    # PostgreSQL switches autocommit on the client; elsewhere it would cost round trips.
    assert autocommit == [("AUTOCOMMIT", True) if db.kind == "postgresql" else (None, None)]


@pytest.mark.parametrize(
    "database", [p for p in DB_FIXTURE_DATABASES if p.values[0] != "sqlite"], indirect=True
)
def test_a_prepared_read_on_a_lost_connection_is_re_run_on_a_fresh_one(db):
    # PreparedRead runs on the driver's cursor, past SQLAlchemy's error handling: a connection the
    # database ended must still be recognised, discarded and the call re-run, not fail.
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    assert api.call(context("admin"), "volume_get", volume_id="p1-vol")["id"] == "p1-vol"  # pooled now
    assert kill_database_sessions(db.url, service_url(db.kind)) > 0
    assert api.call(context("admin"), "volume_get", volume_id="p1-vol")["id"] == "p1-vol"
    assert api.dispatcher.counters["retries"] == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # psycopg 3: it prepares
def test_only_a_lookup_by_id_is_prepared_on_the_server(db):
    # PostgreSQL may run a prepared statement with one generic plan for every value, and keeps it
    # while the tables grow: right for a primary-key lookup, not for a project's listing (a generic
    # plan that scanned all of volume_metadata on every call was measured).
    seed(db.engine)
    engine = make_engine(db.url, max_pool_size=1, max_overflow=0)  # one session to look into
    try:
        api = LocalAPI.from_engine(engine)
        for _ in range(8):  # psycopg 3 prepares a statement on its 5th run on a connection
            api.call(context("user"), "volume_get", volume_id="p1-vol")
            api.call(context("user"), "volume_get_all_by_project", project_id="p1")
            api.call(context("user"), "snapshot_get_all_by_project", project_id="p1")
        with engine.connect() as conn:
            prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
    finally:
        engine.dispose()
    assert len(prepared) == 1, prepared  # the lookup by id; no listing, no ORM statement
    assert "volumes.id = $1" in prepared[0], prepared
