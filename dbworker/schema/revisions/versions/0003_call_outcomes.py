"""``rpc_calls`` also keeps idempotency keys: a longer key, the call's digest and its outcome.

A write call sent with an idempotency key is recorded under ``key:<key>`` with the digest of the
call (function, arguments, caller) and, in the same transaction, its outcome as JSON (its reply or
its typed error): a retry of the call with the same key is answered with that outcome instead of
running again. Records by message id (no key) leave both new columns empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rpc_calls") as batch:  # SQLite rebuilds the table; the others alter it
        batch.alter_column(
            "unique_id",
            existing_type=sa.String(length=36),
            type_=sa.String(length=80),
            existing_nullable=False,
        )
        batch.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column(
                "outcome", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("rpc_calls") as batch:
        batch.drop_column("outcome")
        batch.drop_column("digest")
        batch.alter_column(
            "unique_id",
            existing_type=sa.String(length=80),
            type_=sa.String(length=36),
            existing_nullable=False,
        )
