"""``dbworker-manage db purge``'s work: hard-delete old soft-deleted rows and old call records."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbworker import models
from dbworker.edge.delivery import trim_delivery_records


def purge(engine: Engine, age: timedelta) -> dict[str, int]:
    """Hard-delete rows with ``deleted`` true and ``deleted_at`` older than ``age``, and the
    ``rpc_calls`` records (no soft delete) created more than ``max(age, MIN_RECORD_AGE)`` ago
    (:func:`dbworker.edge.delivery.trim_delivery_records`).

    Tables go children first, one transaction each; a soft-deleted parent still referenced by a
    row that stays (live, or deleted more recently) is kept, so no foreign key breaks.
    Returns the rows deleted per table, children first.
    """
    cutoff = models.utcnow() - age
    tables = models.tables_children_first()
    counts = {}
    for table in tables:
        if table is models.RpcCall.__table__:
            counts[table.name] = trim_delivery_records(engine, age)
            continue
        where = [table.c.deleted == sa.true(), table.c.deleted_at < cutoff]
        for child in tables:
            for fk in child.foreign_keys:
                if fk.column.table is table:
                    where.append(~sa.exists().where(fk.parent == fk.column))
        with engine.begin() as conn:
            counts[table.name] = conn.execute(sa.delete(table).where(*where)).rowcount
    return counts
