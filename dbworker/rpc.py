"""The oslo.messaging edge of the worker: endpoints generated from the registry, a bounded server.

Only this module, ``cmd.py`` and the client speak oslo.messaging. The endpoint has one attribute per
registered handler (no hand-written method per function); every call goes to the dispatcher.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_messaging._drivers.base import Listener
from oslo_messaging.rpc.server import RPCServer

from dbworker import exception
from dbworker.catalogue import API_VERSION
from dbworker.context import RequestContext
from dbworker.dispatch import Dispatcher, Redelivered
from dbworker.logcontext import call_scope
from dbworker.wire import Primitive

LOG = logging.getLogger(__name__)

#: The longest message unique id the dispatcher records (``rpc_calls.unique_id``); oslo's are
#: 32 hex digits. A message without one (or with another value, or not printable ASCII) is run
#: without the record.
MAX_UNIQUE_ID = 36


class Delivery:
    """The broker delivery whose call runs on this thread: its message's unique id (oslo's
    ``_unique_id``, None if it had none usable) and whether its reply is dropped."""

    def __init__(self, unique_id: str | None) -> None:
        self.unique_id = unique_id
        self.drop_reply = False


#: Set by :meth:`BoundedRPCServer._process_incoming` around each call (one executor thread each).
_DELIVERY: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("dbworker_delivery", default=None)


class DBWorkerEndpoint:
    """The RPC endpoint: one method per registered handler, named like it, plus ``health``.

    Business errors (``CinderException`` with ``expected``) are raised through
    ``ExpectedException`` so the server logs them at debug level without a traceback. A call
    runs with its delivery's message unique id (see :class:`BoundedRPCServer`); a redelivery of
    a write call that already committed is not run and gets no reply (the dispatcher logs it).
    """

    target = oslo_messaging.Target(version=API_VERSION)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        for name in dispatcher.registry:
            setattr(self, name, functools.partial(self._call, name))

    def health(self, ctxt: Any) -> Primitive:
        """Return the worker's health (any context, even an empty one)."""
        return self._dispatcher.health()

    def _call(self, name: str, ctxt: Any, /, **kwargs: Any) -> Primitive:
        delivery = _DELIVERY.get()
        try:
            ctx = RequestContext.from_dict(ctxt)
            with call_scope(ctx):
                return self._dispatcher.call(
                    name, ctx, kwargs, delivery_id=delivery.unique_id if delivery is not None else None
                )
        except Redelivered:
            assert delivery is not None  # only a delivery's id can be found recorded
            delivery.drop_reply = True
            raise oslo_messaging.ExpectedException() from None  # logged at debug; never sent
        except exception.CinderException as err:
            if err.expected:
                raise oslo_messaging.ExpectedException() from None
            raise


class BaseEndpoint:
    """nova's ``baseapi``: ``ping`` for liveness probes, in its own namespace."""

    target = oslo_messaging.Target(namespace="baseapi", version="1.0")

    def ping(self, ctxt: Any, arg: Any) -> dict[str, Any]:
        """Return ``{"service": "dbworker", "arg": arg}``."""
        return {"service": "dbworker", "arg": arg}


class SlotGate:
    """The free executor threads of one server: a request is accepted (acked) only by taking one.

    ``take`` never blocks (it runs on whichever thread drains the broker connection); ``wait_free``
    blocks the listener thread until a slot is free, so it asks the broker for a message only then.
    ``close`` makes ``take`` refuse everything from then on (stopping).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._closed = False
        self._cond = threading.Condition()

    def take(self) -> bool:
        """Take a free slot; False when none is free or the gate is closed."""
        with self._cond:
            if self._closed or self._free <= 0:
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        """Give a slot back (its call finished, or its message was dropped)."""
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def wait_free(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a free slot; True if one is free and the gate is open."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._free > 0, timeout)
            return not self._closed and self._free > 0

    def close(self) -> None:
        """Refuse every later ``take`` and wake ``wait_free``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _CountingList(list):
    """oslo's listener's ``incoming`` list, counting appends (appends happen under the
    connection lock; the listener thread only pops)."""

    appended = 0

    def append(self, item: Any) -> None:
        self.appended += 1
        super().append(item)


class _GatedDelivery:
    """The broker consumer's callback, in front of oslo's ``RpcAMQPListener``.

    oslo acks a request as soon as its callback runs, on whichever thread drains the connection (the
    listener's, or the heartbeat thread's while the listener waits for a slot). Here a delivery is
    passed on (and so acked) only if it takes a free slot; otherwise it is held, unacked, until a
    slot frees: the broker still owns it and redelivers it if this process dies. The broker pushes
    at most ``rabbit_qos_prefetch_count`` unacked deliveries per consumer, which bounds the held
    ones. Once closed (stopping), deliveries and held ones are requeued for the other workers.
    Every method runs with the connection lock held (kombu is not thread-safe).
    """

    def __init__(self, listener: Any, gate: SlotGate) -> None:
        self._listener = listener
        self._gate = gate
        self._incoming = listener.incoming = _CountingList(listener.incoming)
        self._held: collections.deque[Any] = collections.deque()
        self.closed = False

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def __call__(self, message: Any) -> None:
        if self.closed:
            _requeue(message)
        elif self._held or not self._gate.take():
            self._held.append(message)
        else:
            self._accept(message)

    def accept_held(self) -> None:
        """Accept held deliveries, oldest first, while slots are free."""
        while self._held and self._gate.take():
            self._accept(self._held.popleft())

    def close(self) -> None:
        """Requeue the held deliveries and every later one."""
        self.closed = True
        while self._held:
            _requeue(self._held.popleft())

    def _accept(self, message: Any) -> None:
        before = self._incoming.appended
        try:
            self._listener(message)  # acks, then queues it for the listener thread
        except Exception:
            if not _acknowledged(message):
                raise  # the driver rejects it: valid for a delivery not yet acked
            # oslo acked it, then failed to unpack it (a context nested too deep for its deepcopy):
            # the driver would reject the acked delivery, which makes the broker close the channel
            # and leaves this worker's consumer dead. Drop it here instead (the caller times out).
            LOG.exception("Dropped a request oslo.messaging acked but could not unpack")
        finally:
            if self._incoming.appended == before:  # oslo dropped it (duplicate, failed ack)
                self._gate.release()


def _acknowledged(message: Any) -> bool:
    raw = getattr(message, "_raw_message", None)
    return bool(getattr(raw, "acknowledged", False))


def _requeue(message: Any) -> None:
    try:
        message.requeue()
    except Exception:  # the channel is gone: the broker redelivers unacked messages anyway
        LOG.warning("Could not requeue a request", exc_info=True)


class BoundedListener(Listener):
    """Replaces oslo's ``PollStyleListenerAdapter``: polls the broker only while a slot is free.

    The driver-level pieces it uses (the rabbit connection's ``_consumers``, ``_connection_lock``,
    ``connection``, the listener's ``incoming``) are private to oslo.messaging; its major version is
    pinned and ``tests/integration/test_daemon.py`` covers this class on a real RabbitMQ.
    """

    def __init__(self, poller: Any, gate: SlotGate, on_death: Callable[[], None] | None = None) -> None:
        super().__init__(batch_size=1, batch_timeout=None, prefetch_size=poller.prefetch_size)
        self._poller = poller
        self._gate = gate
        self._on_death = on_death
        self._dead = False
        self._connection = getattr(poller.conn, "connection", poller.conn)  # rabbit Connection
        self._delivery = _GatedDelivery(poller, gate)
        for consumer in self._connection._consumers:
            if consumer.callback is poller:
                consumer.callback = self._delivery
        self._running = False
        self._thread = threading.Thread(target=self._run, name="dbworker-listener", daemon=True)

    def start(self, on_incoming_callback: Callable[[list[Any]], None]) -> None:
        super().start(on_incoming_callback)
        self._running = True
        self._thread.start()

    def _run(self) -> None:
        try:
            self._consume()
        except Exception:
            # The driver gave up (e.g. a broker channel it cannot re-open): this listener will not
            # take another request. A worker that stays up but deaf would hide that, so say so
            # and let the owner react (the daemon ends the worker; its master starts a new one).
            LOG.critical("The broker listener stopped taking requests", exc_info=True)
            self._dead = True
            if self._on_death is not None:
                self._on_death()

    def _consume(self) -> None:
        while self._running:
            if self._gate.wait_free(timeout=1.0):
                if self._delivery.holding:
                    with self._connection._connection_lock:
                        self._delivery.accept_held()
                # bounded, so deliveries held meanwhile (see _GatedDelivery) are taken within 1 s
                self._hand_over(self._poller.poll(timeout=1.0, batch_size=1))
        while self._hand_over(self._poller.poll(batch_size=1)):  # accepted before the stop
            pass

    def _hand_over(self, batch: list[Any] | None) -> bool:
        if not batch:
            return False
        callback = self.on_incoming_callback
        assert callback is not None
        try:
            callback(batch)
        except Exception:
            LOG.exception("Could not hand a request to a worker thread")
        return True

    def stop(self) -> None:
        """Stop taking requests; those already accepted are handed over before this returns.

        Then the consumers are cancelled, so the broker stops delivering to this worker, and the
        deliveries it had pushed but this worker had not accepted are requeued for the other
        workers. Without this, the heartbeat thread would keep draining (and oslo acking)
        deliveries while the running calls finish, and they would be lost when the process exits.
        """
        self._running = False
        with self._connection._connection_lock:
            self._delivery.close()
        self._gate.close()
        if not self._dead:  # oslo's stop waits for its poll loop, which a dead listener left
            self._poller.stop()
        self._thread.join()
        self._cancel_consumers()
        super().stop()

    def _cancel_consumers(self) -> None:
        connection = self._connection
        try:
            with connection._connection_lock:
                for consumer, tag in list(connection._consumers.items()):
                    consumer.cancel(tag=tag)
                for _ in range(max(self.prefetch_size, 1) + 8):  # bounded: at most prefetch pushed
                    connection.connection.drain_events(timeout=0.05)
        except TimeoutError:
            pass  # nothing more had been pushed
        except Exception:
            LOG.warning("Could not cancel the broker consumers; the broker requeues on close", exc_info=True)

    def cleanup(self) -> None:
        self._poller.cleanup()


class BoundedRPCServer(RPCServer):
    """An RPC server that accepts a request from the broker only when a worker thread is free.

    oslo.messaging acks a request on receipt and queues it for an unbounded executor, so a plain
    server drains the whole queue into memory and a crash loses all of it (oslo-notes §2.9). Here
    every accepted (acked) request holds one of ``pool_size`` slots until its reply is sent
    (:class:`BoundedListener`, :class:`_GatedDelivery`), so a SIGKILL loses at most the calls that
    were running, and the backlog stays on the broker for the other workers.

    ``stop()`` stops taking requests, cancels the broker consumers and requeues what the broker had
    already pushed; ``wait()`` then finishes and answers the running calls.
    """

    def __init__(
        self, *args: Any, pool_size: int, on_listener_death: Callable[[], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pool_size = pool_size
        self._gate = SlotGate(pool_size)
        self._on_listener_death = on_listener_death

    def start(self, override_pool_size: int | None = None) -> None:
        """Start consuming with as many executor threads as there are slots."""
        super().start(override_pool_size=override_pool_size or self._pool_size)

    # oslo's ordered-task runner finds its states by this attribute; the override must keep it.
    start._ordered = True  # type: ignore[attr-defined]

    def _create_listener(self) -> BoundedListener:
        adapter = super()._create_listener()
        self._gate = SlotGate(self._pool_size)
        return BoundedListener(adapter._poll_style_listener, self._gate, self._on_listener_death)

    def _on_incoming(self, incoming: list[Any]) -> None:
        gate = self._gate  # the message holds one of its slots since it was accepted
        try:
            future = self._work_executor.submit(self._process_incoming, incoming)
        except BaseException:
            gate.release()
            raise
        future.add_done_callback(lambda _f: gate.release())

    def _process_incoming(self, incoming: list[Any]) -> None:
        """Run oslo's handling of one request with its :class:`Delivery` set for the endpoint.

        A redelivered write call that already committed sends no reply: the caller had the first
        delivery's reply (oslo's reply waiter ignores a second one for the same ``msg_id``) or timed
        out, and any reply now would be a guess. The message's own ``reply`` is wrapped for that.
        """
        message = incoming[0]
        delivery = Delivery(_usable_id(getattr(message, "unique_id", None)))
        send = message.reply

        def reply(*args: Any, **kwargs: Any) -> None:
            if not delivery.drop_reply:
                send(*args, **kwargs)

        message.reply = reply
        token = _DELIVERY.set(delivery)
        try:
            super()._process_incoming(incoming)
        finally:
            _DELIVERY.reset(token)


def _usable_id(unique_id: Any) -> str | None:
    """The message's unique id if the dispatcher can record it (see :data:`MAX_UNIQUE_ID`)."""
    if isinstance(unique_id, str) and 0 < len(unique_id) <= MAX_UNIQUE_ID:
        return unique_id if unique_id.isascii() and unique_id.isprintable() else None
    return None


def get_transport(conf: cfg.ConfigOpts, url: str | None = None) -> oslo_messaging.Transport:
    """Return an RPC transport for ``url`` (default: ``[DEFAULT] transport_url``)."""
    return oslo_messaging.get_rpc_transport(conf, url=url)


def build_server(
    transport: oslo_messaging.Transport,
    dispatcher: Dispatcher,
    *,
    topic: str,
    host: str,
    pool_size: int,
    on_listener_death: Callable[[], None] | None = None,
) -> BoundedRPCServer:
    """Return a (not yet started) bounded RPC server for ``topic`` on ``host``.

    ``on_listener_death`` is called (on the listener thread) if the broker listener stops for
    good; without it the failure is only logged."""
    target = oslo_messaging.Target(topic=topic, server=host)
    endpoints = [DBWorkerEndpoint(dispatcher), BaseEndpoint()]
    rpc_dispatcher = oslo_messaging.RPCDispatcher(
        endpoints, serializer=None, access_policy=oslo_messaging.DefaultRPCAccessPolicy
    )
    return BoundedRPCServer(
        transport, target, rpc_dispatcher, pool_size=pool_size, on_listener_death=on_listener_death
    )
