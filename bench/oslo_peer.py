"""The bare oslo.messaging peer: an RPC server doing dbworker's ``volume_get`` read in plain SQLAlchemy.

``python -m bench.oslo_peer URL TOPIC THREADS DATABASE_URL`` runs until SIGTERM, with the same
threading executor and THREADS threads as the echo server (:mod:`bench.echo_server`). It is what an
oslo.messaging user would write for this one read: an endpoint, one pooled engine, the statements of
:mod:`bench.peer_sql` built once, one transaction per call. It imports no dbworker code.
"""

from __future__ import annotations

import sys
from typing import Any

import oslo_messaging

from bench import peer_sql
from bench.echo_server import serve


class Volumes:
    """``volume_get`` (dbworker's reply for a user context) and ``volume_row`` (one row)."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self, database_url: str, threads: int) -> None:
        self.engine = peer_sql.make_engine(database_url, pool_size=threads + 2)

    def volume_get(self, ctxt: dict[str, Any], volume_id: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            return peer_sql.volume_get(conn, volume_id, ctxt["project_id"])

    def volume_row(self, ctxt: dict[str, Any], volume_id: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            return peer_sql.volume_row(conn, volume_id, ctxt["project_id"])

    def dbworker_loaded(self, ctxt: dict[str, Any]) -> list[str]:
        """The dbworker modules imported in this process (the check expects none)."""
        return sorted(name for name in sys.modules if name.split(".")[0] == "dbworker")


def main(url: str, topic: str, threads: str, database_url: str) -> None:
    serve(url, topic, "bench-oslo-peer", int(threads), [Volumes(database_url, int(threads))])


if __name__ == "__main__":
    main(*sys.argv[1:5])
