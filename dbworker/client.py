"""``dbworker.client``: Cinder's DB API functions, each forwarded over RPC to a dbworker.

Every function of ``cinder.db.api`` is here with its signature (context first), generated from
:mod:`dbworker.protocol.catalogue`; replies come back with ``datetime`` values, errors as the typed classes of
:mod:`dbworker.exception`. A function the worker does not serve fails with ``NoSuchMethod``.

Use it as a module (``dbworker.client.volume_get(ctx, volume_id)``; the default client reads
``[DEFAULT] transport_url`` and ``[dbworker] topic`` from ``cfg.CONF``, or call :func:`configure`), as
an oslo.db backend (``DBAPI.from_config(conf, backend_mapping={"sqlalchemy": "dbworker.client"})``),
or build a :class:`Client` on a transport of your own.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from dbworker import exception, options
from dbworker.protocol import catalogue
from dbworker.protocol.calls import CatalogueAPI, no_such_method, oslo_messaging

if TYPE_CHECKING:
    from oslo_messaging import Transport


class Client(CatalogueAPI):
    """The catalogue's functions over RPC on ``transport`` (thread-safe: share one per process).

    Parameters:
        transport: an oslo.messaging RPC transport; build it with ``allowed_remote_exmods``
            containing ``dbworker.exception`` (:func:`get_transport` does) to get typed errors.
        topic: the workers' ``[dbworker] topic``.
        timeout: seconds to wait for a reply before ``oslo_messaging.MessagingTimeout``.
        retry: send retries when the broker is unreachable (None: forever, oslo's default).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        topic: str = "dbworker",
        timeout: float = 60,
        retry: int | None = None,
    ) -> None:
        messaging = oslo_messaging()
        target = messaging.Target(topic=topic, version=catalogue.API_VERSION)
        self._rpc = messaging.get_rpc_client(transport, target, timeout=timeout, retry=retry)
        self._remote_error = messaging.RemoteError

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        try:
            return self._rpc.call(ctxt, name, **kwargs)
        except exception.CinderException as err:
            raise _local_error(err) from None
        except self._remote_error as err:
            if err.exc_type == "NoSuchMethod":
                raise no_such_method(name) from None
            raise


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
    """Set (and return) the client the module functions use, built from ``config``
    (default ``cfg.CONF``: ``[DEFAULT] transport_url``, ``[dbworker] topic`` and ``rpc_timeout``)."""
    global _default
    config = config if config is not None else cfg.CONF
    options.register_client_opts(config)
    transport = transport or get_transport(config)
    client = Client(transport, topic=config.dbworker.topic, timeout=config.dbworker.rpc_timeout)
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
