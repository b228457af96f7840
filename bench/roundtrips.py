"""Database round trips per call: statements, connection pings and commits of each operation.

Unlike timings, these counts do not depend on the machine's load: they say how much of a call's
time is talking to the database. Counted in-process (``LocalAPI``, the worker's dispatcher and
handlers, same engine options) with SQLAlchemy events, a counting ``do_ping`` and a counting
``records.PreparedRead.rows`` (the hot reads run on the driver's cursor, past SQLAlchemy's events).
In-process calls carry no message id, so a write's ``rpc_calls`` insert (one statement more in the
daemon) is not counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event

from bench import workloads
from dbworker.api import LocalAPI
from dbworker.core import records
from dbworker.session import make_engine


def count(data: workloads.Data, calls: int = 20) -> dict[str, dict[str, float]]:
    """Return, per operation, the mean statements, pool pings and commits of one call."""
    engine = make_engine(data.url, max_pool_size=2)
    seen: Counter[str] = Counter()
    event.listen(engine, "before_cursor_execute", lambda *_a, **_k: seen.update(["statements"]))
    event.listen(engine, "commit", lambda *_a: seen.update(["commits"]))
    ping = engine.dialect.do_ping

    def counting_ping(connection: Any) -> bool:
        seen.update(["pings"])
        return ping(connection)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    rows = records.PreparedRead.rows

    def counting_rows(read: records.PreparedRead, conn: Any, params: dict[str, Any]) -> Any:
        seen.update(["statements"])
        return rows(read, conn, params)

    records.PreparedRead.rows = counting_rows  # type: ignore[method-assign]
    ops = workloads.dbworker_calls(LocalAPI.from_engine(engine), data)
    out = {}
    try:
        for name, call in ops.items():
            call(0, 0)  # the first call of an operation may differ (quota usage rows are created)
            seen.clear()
            for i in range(calls):
                call(0, i + 1)
            out[name] = {key: round(seen[key] / calls, 2) for key in ("statements", "pings", "commits")}
    finally:
        records.PreparedRead.rows = rows  # type: ignore[method-assign]
        engine.dispose()
    return out
