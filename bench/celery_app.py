"""The Celery comparison: a task doing dbworker's volume_get read (same handler, same reply).

Both the worker (``python -m celery -A bench.celery_app worker --pool threads``) and the benchmark
process import this module; they read ``BENCH_BROKER_URL``, ``BENCH_CELERY_QUEUE`` and
``BENCH_DATABASE_URL`` from the environment. Replies come back through the ``rpc://`` result backend,
i.e. over the same RabbitMQ, as dbworker's do.
"""

from __future__ import annotations

import os
import threading

from celery import Celery

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

_dispatcher = None
_lock = threading.Lock()


def _get_dispatcher():
    global _dispatcher
    with _lock:
        if _dispatcher is None:
            from dbworker.dispatch import Dispatcher
            from dbworker.handlers import build_registry
            from dbworker.session import make_engine, make_sessionmaker

            engine = make_engine(os.environ["BENCH_DATABASE_URL"], max_pool_size=18)
            _dispatcher = Dispatcher(build_registry(), make_sessionmaker(engine))
        return _dispatcher


@app.task(name="bench.volume_get")
def volume_get(ctxt: dict, volume_id: str) -> dict:
    from dbworker.context import RequestContext

    return _get_dispatcher().call("volume_get", RequestContext.from_dict(ctxt), {"volume_id": volume_id})


@app.task(name="bench.ping")
def ping() -> str:
    return "pong"
