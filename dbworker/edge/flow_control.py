"""Broker flow control: a call is taken from RabbitMQ only when a worker thread is free for it.

oslo.messaging acks a request on receipt and queues it for an unbounded executor, so a plain server
drains the whole queue into memory and a crash loses all of it. :class:`BoundedRPCServer` accepts
(acks) a request only by taking one of ``pool_size`` slots (:class:`SlotGate`), held until its
reply is sent; the backlog stays on the broker for every worker. Each call runs as its message's
:class:`~dbworker.edge.delivery.Delivery` (:func:`dbworker.edge.delivery.delivered`), and a reply the
delivery drops (a redelivered write) is not sent.

oslo.messaging has no public hook for this, so this module, and no other in dbworker, relies on
names private to oslo.messaging and kombu. They are listed below, and this list is the only one:
``tests/unit/test_oslo_private_names.py`` reads it and checks every line against the installed
libraries (``tests/integration/test_daemon.py`` runs this module on a real RabbitMQ).
Notation: ``module:Class.name(params)`` is a method called or overridden with those keyword
parameters; ``module:Class.name: type`` an attribute whose value has that type (a builtin type
has no module); ``module:Class`` a class subclassed. A module without a dot is in
``oslo_messaging._drivers``. "(assigned)" marks an attribute dbworker sets on the instance.

* ``base:Listener``: the base class of BoundedListener.
* ``base:Listener.__init__(batch_size, batch_timeout, prefetch_size)``: BoundedListener.__init__.
* ``base:Listener.start(on_incoming_callback)``: BoundedListener.start.
* ``base:Listener.on_incoming_callback: object``: set by start; BoundedListener._hand_over calls it.
* ``base:Listener.stop()``: BoundedListener.stop.
* ``oslo_messaging.rpc.server:RPCServer``: the base class of BoundedRPCServer.
* ``oslo_messaging.rpc.server:RPCServer.__init__(transport, target, dispatcher)``: build_server.
* ``oslo_messaging.rpc.server:RPCServer._create_listener()``: called by BoundedRPCServer's override.
* ``oslo_messaging.rpc.server:RPCServer._on_incoming(incoming)``: overridden by BoundedRPCServer.
* ``oslo_messaging.rpc.server:RPCServer._process_incoming(incoming)``: BoundedRPCServer's override
  calls it (ack, dispatch, ``message.reply``).
* ``oslo_messaging.rpc.server:RPCServer._work_executor: concurrent.futures:Executor``:
  BoundedRPCServer._on_incoming submits to it and releases the slot in a done callback.
* ``oslo_messaging.server:MessageHandlingServer.start(override_pool_size)``: BoundedRPCServer.start.
* ``oslo_messaging.server:MessageHandlingServer.start._ordered: bool``: oslo's ordered-task marker,
  which BoundedRPCServer.start keeps.
* ``base:PollStyleListenerAdapter._poll_style_listener: amqpdriver:RpcAMQPListener``: what
  ``_create_listener`` wraps; BoundedRPCServer._create_listener unwraps it.
* ``amqpdriver:RpcAMQPListener.prefetch_size: int``: BoundedListener.
* ``amqpdriver:RpcAMQPListener.conn: common:ConnectionContext``: BoundedListener.__init__.
* ``amqpdriver:RpcAMQPListener.incoming: list`` (assigned): _GatedDelivery replaces it by a
  _CountingList (``__call__`` appends to it, ``poll`` pops from it).
* ``amqpdriver:RpcAMQPListener.__call__(message)``: _GatedDelivery._accept (acks, then queues).
* ``amqpdriver:RpcAMQPListener.poll(timeout, batch_size)``: BoundedListener._consume.
* ``amqpdriver:RpcAMQPListener.stop()``: BoundedListener.stop.
* ``amqpdriver:RpcAMQPListener.cleanup()``: BoundedListener.cleanup.
* ``common:ConnectionContext.connection: impl_rabbit:Connection``: BoundedListener.__init__.
* ``impl_rabbit:Connection._consumers: dict``: consumer to tag; BoundedListener swaps callbacks
  and cancels the consumers.
* ``impl_rabbit:Connection._connection_lock: impl_rabbit:DummyConnectionLock``: BoundedListener
  holds it (``with``) around _GatedDelivery's methods and the consumers' cancel.
* ``impl_rabbit:Connection.connection: kombu.connection:Connection``: BoundedListener drains it.
* ``kombu.connection:Connection.drain_events(timeout)``: BoundedListener._cancel_consumers; an
  idle connection raises TimeoutError.
* ``impl_rabbit:Consumer.callback: amqpdriver:RpcAMQPListener`` (assigned): BoundedListener
  replaces it by a _GatedDelivery.
* ``impl_rabbit:Consumer.cancel(tag)``: BoundedListener._cancel_consumers.
* ``impl_rabbit:RabbitMessage.requeue()``: _requeue.
* ``impl_rabbit:RabbitMessage._raw_message: kombu.message:Message``: _acknowledged.
* ``kombu.message:Message.acknowledged: bool``: _acknowledged.
* ``amqpdriver:AMQPIncomingMessage.unique_id: str``: BoundedRPCServer._process_incoming.
* ``amqpdriver:AMQPIncomingMessage.reply(reply, failure)`` (assigned): wrapped per message by
  BoundedRPCServer._process_incoming, to drop a redelivery's reply.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from oslo_messaging._drivers.base import Listener
from oslo_messaging.rpc.server import RPCServer

from dbworker.edge.delivery import delivered

# The logger these lines had in dbworker.edge.rpc, kept so operators' log filters still match them.
LOG = logging.getLogger("dbworker.edge.rpc")


class SlotGate:
    """The free executor threads of one server: a request is accepted (acked) only by taking one.

    ``take`` never blocks (it runs on whichever thread drains the broker connection); ``wait_free``
    blocks the listener thread until a slot is free, so it asks the broker for a message only then.
    ``close`` makes ``take`` refuse everything from then on (stopping).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._closed = False
        self._cond = threading.Condition()

    @property
    def taken(self) -> int:
        """Slots taken now: calls accepted and not yet answered (a reading, for metrics)."""
        return self.size - self._free

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

    oslo acks a request as soon as its callback runs, on the thread that drains the connection (the
    listener's, in ``poll``; oslo.messaging 18.3 runs no heartbeat thread on a listening
    connection). Here a delivery is passed on (and so acked) only if it takes a free slot;
    otherwise it is held, unacked, until a slot frees: the broker still owns it and redelivers it
    if this process dies. The broker pushes at most ``rabbit_qos_prefetch_count`` unacked
    deliveries per consumer, which bounds the held ones. Once closed (stopping), deliveries and
    held ones are requeued for the other workers. Every method runs on the one thread that
    reads the connection (kombu is not thread-safe, and on a listening connection oslo.messaging
    18.3 makes the connection's ``_connection_lock`` a no-op): the listener thread, or the
    stopping thread once the listener thread has ended.
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

    @property
    def held(self) -> int:
        """Deliveries held unacked now (a reading from any thread, for metrics)."""
        return len(self._held)

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

    The driver-level pieces it uses are private to oslo.messaging (listed in the module docstring);
    its major version is pinned and ``tests/integration/test_daemon.py`` covers this class on a
    real RabbitMQ.
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

    def held(self) -> int:
        """Deliveries held unacked now (a reading from any thread, for metrics)."""
        return self._delivery.held

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
        # Stopping: requeue the held deliveries here, on the one thread that reads this connection
        # (kombu is not thread-safe, and a listening connection's lock does not exclude a reader).
        self._delivery.close()
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
        workers. Without this, they would stay with this worker, unacked, until its connection
        closes after the running calls finish.
        """
        self._running = False
        self._gate.close()  # wakes the listener thread; a delivery arriving now is held, unacked
        if self._dead:  # no thread reads the connection any more: requeue the held ones here
            self._delivery.close()
        else:  # oslo's stop waits for its poll loop, which a dead listener left
            self._poller.stop()
        self._thread.join()  # the listener thread requeued the held deliveries (see _consume)
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
    server drains the whole queue into memory and a crash loses all of it. Here
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

    def load(self) -> tuple[int, int]:
        """Return (calls accepted and not yet answered, deliveries held unacked) now: a reading
        from any thread, for metrics; (0, 0) before the server starts."""
        listener = getattr(self, "listener", None)
        held = listener.held() if isinstance(listener, BoundedListener) else 0
        return self._gate.taken, held

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
        """Run oslo's handling of one request as its message's delivery (``delivery.delivered``).

        A redelivered write call that already committed sends no reply: the caller had the first
        delivery's reply (oslo's reply waiter ignores a second one for the same ``msg_id``) or timed
        out, and any reply now would be a guess. The message's own ``reply`` is wrapped for that.
        """
        message = incoming[0]
        send = message.reply
        with delivered(getattr(message, "unique_id", None)) as delivery:

            def reply(*args: Any, **kwargs: Any) -> None:
                if not delivery.drop_reply:
                    send(*args, **kwargs)

            message.reply = reply
            super()._process_incoming(incoming)
