"""The private PostgreSQL primary and hot standby of ``dbworker.tools.pg_replica``: replication,
a read-only standby, paused replay, a standby restarted, and a stop that leaves nothing behind.
The tests share one pair and run in order: the last one stops it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from testenv import _unavailable

from dbworker.tools.pg_replica import StreamingPair, available

pytestmark = pytest.mark.postgresql


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    reason = available()
    if reason:
        _unavailable(f"a private PostgreSQL pair: {reason}")
    with StreamingPair(log_statements=True) as pair:
        with connect(pair.primary_port) as conn:
            conn.execute("CREATE TABLE marks (mark text PRIMARY KEY)")
        yield pair


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test", autocommit=True)


def write_mark(pair: StreamingPair) -> str:
    mark = uuid.uuid4().hex
    with connect(pair.primary_port) as conn:
        conn.execute("INSERT INTO marks VALUES (%s)", (mark,))
    return mark


def on_standby(pair: StreamingPair, mark: str) -> bool:
    with connect(pair.standby_port) as conn:
        return conn.execute("SELECT count(*) FROM marks WHERE mark = %s", (mark,)).fetchone() == (1,)


def test_a_row_written_on_the_primary_is_read_on_the_standby(pair: StreamingPair) -> None:
    mark = write_mark(pair)
    pair.wait_caught_up()
    engine = sa.create_engine(pair.standby_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT mark FROM marks WHERE mark = '{mark}'")).scalar() == mark
            assert conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar() is True
    finally:
        engine.dispose()
    log = pair.standby_log()
    assert f"WHERE mark = '{mark}'" in log  # log_statements: the standby logs its statements...
    assert log.count("pg_is_in_recovery") == 1  # ...this test's, not the pair's own polling
    assert sa.make_url(pair.primary_url).port == pair.primary_port


def test_a_write_on_the_standby_fails(pair: StreamingPair) -> None:
    with connect(pair.standby_port) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO marks VALUES ('standby')")


def test_paused_replay_hides_new_rows_until_resumed(pair: StreamingPair) -> None:
    pair.wait_caught_up()
    pair.pause_replay()
    try:
        mark = write_mark(pair)
        with pytest.raises(TimeoutError):
            pair.wait_caught_up(timeout=1)
        assert not on_standby(pair, mark)
    finally:
        pair.resume_replay()
    pair.wait_caught_up()
    assert on_standby(pair, mark)


def test_a_stopped_standby_refuses_connections_and_catches_up_when_started(pair: StreamingPair) -> None:
    pair.stop_standby()
    with pytest.raises(psycopg.OperationalError):
        connect(pair.standby_port).close()
    mark = write_mark(pair)  # while the standby is down: its slot keeps the WAL
    pair.start_standby()
    pair.wait_caught_up()
    assert on_standby(pair, mark)


def test_stop_removes_the_directory_and_both_servers(pair: StreamingPair) -> None:
    directory = pair.directory
    assert directory.is_dir()
    pair.stop()
    pair.stop()  # idempotent
    assert not directory.exists()
    for port in (pair.primary_port, pair.standby_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
