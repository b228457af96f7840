"""The ``rpc_calls`` table: the RPC write calls already applied, by message ``_unique_id``.

The dispatcher inserts a row, in the call's own transaction, for every write call that came over
RPC; a redelivery of a message whose call committed finds the key taken and is not run again
(at-most-once: a write call is not run twice, also when the broker redelivers a request whose
ack was lost).
``dbworker-manage db purge`` deletes old rows (index on ``created_at``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: InnoDB and 4-byte UTF-8 on MySQL/MariaDB; ignored elsewhere (as in revision 0001).
TABLE_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "rpc_calls",
        sa.Column("unique_id", sa.String(length=36), nullable=False),
        sa.Column("method", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("unique_id"),
        **TABLE_OPTIONS,
    )
    op.create_index("rpc_calls_created_at_idx", "rpc_calls", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("rpc_calls")
