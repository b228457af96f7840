"""For tests and benchmarks: a database of their own on a shared PostgreSQL or MariaDB server, and
the broker queues they leave behind."""

from __future__ import annotations

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
