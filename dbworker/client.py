"""``dbworker.client``: Cinder's DB API functions, each forwarded over RPC to a dbworker.

Every function of ``cinder.db.api`` is here with its signature (context first), generated from
:mod:`dbworker.protocol.catalogue`; replies come back with ``datetime`` values, errors as the typed classes of
:mod:`dbworker.exception`. A function the worker does not serve fails with ``NoSuchMethod``.

Use it as a module (``dbworker.client.volume_get(ctx, volume_id)``; the default client reads
``[DEFAULT] transport_url`` and ``[dbworker] topic`` from ``cfg.CONF``, or call :func:`configure`), as
an oslo.db backend (``DBAPI.from_config(conf, backend_mapping={"sqlalchemy": "dbworker.client"})``),
or build a :class:`Client` on a transport of your own.

Each call gets exactly one outcome: its reply, a typed error, or (after its retries, or once its
overall deadline is near) ``MessagingTimeout`` or ``DBUnavailable``. An attempt that gets no reply
in time, or ``DBUnavailable``, is sent again after a pause; every attempt carries its deadline and,
for a write, the idempotency key made once for the call, so the worker runs a write at most once
and answers its retries with the recorded outcome (:class:`Client`).
"""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from dbworker import exception, options
from dbworker.protocol import catalogue
from dbworker.protocol.calls import (
    DEADLINE_KEY,
    IDEMPOTENCY_KEY,
    USE_SLAVE_KEY,
    CatalogueAPI,
    no_such_method,
    oslo_messaging,
)

if TYPE_CHECKING:
    from oslo_messaging import Transport

#: The longest pause, in seconds, between two attempts of a call.
MAX_RETRY_PAUSE = 30.0
#: A retry starts only with at least this many seconds of its call's deadline left (or the whole
#: per-attempt timeout, if that is shorter): an attempt with less could not be answered.
MIN_ATTEMPT = 1.0
#: Calls sent once, never retried: a probe answers for now, and its caller's loop asks again.
NOT_RETRIED = frozenset({"health"})


class Client(CatalogueAPI):
    """The catalogue's functions over RPC on ``transport`` (thread-safe: share one per process).

    A call is sent at most ``retries + 1`` times, all within ``call_deadline`` seconds of its start
    (a monotonic clock). Each attempt waits for its reply for ``timeout`` seconds, or the time left
    if less, and sends a copy of the caller's context with ``deadline`` (``time.time()`` + that
    wait, for the worker, which compares wall clocks) and, for a write (:func:`catalogue.writes`),
    ``idempotency_key``: one ``uuid4().hex`` for all the attempts of the call. After
    ``MessagingTimeout`` or ``DBUnavailable`` the call is sent again after a pause of
    ``retry_backoff`` seconds, doubled for each further retry (at most :data:`MAX_RETRY_PAUSE`),
    drawn at random between half and all of it; no retry starts with less than
    :data:`MIN_ATTEMPT` (or ``timeout``) seconds left. Other errors are raised at once;
    ``health`` is sent once (:data:`NOT_RETRIED`).

    Parameters:
        transport: an oslo.messaging RPC transport; build it with ``allowed_remote_exmods``
            containing ``dbworker.exception`` (:func:`get_transport` does) to get typed errors.
        topic: the workers' ``[dbworker] topic``.
        timeout: seconds one attempt waits for its reply (``[dbworker] rpc_timeout``).
        retry: times oslo.messaging retries sending a message to an unreachable broker (None:
            forever, oslo's default); not a retry of the call.
        retries: times a call is sent again after ``MessagingTimeout`` or ``DBUnavailable``
            (``[dbworker] rpc_retries``; 0: one attempt).
        retry_backoff: seconds of the first pause (``[dbworker] rpc_retry_backoff``).
        call_deadline: seconds a call may take in all, retries and pauses included
            (``[dbworker] rpc_call_deadline``).
        use_slave_for: read functions sent with the context's ``use_slave`` set (the caller
            accepts their replies from the workers' read replica; ``[dbworker] use_slave_for``).
            A caller may also set ``use_slave`` in the context of any one call.

    Raises:
        ValueError: ``timeout`` or ``call_deadline`` is not positive, ``retries`` or
            ``retry_backoff`` is negative, or ``use_slave_for`` names a write or no function.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        topic: str = "dbworker",
        timeout: float = 60,
        retry: int | None = None,
        retries: int = 3,
        retry_backoff: float = 0.5,
        call_deadline: float = 180,
        use_slave_for: Iterable[str] = (),
    ) -> None:
        if timeout <= 0 or call_deadline <= 0 or retries < 0 or retry_backoff < 0:
            raise ValueError(
                "timeout and call_deadline must be positive, retries and retry_backoff not negative"
            )
        messaging = oslo_messaging()
        target = messaging.Target(topic=topic, version=catalogue.API_VERSION)
        self._rpc = messaging.get_rpc_client(transport, target, timeout=timeout, retry=retry)
        self._remote_error = messaging.RemoteError
        self._retryable = (messaging.MessagingTimeout, exception.DBUnavailable)
        self._timeout = timeout
        self._retries = retries
        self._backoff = retry_backoff
        self._call_deadline = call_deadline
        self._use_slave_for = frozenset(use_slave_for)
        for name in self._use_slave_for:
            if name not in catalogue.FUNCTIONS or catalogue.writes(name):
                what = (
                    "writes (a write always runs on the primary)"
                    if name in catalogue.FUNCTIONS
                    else "is no function"
                )
                raise ValueError(f"use_slave_for: {name} {what}")

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        """Return the reply of call ``name``, sending it until it gets one outcome (see the class).

        Raises:
            MessagingTimeout: no attempt got a reply in time.
            DBUnavailable: the last attempt found the worker without its database.
            NoSuchMethod: the worker does not serve ``name``.
            CinderException: the worker's typed error, as its own class.
            RemoteError: any other failure on the worker.
        """
        key = uuid.uuid4().hex if catalogue.writes(name) else None
        if name in self._use_slave_for:
            ctxt = {**ctxt, USE_SLAVE_KEY: True}
        retries = 0 if name in NOT_RETRIED else self._retries
        ends = time.monotonic() + self._call_deadline
        retry = 0
        while True:
            timeout = min(self._timeout, ends - time.monotonic())
            try:
                return self._attempt(name, attempt_context(ctxt, timeout, key), kwargs, timeout)
            except self._retryable:
                retry += 1
                if not self._wait_for_retry(retry, retries, ends):
                    raise

    def _wait_for_retry(self, retry: int, retries: int, ends: float) -> bool:
        """Pause before retry number ``retry`` (1 for the first) of a call allowed ``retries`` that
        must end by ``ends`` (``time.monotonic()``), and return True; return False at once if the
        call gets no such retry: its retries are spent, or too little time would be left after
        the pause."""
        if retry > retries:
            return False
        pause = retry_pause(self._backoff, retry, random.random())
        if ends - time.monotonic() - pause < min(self._timeout, MIN_ATTEMPT):
            return False
        time.sleep(pause)
        return True

    def _attempt(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any], timeout: float) -> Any:
        """Send call ``name`` once, waiting ``timeout`` seconds for its reply; return the reply.

        Raises:
            MessagingTimeout: no reply within ``timeout``.
            NoSuchMethod: the worker does not serve ``name``.
            CinderException: the worker's typed error, as its own class.
            RemoteError: any other failure on the worker.
        """
        try:
            return self._rpc.prepare(timeout=timeout).call(ctxt, name, **kwargs)
        except exception.CinderException as err:
            raise _local_error(err) from None
        except self._remote_error as err:
            if err.exc_type == "NoSuchMethod":
                raise no_such_method(name) from None
            raise


def attempt_context(ctxt: dict[str, Any], timeout: float, key: str | None) -> dict[str, Any]:
    """Return a copy of ``ctxt`` (left as it is) with the attempt's ``deadline`` (``time.time()`` +
    ``timeout``) and, unless ``key`` is None, its ``idempotency_key``."""
    sent = {**ctxt, DEADLINE_KEY: time.time() + timeout}
    if key is not None:
        sent[IDEMPOTENCY_KEY] = key
    return sent


def retry_pause(backoff: float, retry: int, draw: float) -> float:
    """Return the seconds to pause before retry number ``retry`` (1 for the first): ``backoff``
    doubled for each retry after the first, at most :data:`MAX_RETRY_PAUSE`, then scaled by
    ``draw`` (from 0 to 1) to between half and all of that."""
    full = min(MAX_RETRY_PAUSE, backoff * 2.0 ** min(retry - 1, 64))
    return full * (1 + draw) / 2


def _local_error(err: exception.CinderException) -> exception.CinderException:
    """Return the rebuilt remote error as its own class (not oslo's ``<Name>_Remote`` subclass),
    with the worker's message (without the remote traceback) and kwargs."""
    cls = type(err)
    if cls.__name__.endswith("_Remote"):
        cls = cls.__mro__[1]
    return cls(*err.args, **err.kwargs)


def get_transport(config: cfg.ConfigOpts, url: str | None = None) -> Transport:
    """Return an RPC transport that rebuilds dbworker's typed errors."""
    return oslo_messaging().get_rpc_transport(config, url=url, allowed_remote_exmods=catalogue.ALLOWED_EXMODS)


_default: Client | None = None
_lock = threading.Lock()


def configure(config: cfg.ConfigOpts | None = None, transport: Transport | None = None) -> Client:
    """Set (and return) the client the module functions use, built from ``config`` (default
    ``cfg.CONF``: ``[DEFAULT] transport_url``, ``[dbworker] topic``, ``rpc_timeout``, ``rpc_retries``,
    ``rpc_retry_backoff`` and ``rpc_call_deadline``)."""
    global _default
    config = config if config is not None else cfg.CONF
    options.register_client_opts(config)
    transport = transport or get_transport(config)
    opts = config.dbworker
    client = Client(
        transport,
        topic=opts.topic,
        timeout=opts.rpc_timeout,
        retries=opts.rpc_retries,
        retry_backoff=opts.rpc_retry_backoff,
        call_deadline=opts.rpc_call_deadline,
        use_slave_for=opts.use_slave_for,
    )
    with _lock:
        _default = client
    return client


def default_client() -> Client:
    """Return the module's client, building it from ``cfg.CONF`` on first use."""
    with _lock:
        client = _default
    return client if client is not None else configure()


def get_backend() -> Any:
    """oslo.db's backend hook: this module serves as the ``DBAPI`` implementation."""
    return sys.modules[__name__]


def _module_function(name: str) -> Any:
    method = getattr(CatalogueAPI, name)

    def function(context: Any, *args: Any, **kwargs: Any) -> Any:
        return method(default_client(), context, *args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = method.__doc__
    function.__signature__ = method.__signature__.replace(  # type: ignore[attr-defined]
        parameters=list(method.__signature__.parameters.values())[1:]
    )
    return function


for _name in catalogue.FUNCTIONS:
    globals()[_name] = _module_function(_name)


def health(context: Any = None) -> Any:
    """Return a worker's health: ``{"status", "version", "host", "database"}``."""
    return default_client().health(context)
