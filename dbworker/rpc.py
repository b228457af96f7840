"""The oslo.messaging edge of the worker: endpoints generated from the registry, a bounded server.

Only this module, ``cmd.py`` and the client speak oslo.messaging. The endpoint has one attribute per
registered handler (no hand-written method per function); every call goes to the dispatcher.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_messaging.rpc.server import RPCServer

from dbworker import exception
from dbworker.catalogue import API_VERSION
from dbworker.context import RequestContext
from dbworker.dispatch import Dispatcher
from dbworker.wire import Primitive

LOG = logging.getLogger(__name__)


class DBWorkerEndpoint:
    """The RPC endpoint: one method per registered handler, named like it, plus ``health``.

    Business errors (``CinderException`` with ``expected``) are raised through
    ``ExpectedException`` so the server logs them at debug level without a traceback.
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
        try:
            ctx = RequestContext.from_dict(ctxt)
            return self._dispatcher.call(name, ctx, kwargs)
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


class BoundedRPCServer(RPCServer):
    """An RPC server that takes a message from the broker only when a worker thread is free.

    oslo.messaging acks a request on receipt; its executor queue is unbounded, so a plain server
    drains the whole queue into memory and a crash loses all of it. Blocking the listener until a
    thread is free keeps the backlog on the broker, for the other workers (oslo-notes §2.9). This
    overrides ``_on_incoming``, a private method: oslo.messaging's major version is pinned and a
    test covers it.
    """

    def __init__(self, *args: Any, pool_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool_size = pool_size
        self._slots = threading.BoundedSemaphore(pool_size)

    def start(self, override_pool_size: int | None = None) -> None:
        """Start consuming with as many executor threads as there are slots."""
        super().start(override_pool_size=override_pool_size or self._pool_size)

    # oslo's ordered-task runner finds its states by this attribute; the override must keep it.
    start._ordered = True  # type: ignore[attr-defined]

    def _on_incoming(self, incoming: Any) -> None:
        self._slots.acquire()
        try:
            future = self._work_executor.submit(self._process_incoming, incoming)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())


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
) -> BoundedRPCServer:
    """Return a (not yet started) bounded RPC server for ``topic`` on ``host``."""
    target = oslo_messaging.Target(topic=topic, server=host)
    endpoints = [DBWorkerEndpoint(dispatcher), BaseEndpoint()]
    rpc_dispatcher = oslo_messaging.RPCDispatcher(
        endpoints, serializer=None, access_policy=oslo_messaging.DefaultRPCAccessPolicy
    )
    return BoundedRPCServer(transport, target, rpc_dispatcher, pool_size=pool_size)
