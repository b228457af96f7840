"""The oslo.messaging edge of the worker: endpoints generated from the registry, and the server.

The endpoint has one attribute per registered handler (no hand-written method per function); every
call goes to the dispatcher, inside the call's logging scope (:func:`dbworker.core.logcontext.call_scope`).
This module uses oslo.messaging's public API only: the bounded server it builds, and every private
oslo.messaging name that server needs, live in :mod:`dbworker.edge.flow_control`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import oslo_messaging
from oslo_config import cfg

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.dispatch import Dispatcher
from dbworker.core.hooks import NotRun
from dbworker.core.logcontext import call_scope
from dbworker.edge.delivery import CallTerms, KeyTaken, current_delivery
from dbworker.edge.flow_control import BoundedRPCServer
from dbworker.protocol.catalogue import API_VERSION
from dbworker.protocol.wire import Primitive


class DBWorkerEndpoint:
    """The RPC endpoint: one method per registered handler, named like it, plus ``health``.

    Business errors (``CinderException`` with ``expected``) are raised through
    ``ExpectedException`` so the server logs them at debug level without a traceback. Each call
    runs on the terms its context carries (:mod:`dbworker.edge.delivery`): a call taken more than
    ``deadline_allowance`` seconds after its ``deadline`` is not run and gets no reply; a write
    call is recorded by its ``idempotency_key`` (a kept key is answered with its recorded outcome,
    not run again) or else by its message's id (a redelivery of a committed write is not run and
    gets no reply). A read call whose context says ``use_slave`` may run on the read replica.
    """

    target = oslo_messaging.Target(version=API_VERSION)

    def __init__(self, dispatcher: Dispatcher, *, deadline_allowance: float = 2.0) -> None:
        self._dispatcher = dispatcher
        self._allowance = deadline_allowance
        for name in dispatcher.registry:
            setattr(self, name, functools.partial(self._call, name))

    def health(self, ctxt: Any) -> Primitive:
        """Return the worker's health (any context, even an empty one)."""
        return self._dispatcher.health()

    def _call(self, name: str, ctxt: Any, /, **kwargs: Any) -> Primitive:
        delivery = current_delivery()
        try:
            ctx = RequestContext.from_dict(ctxt)
            terms = CallTerms.from_context(ctxt)
            deadline = None if terms.deadline is None else terms.deadline + self._allowance
            record = terms.record(name, ctx, kwargs, delivery)
            with call_scope(ctx):
                try:
                    return self._dispatcher.call(
                        name, ctx, kwargs, record=record, deadline=deadline, use_replica=terms.use_replica
                    )
                except KeyTaken as taken:
                    return taken.record.answer(self._dispatcher.engine)
        except NotRun:  # not run, and no reply: the caller is gone, or had the first reply
            if delivery is not None:
                delivery.drop_reply = True
            raise oslo_messaging.ExpectedException() from None  # logged at debug
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
    deadline_allowance: float = 2.0,
    on_listener_death: Callable[[], None] | None = None,
) -> BoundedRPCServer:
    """Return a (not yet started) bounded RPC server for ``topic`` on ``host``.

    ``deadline_allowance``: seconds a call may be taken after its deadline (the caller's and the
    worker's clocks may disagree by up to that much). ``on_listener_death`` is called (on the
    listener thread) if the broker listener stops for good; without it the failure is only
    logged."""
    target = oslo_messaging.Target(topic=topic, server=host)
    endpoints = [DBWorkerEndpoint(dispatcher, deadline_allowance=deadline_allowance), BaseEndpoint()]
    rpc_dispatcher = oslo_messaging.RPCDispatcher(
        endpoints, serializer=None, access_policy=oslo_messaging.DefaultRPCAccessPolicy
    )
    return BoundedRPCServer(
        transport, target, rpc_dispatcher, pool_size=pool_size, on_listener_death=on_listener_death
    )
