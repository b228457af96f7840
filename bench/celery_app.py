"""The Celery peer: tasks doing dbworker's ``volume_get`` read in plain SQLAlchemy (no dbworker code).

Written as a Celery user would write it: one module-level pooled engine, the statements of
:mod:`bench.peer_sql` built once at import, one transaction per task. ``volume_get`` returns the same
reply as dbworker's (``bench.check`` proves it); ``volume_row`` is the simpler one-row read.

Both the worker (``python -m celery -A bench.celery_app worker --pool threads``) and the benchmark
process import this module; they read ``BENCH_BROKER_URL``, ``BENCH_CELERY_QUEUE`` and
``BENCH_DATABASE_URL`` from the environment. Replies come back through the ``rpc://`` result backend,
i.e. over the same RabbitMQ, as dbworker's do.
"""

from __future__ import annotations

import os
import sys

from celery import Celery

from bench import peer_sql

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "amqp://"), backend="rpc://")
app.conf.update(
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
)

engine = peer_sql.make_engine(os.environ.get("BENCH_DATABASE_URL", "sqlite://"))


@app.task(name="bench.volume_get")
def volume_get(ctxt: dict, volume_id: str) -> dict:
    """The volume with its metadata and type, as dbworker's ``volume_get`` replies to a user."""
    with engine.begin() as conn:
        return peer_sql.volume_get(conn, volume_id, ctxt["project_id"])


@app.task(name="bench.volume_row")
def volume_row(ctxt: dict, volume_id: str) -> dict:
    """The volume's own row only."""
    with engine.begin() as conn:
        return peer_sql.volume_row(conn, volume_id, ctxt["project_id"])


@app.task(name="bench.ping")
def ping() -> str:
    return "pong"


@app.task(name="bench.dbworker_loaded")
def dbworker_loaded() -> list[str]:
    """The dbworker modules imported in the worker process (the check expects none)."""
    return sorted(name for name in sys.modules if name.split(".")[0] == "dbworker")
