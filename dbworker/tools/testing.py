"""For tests and benchmarks: a database of their own on a shared PostgreSQL or MariaDB server, the
broker queues they leave behind, and a free port for a daemon's metrics."""

from __future__ import annotations

import socket
from collections.abc import Callable

import kombu
import sqlalchemy as sa
from sqlalchemy.engine import make_url


def create_database(admin_url: str, name: str) -> tuple[str, Callable[[], None]]:
    """Create the database ``name`` (dropping one of that name first) on the server of ``admin_url``.

    Returns its URL (password included, for engines) and a function that drops it, ending the
    sessions still connected to it on PostgreSQL first. Raises what the server raises.
    """
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def kombu_url(transport_url: str) -> str:
    """Return oslo's ``rabbit://`` transport URL as kombu spells it (``amqp://``)."""
    return transport_url.replace("rabbit://", "amqp://", 1)


def delete_queues(transport_url: str, names: list[str]) -> None:
    """Delete the queues ``names`` (absent ones included) from the broker at ``transport_url``:
    oslo's topic queues and Celery's queues are not auto-delete. Raises OSError when the broker
    cannot be reached."""
    with kombu.Connection(kombu_url(transport_url), connect_timeout=5) as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)


def kill_database_sessions(database_url: str, admin_url: str) -> int:
    """End every session on the database of ``database_url`` (PostgreSQL or MariaDB/MySQL), as an
    administrator connected through ``admin_url``: the connections a pool holds turn dead.

    Returns how many sessions were ended. Raises what the server raises.
    """
    url = make_url(database_url)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "postgresql":
                query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"
                return len(
                    conn.execute(sa.text(query + " AND pid <> pg_backend_pid()"), {"db": url.database}).all()
                )
            query = "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
            killed = 0
            for thread_id in conn.execute(sa.text(query), {"db": url.database}).scalars().all():
                try:
                    conn.execute(sa.text(f"KILL {int(thread_id)}"))
                    killed += 1
                except sa.exc.DBAPIError as err:  # the session ended by itself meanwhile
                    if "Unknown thread id" not in str(err):
                        raise
            return killed
    finally:
        engine.dispose()


def free_port() -> int:
    """A TCP port free on the loopback now (for a daemon's ``[dbworker] metrics_port``; it binds
    the port at start, so another process may take it in between)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
