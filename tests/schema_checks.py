"""Checks that a database's schema is the one the models declare, shared by the schema tests
(``test_schema.py`` for a fresh database, ``test_folsom_adoption.py`` for an adopted one)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dbworker import models


def differences(engine: sa.Engine) -> list:
    """Return Alembic autogenerate's differences between the database and the models (types too)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, models.Base.metadata)


def mysql_table_options(engine: sa.Engine) -> tuple[dict[str, tuple[str, str]], set[int]]:
    """Return ``({table: (engine, charset)}, {datetime precisions})`` of a MySQL/MariaDB database's
    tables, ``alembic_version`` aside (what autogenerate does not compare)."""
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_name, engine, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name != 'alembic_version'"
            )
        ).all()
        precisions = set(
            conn.execute(
                sa.text(
                    "SELECT datetime_precision FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND data_type = 'datetime'"
                )
            ).scalars()
        )
    return {name: (engine_, collation.split("_")[0]) for name, engine_, collation in tables}, precisions
