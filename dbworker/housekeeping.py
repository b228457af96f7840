"""Trimming ``rpc_calls``: the delivery records that make a redelivered write call a no-op.

Every write call that arrives over RPC leaves one record (``dbworker.dispatch``); a record is only
useful while the broker may still deliver its message again, which happens within seconds of a
lost ack (and an RPC call message expires with its caller's timeout). Each worker process runs a
:class:`RecordTrimmer` thread that deletes the records older than ``[dbworker]
delivery_record_age`` every ``delivery_record_trim_interval`` seconds, in small transactions, so
the table stays small without an operator's ``dbworker-manage db purge``.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbworker.models import RpcCall, utcnow

LOG = logging.getLogger(__name__)

#: The youngest records anything deletes (``db purge`` too): far longer than a redelivery takes.
MIN_RECORD_AGE = timedelta(hours=1)
#: Records deleted per transaction: short transactions, short locks, while calls keep inserting.
TRIM_BATCH = 1000


def trim_delivery_records(
    engine: Engine, age: timedelta, *, batch: int = TRIM_BATCH, stop: threading.Event | None = None
) -> int:
    """Delete the ``rpc_calls`` records created more than ``max(age, MIN_RECORD_AGE)`` ago.

    Works in transactions of at most ``batch`` records (select their keys, then delete those keys;
    MySQL has no ``LIMIT`` in an ``IN`` subquery), until none is left or ``stop`` is set.
    Returns the number of records deleted. Raises what the database raises.
    """
    cutoff = utcnow() - max(age, MIN_RECORD_AGE)
    table = RpcCall.__table__
    deleted = 0
    while stop is None or not stop.is_set():
        with engine.begin() as conn:
            keys = (
                conn.execute(
                    sa.select(table.c.unique_id)
                    .where(table.c.created_at < cutoff)
                    .order_by(table.c.created_at)
                    .limit(batch)
                )
                .scalars()
                .all()
            )
            if keys:
                where = (table.c.unique_id.in_(keys), table.c.created_at < cutoff)
                deleted += conn.execute(sa.delete(table).where(*where)).rowcount
        if len(keys) < batch:
            break
    return deleted


class RecordTrimmer:
    """A daemon thread that runs :func:`trim_delivery_records` every ``interval`` seconds.

    The first run comes after a random part of ``interval``, so the worker processes of a
    deployment do not all trim at once. A failed run (database down, a deadlock with another
    worker's trim) is logged and the next one comes as usual; it never affects the calls.
    """

    def __init__(self, engine: Engine, *, age: timedelta, interval: float) -> None:
        self.engine, self.age, self.interval = engine, age, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbworker-record-trimmer", daemon=True)

    def start(self) -> None:
        """Start the thread (a no-op when ``interval`` is 0: trimming is left to ``db purge``)."""
        if self.interval > 0:
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: it ends between two batches (waits at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = random.uniform(0, self.interval)
        while not self._stop.wait(delay):
            delay = self.interval
            try:
                deleted = trim_delivery_records(self.engine, self.age, stop=self._stop)
            except Exception as err:  # the next run retries; never take the worker down
                LOG.warning("Trimming rpc_calls failed (%s); retrying in %ss", type(err).__name__, delay)
                continue
            if deleted:
                LOG.info("Trimmed %d rpc_calls records older than %s", deleted, max(self.age, MIN_RECORD_AGE))
