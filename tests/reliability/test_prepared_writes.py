"""``records.PreparedWrite``, the delivery record's statements on the call's driver cursor: they
run in the call's transaction (a ``Connection`` or a ``Session``), a taken key is oslo.db's
``DBDuplicateEntry`` as through SQLAlchemy, and a connection the database ended is re-run."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from oslo_db import exception as db_exc
from samples import seed
from sqlalchemy.orm import Session
from testenv import DB_FIXTURE_DATABASES, service_url

from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.core.records import PreparedWrite
from dbworker.edge.delivery import MessageRecord
from dbworker.models import RpcCall, utcnow
from dbworker.tools.testing import kill_database_sessions

TABLE = RpcCall.__table__
INSERT = PreparedWrite(
    sa.insert(TABLE).values({c: sa.bindparam(c) for c in ("unique_id", "method", "created_at")}),
    server_prepared=True,
)
KEEP = PreparedWrite(
    sa.update(TABLE).where(TABLE.c.unique_id == sa.bindparam("key")).values(outcome=sa.bindparam("outcome")),
    server_prepared=True,
)


def _record(unique_id: str) -> dict[str, object]:
    return {"unique_id": unique_id, "method": "volume_create", "created_at": utcnow()}


def _outcomes(engine: sa.Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(TABLE.c.unique_id, TABLE.c.outcome)).all())


@pytest.mark.parametrize("commit", [True, False], ids=["commits", "rolls-back"])
@pytest.mark.parametrize("kind", ["connection", "session"])
def test_a_prepared_write_is_part_of_the_calls_transaction(db, kind, commit):
    key = uuid.uuid4().hex
    tx = db.engine.connect() if kind == "connection" else Session(db.engine)
    try:
        tx.begin()
        INSERT.run(tx, _record(key))
        assert KEEP.run(tx, {"key": key, "outcome": '{"reply": 1}'}) == 1  # rows written
        tx.commit() if commit else tx.rollback()
    finally:
        tx.close()
    assert _outcomes(db.engine) == ({key: '{"reply": 1}'} if commit else {})


def test_a_taken_key_is_a_duplicate_entry_and_leaves_the_first_record(db):
    key = uuid.uuid4().hex
    with db.engine.begin() as conn:
        INSERT.run(conn, _record(key))
    with db.engine.connect() as conn, conn.begin(), pytest.raises(db_exc.DBDuplicateEntry):
        INSERT.run(conn, _record(key))
    assert list(_outcomes(db.engine)) == [key]


@pytest.mark.parametrize(
    "database", [p for p in DB_FIXTURE_DATABASES if p.values[0] != "sqlite"], indirect=True
)
def test_a_write_whose_record_meets_a_lost_connection_is_re_run_on_a_fresh_one(db):
    # The record's insert is the write call's first statement, on the driver's cursor, past
    # SQLAlchemy's error handling: a connection the database ended must still be recognised,
    # discarded and the call re-run, once, with its record.
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    api.call(admin_context(), "volume_get", volume_id="p1-vol")  # a pooled connection now
    assert kill_database_sessions(db.url, service_url(db.kind)) > 0
    delivery = uuid.uuid4().hex
    reply = api.dispatcher.call(
        "volume_update",
        admin_context(),
        {"volume_id": "p1-vol", "values": {"display_name": "renamed"}},
        record=MessageRecord(delivery),
    )
    assert reply["display_name"] == "renamed"
    assert api.dispatcher.counters["retries"] == 1
    assert list(_outcomes(db.engine)) == [delivery]
