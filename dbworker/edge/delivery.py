"""Delivery guarantees, in one module: at-most-once writes, deadlines and idempotency keys.

oslo.messaging acks a request before its call runs, so RabbitMQ delivers a message again only
when that ack was lost (a dropped connection at the wrong moment): the first delivery's call may
then have committed already. And a caller that timed out cannot tell whether its write landed. So:

* :class:`BoundedRPCServer <dbworker.edge.flow_control.BoundedRPCServer>` runs each call inside
  :func:`delivered`, which makes the message's :class:`Delivery` (its unique id, if usable, and
  whether its reply is dropped) the call's :func:`current_delivery`.
* A call's *terms* come in its RPC context (:class:`CallTerms`): ``deadline``, the time (seconds
  since the epoch, UTC) after which its caller no longer waits, and, for a write, an
  ``idempotency_key`` the caller keeps across its retries of one logical call. The dispatcher
  does not start a call whose deadline (plus the clock-skew allowance) has passed: nothing runs,
  and no reply is sent.
* A write call's record is the first statement of its transaction (the dispatcher's
  :class:`~dbworker.core.hooks.CallRecord`), a row of ``rpc_calls`` that commits or rolls back
  with the call's writes. With a key, :class:`KeyRecord` inserts the key and the digest of the
  call (function, arguments, caller), and keeps the call's outcome, its JSON reply or its typed
  error, in the same row: a call with a key already kept is not run again, and is answered with
  that outcome (:class:`KeyTaken`); a delivery still running holds the key, and the insert waits
  for its outcome (a row lock, on PostgreSQL and MariaDB). A key used again for another call is
  refused (``IdempotencyKeyReused``). Without a key, :class:`MessageRecord` inserts the message's
  id: a redelivery of a committed write gets :class:`Redelivered`, is not run, and gets no reply
  (its caller had the first reply, or timed out, and any reply now would be a guess).
* Records only matter while a caller or the broker may send the call again: each worker process
  runs a :class:`RecordTrimmer` thread that deletes the ones older than ``[dbworker]
  delivery_record_age``, and ``dbworker-manage db purge`` uses the same
  :func:`trim_delivery_records`. A key sent again after its record was deleted runs again.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from oslo_db import exception as db_exc
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.hooks import NotRun
from dbworker.core.records import PreparedWrite
from dbworker.models import RpcCall, utcnow
from dbworker.protocol.calls import DEADLINE_KEY, IDEMPOTENCY_KEY, use_slave
from dbworker.protocol.wire import Primitive

LOG = logging.getLogger(__name__)

#: The longest message unique id recorded; oslo's are 32 hex digits. A message without one (or
#: with another value, or not printable ASCII) is run without a record.
MAX_UNIQUE_ID = 36
#: The longest idempotency key a caller may send (dbworker.client sends 32 hex digits).
MAX_KEY = 64
#: A key's record is stored under this prefix: a caller's key never collides with a message id.
KEY_PREFIX = "key:"
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


class KeyTaken(NotRun):
    """A write call whose idempotency key is kept: not run again; :meth:`KeyRecord.answer` gives
    the outcome its caller is answered with."""

    counter = "calls_answered_from_record"
    log_level = logging.INFO

    def __init__(self, record: KeyRecord) -> None:
        super().__init__(f"idempotency key {record.key} is kept; answered with its recorded outcome")
        self.record = record


_TABLE = RpcCall.__table__
#: The record statements every write call runs, on the call's driver cursor (records.PreparedWrite),
#: prepared on the server: each finds its row by primary key.
_INSERT_MESSAGE = PreparedWrite(
    insert(_TABLE).values({c: sa.bindparam(c) for c in ("unique_id", "method", "created_at")}),
    server_prepared=True,
)
_INSERT_KEY = PreparedWrite(
    insert(_TABLE).values({c: sa.bindparam(c) for c in ("unique_id", "method", "created_at", "digest")}),
    server_prepared=True,
)
_KEEP_OUTCOME = PreparedWrite(
    update(_TABLE).where(_TABLE.c.unique_id == sa.bindparam("key")).values(outcome=sa.bindparam("outcome")),
    server_prepared=True,
)
_READ_OUTCOME = select(_TABLE.c.digest, _TABLE.c.outcome).where(_TABLE.c.unique_id == sa.bindparam("key"))


class Delivery:
    """One broker delivery of a call: its message's unique id (None if it had none usable, see
    :func:`usable_id`) and whether the server drops the call's reply."""

    def __init__(self, unique_id: str | None) -> None:
        self.unique_id = unique_id
        self.drop_reply = False


class MessageRecord:
    """A write call's record by its message's unique id (a call without an idempotency key)."""

    keeps_outcome = False

    def __init__(self, unique_id: str) -> None:
        self.unique_id = unique_id

    def begin(self, tx: Session | Connection, name: str) -> None:
        """Insert the call's ``rpc_calls`` record.

        Raises:
            Redelivered: a committed call holds the message's id.
        """
        try:
            _INSERT_MESSAGE.run(tx, {"unique_id": self.unique_id, "method": name, "created_at": utcnow()})
        except db_exc.DBDuplicateEntry:
            raise Redelivered(self.unique_id) from None

    def keep(
        self, tx: Session | Connection, reply: Primitive, error: exception.CinderException | None
    ) -> None:
        """Nothing: a message's record keeps no outcome."""


class KeyRecord:
    """A write call's record by its caller's idempotency key, with the call's outcome.

    ``digest`` identifies the call (:func:`call_digest`): a key kept for another digest is refused.
    """

    keeps_outcome = True

    def __init__(self, key: str, digest: str) -> None:
        self.key, self.digest = key, digest
        self.unique_id = KEY_PREFIX + key

    def begin(self, tx: Session | Connection, name: str) -> None:
        """Insert the key's record (waits while another delivery of the key runs).

        Raises:
            KeyTaken: a committed call kept the key.
        """
        record = {"unique_id": self.unique_id, "method": name, "created_at": utcnow(), "digest": self.digest}
        try:
            _INSERT_KEY.run(tx, record)
        except db_exc.DBDuplicateEntry:
            raise KeyTaken(self) from None

    def keep(
        self, tx: Session | Connection, reply: Primitive, error: exception.CinderException | None
    ) -> None:
        """Store the call's outcome in its record, in the call's transaction."""
        if error is None:
            outcome: dict[str, Any] = {"reply": reply}
        else:
            outcome = {"error": type(error).__name__, "message": error.msg, "kwargs": error.kwargs}
        _KEEP_OUTCOME.run(tx, {"key": self.unique_id, "outcome": json.dumps(outcome)})

    def answer(self, engine: Engine) -> Primitive:
        """Return the reply kept under the key, or raise the typed error kept there.

        Raises:
            IdempotencyKeyReused: the key was kept for another call (function, arguments, caller).
            DBUnavailable: the record is gone (deleted since): the caller may send the call again.
            CinderException: the call's kept error.
        """
        with engine.connect() as conn:
            row = conn.execute(_READ_OUTCOME, {"key": self.unique_id}).first()
        if row is None or row.outcome is None:
            LOG.warning("idempotency key %s: its record is gone; the caller may retry", self.key)
            raise exception.DBUnavailable()
        if row.digest != self.digest:
            raise exception.IdempotencyKeyReused(key=self.key)
        outcome = json.loads(row.outcome)
        if "error" not in outcome:
            return outcome["reply"]
        raise _rebuild_error(outcome["error"], outcome["message"], outcome["kwargs"])


def _rebuild_error(name: str, message: str, kwargs: dict[str, Any]) -> exception.CinderException:
    """The typed error a record kept, rebuilt with its message and kwargs as first raised."""
    cls = getattr(exception, name, None)
    if not (isinstance(cls, type) and issubclass(cls, exception.CinderException)):
        cls = exception.CinderException  # a class since removed from dbworker.exception
    return cls(message, **kwargs)


@dataclass(frozen=True)
class CallTerms:
    """A call's deadline, idempotency key and replica consent, from its RPC context
    (``deadline``, ``idempotency_key``: absent, None; ``use_slave``: absent, False)."""

    deadline: float | None = None
    key: str | None = None
    use_replica: bool = False

    @classmethod
    def from_context(cls, ctxt: Mapping[str, Any]) -> CallTerms:
        """Read the terms from the RPC context dict.

        Raises:
            InvalidInput: ``deadline`` is not a finite number, ``idempotency_key`` is not a
                string of 1 to :data:`MAX_KEY` printable ASCII characters, or ``use_slave`` is
                not a boolean.
        """
        deadline, key = ctxt.get(DEADLINE_KEY), ctxt.get(IDEMPOTENCY_KEY)
        if deadline is not None:
            if (
                isinstance(deadline, bool)
                or not isinstance(deadline, int | float)
                or not math.isfinite(deadline)
            ):
                raise exception.InvalidInput(reason="context deadline must be seconds since the epoch")
            deadline = float(deadline)
        if key is not None and not (
            isinstance(key, str) and 0 < len(key) <= MAX_KEY and key.isascii() and key.isprintable()
        ):
            raise exception.InvalidInput(
                reason=f"context idempotency_key must be 1 to {MAX_KEY} printable ASCII characters"
            )
        return cls(deadline, key, use_slave(ctxt))

    def record(
        self, name: str, ctx: RequestContext, kwargs: Mapping[str, Any], delivery: Delivery | None
    ) -> KeyRecord | MessageRecord | None:
        """The record a write call makes (the dispatcher makes none for a read): by the key if the
        call has one, else by the delivery's message id if usable, else none."""
        if self.key is not None:
            return KeyRecord(self.key, call_digest(name, ctx, kwargs))
        if delivery is not None and delivery.unique_id is not None:
            return MessageRecord(delivery.unique_id)
        return None


def call_digest(name: str, ctx: RequestContext, kwargs: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a call: its function, its wire arguments, and who calls it (the
    context's identity and view; not its request ids)."""
    identity = [
        ctx.user_id,
        ctx.project_id,
        ctx.is_admin,
        sorted(ctx.roles),
        ctx.read_deleted,
        ctx.quota_class,
    ]
    text = json.dumps([name, kwargs, identity], sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


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
    """Delete the ``rpc_calls`` records (messages' and keys') created more than
    ``max(age, MIN_RECORD_AGE)`` ago.

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
