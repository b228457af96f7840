"""At-most-once delivery of write calls: the whole guarantee, in one module.

oslo.messaging acks a request before its call runs, so RabbitMQ delivers a message again only
when that ack was lost (a dropped connection at the wrong moment): the first delivery's call may
then have committed already. A write must not run twice, so:

* :class:`BoundedRPCServer <dbworker.edge.flow_control.BoundedRPCServer>` runs each call inside
  :func:`delivered`, which makes the message's :class:`Delivery` (its unique id, if usable) the
  call's :func:`current_delivery`; the endpoint hands :meth:`Delivery.record` to the dispatcher as
  the first step of a write call's transaction.
* :meth:`Delivery.record` inserts the message's id into ``rpc_calls`` first thing in that
  transaction. The record commits or rolls back with the call's writes: a call that wrote nothing
  (it failed, or a deadlock re-runs it) leaves no record, and a re-run inserts it again. A
  delivery whose id a committed call recorded gets :class:`Redelivered` (the key is taken; on
  PostgreSQL and MariaDB a delivery still running holds it, and the insert waits for its outcome):
  nothing runs, and the server sends no reply (the caller had the first delivery's reply, or timed
  out, and any reply now would be a guess).
* Records only matter while the broker may deliver the message again (seconds after a lost ack; a
  call message expires with its caller's timeout): each worker process runs a
  :class:`RecordTrimmer` thread that deletes the ones older than ``[dbworker]
  delivery_record_age``, and ``dbworker-manage db purge`` uses the same
  :func:`trim_delivery_records`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from oslo_db import exception as db_exc
from sqlalchemy import Connection, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dbworker.core.dispatch import NotRun
from dbworker.models import RpcCall, utcnow

LOG = logging.getLogger(__name__)

#: The longest message unique id recorded (``rpc_calls.unique_id``); oslo's are 32 hex digits. A
#: message without one (or with another value, or not printable ASCII) is run without a record.
MAX_UNIQUE_ID = 36
#: The youngest records anything deletes (``db purge`` too): far longer than a redelivery takes.
MIN_RECORD_AGE = timedelta(hours=1)
#: Records deleted per transaction: short transactions, short locks, while calls keep inserting.
TRIM_BATCH = 1000


class Redelivered(NotRun):
    """A redelivered message whose write call already committed (or is committing): the call was
    not run again, and its delivery sends no reply."""

    counter = "redeliveries_dropped"

    def __init__(self, unique_id: str) -> None:
        super().__init__(
            f"message {unique_id} was delivered again after its call committed; not run again, no reply sent"
        )
        self.unique_id = unique_id


_INSERT_RECORD = insert(RpcCall)


class Delivery:
    """One broker delivery of a call: its message's unique id (None if it had none usable, see
    :func:`usable_id`) and whether the server drops the call's reply."""

    def __init__(self, unique_id: str | None) -> None:
        self.unique_id = unique_id
        self.drop_reply = False

    def record(self, tx: Session | Connection, method: str) -> None:
        """The first step of a write call's transaction: insert the call's ``rpc_calls`` record.

        Raises:
            Redelivered: a committed call holds the key (the reply is then dropped).
        """
        try:
            record = {"unique_id": self.unique_id, "method": method, "created_at": utcnow()}
            tx.execute(_INSERT_RECORD, record)
        except db_exc.DBDuplicateEntry:
            self.drop_reply = True
            raise Redelivered(str(self.unique_id)) from None


_DELIVERY: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("dbworker_delivery", default=None)


def current_delivery() -> Delivery | None:
    """Return the :class:`Delivery` of the call running on this thread, None outside one."""
    return _DELIVERY.get()


@contextlib.contextmanager
def delivered(unique_id: Any) -> Iterator[Delivery]:
    """Run the block as the call of a message with ``unique_id``; yield its :class:`Delivery`."""
    delivery = Delivery(usable_id(unique_id))
    token = _DELIVERY.set(delivery)
    try:
        yield delivery
    finally:
        _DELIVERY.reset(token)


def usable_id(unique_id: Any) -> str | None:
    """Return the message's unique id if it can be recorded (see :data:`MAX_UNIQUE_ID`), else None."""
    if isinstance(unique_id, str) and 0 < len(unique_id) <= MAX_UNIQUE_ID:
        return unique_id if unique_id.isascii() and unique_id.isprintable() else None
    return None


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
