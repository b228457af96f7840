"""Alembic environment for dbworker's schema, run programmatically by :mod:`dbworker.schema`,
which hands over an open connection in ``config.attributes["connection"]`` (no ``alembic.ini``)."""

from __future__ import annotations

from alembic import context

from dbworker import models

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=models.Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
