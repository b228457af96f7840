"""The schema's version, owned by Alembic: upgrade a database, read its revision, compare to head.

Used programmatically (no ``alembic.ini``): the scripts live in ``dbworker/schema/revisions``.
``dbworker-manage db sync`` calls :func:`upgrade` (which adopts a Folsom-era database first); the
worker refuses to start unless :func:`is_current`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from dbworker import models
from dbworker.schema import adopt

SCRIPT_LOCATION = str(Path(__file__).with_name("revisions"))


class SchemaError(Exception):
    """The database's schema cannot be upgraded as it is; the message says what to do."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head() -> str:
    """Return the newest revision the code knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """Return the database's revision, or None when Alembic never ran on it."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    """Return whether the database is at :func:`head`."""
    return current(engine) == head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: head), in one transaction; a no-op when it is
    there already. A Folsom-era database (sqlalchemy-migrate's ``migrate_version`` at version 2) is
    first adopted: brought to revision 0001 and stamped (:mod:`dbworker.schema.adopt`).

    On SQLite, foreign keys are off for the transaction: rebuilding a table (as SQLite's ALTER
    procedure must) would otherwise break the keys pointing at it.

    Raises:
        SchemaError: the database holds tables Alembic did not create and cannot adopt (a
            sqlalchemy-migrate version other than Folsom's, a changed Folsom schema, Folsom data
            that breaks a key it adds, or a schema made by ``create_all``); nothing was changed.
    """
    config = _config()
    with engine.connect() as conn, _sqlite_foreign_keys_off(conn), conn.begin():
        config.attributes["connection"] = conn
        if _check_adoptable(conn):
            try:
                adopt.adopt(conn, ScriptDirectory.from_config(config))
            except adopt.AdoptionRefused as err:
                raise SchemaError(str(err)) from err
        command.upgrade(config, revision)


@contextmanager
def _sqlite_foreign_keys_off(conn: sa.Connection) -> Iterator[None]:
    if conn.dialect.name != "sqlite":
        yield
        return
    dbapi = conn.connection.driver_connection  # outside a transaction, where the pragma takes effect
    dbapi.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        dbapi.execute("PRAGMA foreign_keys = ON")


def _check_adoptable(conn: sa.Connection) -> bool:
    """Return True for a sqlalchemy-migrate database (to adopt), False for one Alembic knows or an
    empty one; raise SchemaError for dbworker tables of unknown version."""
    if MigrationContext.configure(conn).get_current_revision() is not None:
        return False
    present = set(sa.inspect(conn).get_table_names())
    if adopt.LEGACY_VERSION_TABLE in present:
        return True
    ours = sorted(present & set(models.Base.metadata.tables))
    if ours:
        raise SchemaError(
            f"The database already has dbworker tables ({', '.join(ours[:3])}, ...) but no "
            "alembic_version table, so its schema version is unknown. Point [database] "
            "connection at an empty database, or drop these tables, and run "
            "`dbworker-manage db sync` again."
        )
    return False


def stamp(engine: Engine, revision: str) -> None:
    """Record ``revision`` as the database's schema without running anything (for a database
    whose tables were brought to that revision by hand)."""
    with engine.begin() as conn:
        config = _config()
        config.attributes["connection"] = conn
        command.stamp(config, revision)
