"""The schema's version, owned by Alembic: upgrade a database, read its revision, compare to head.

Used programmatically (no ``alembic.ini``): the scripts live in ``dbworker/migrations``.
``dbworker-manage db sync`` calls :func:`upgrade`; the worker refuses to start unless
:func:`is_current`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from dbworker import models

SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))

#: The table sqlalchemy-migrate (Folsom's Cinder) keeps its version in.
LEGACY_VERSION_TABLE = "migrate_version"


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
    """Upgrade the database to ``revision`` (default: head); a no-op when it is there already.

    Raises:
        SchemaError: the database holds tables Alembic did not create (a Folsom-era database
            from sqlalchemy-migrate, or a schema made by ``create_all``): upgrading would collide.
    """
    with engine.begin() as conn:
        _check_adoptable(conn)
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _check_adoptable(conn: sa.Connection) -> None:
    if MigrationContext.configure(conn).get_current_revision() is not None:
        return
    present = set(sa.inspect(conn).get_table_names())
    ours = sorted(present & set(models.Base.metadata.tables))
    if LEGACY_VERSION_TABLE in present:
        version = conn.execute(sa.text(f"SELECT version FROM {LEGACY_VERSION_TABLE}")).scalar()
        raise SchemaError(
            f"This database was created by Cinder's sqlalchemy-migrate (table "
            f"{LEGACY_VERSION_TABLE!r}, version {version}) and has no alembic_version table. "
            "dbworker does not adopt a Folsom-era schema automatically: back the database up, "
            "bring its tables to dbworker's revision 0001 (a unique (target_num, host) on "
            "iscsi_targets, quota_usages.live, the volume_admin_metadata table; see "
            "dbworker/migrations/versions/0001_initial_schema.py), then record the revision "
            "with `dbworker-manage db stamp 0001`."
        )
    if ours:
        raise SchemaError(
            f"The database already has dbworker tables ({', '.join(ours[:3])}, ...) but no "
            "alembic_version table, so its schema version is unknown. Point [database] "
            "connection at an empty database, or drop these tables, and run "
            "`dbworker-manage db sync` again."
        )


def stamp(engine: Engine, revision: str) -> None:
    """Record ``revision`` as the database's schema without running anything (for a database
    whose tables were brought to that revision by hand)."""
    with engine.begin() as conn:
        config = _config()
        config.attributes["connection"] = conn
        command.stamp(config, revision)
