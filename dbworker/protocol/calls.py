"""What the two Python entries share: one method per catalogue function, Cinder's signatures.

:class:`CatalogueAPI` is generated from :mod:`dbworker.protocol.catalogue`, not written out per function.
A method binds its arguments like the Cinder function would (``TypeError`` on a wrong call), encodes
them for the wire, calls ``_invoke`` and decodes the reply's datetimes. The client sends the call
over RPC; the in-process API hands it to a dispatcher. Both raise the same typed errors, and both
say "no such function" with oslo.messaging's ``NoSuchMethod`` (:func:`no_such_method`), which is
imported only when it is raised or a client is built.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from dbworker import exception
from dbworker.protocol import catalogue
from dbworker.protocol.wire import decode_reply, encode

#: The context keys the worker reads; others are not sent.
CONTEXT_KEYS = (
    "user_id",
    "user",
    "project_id",
    "project",
    "is_admin",
    "roles",
    "read_deleted",
    "quota_class",
    "request_id",
    "global_request_id",
    "remote_address",
    "use_slave",
)

#: The context keys the client adds to each attempt of a call (never copied from the caller's
#: context): its deadline, a float of seconds since the epoch (``time.time()`` + the attempt's
#: timeout), after which the caller no longer waits and the worker does not start it; and, for a
#: write, its idempotency key (1 to 64 printable ASCII characters), the same on every attempt of
#: one call, so the worker runs the call at most once.
DEADLINE_KEY = "deadline"
IDEMPOTENCY_KEY = "idempotency_key"
#: The context key by which a caller accepts a read call's reply from the workers' read replica
#: (``true``; the caller's own context may carry it, or the client adds it for the functions of
#: ``[dbworker] use_slave_for``). Ignored for a write call, which always runs on the primary.
USE_SLAVE_KEY = "use_slave"


def use_slave(ctxt: Mapping[str, Any]) -> bool:
    """Return whether the RPC context ``ctxt`` accepts a read's reply from the read replica (its
    :data:`USE_SLAVE_KEY`; absent: False). Read alike by the RPC edge and the in-process API.

    Raises:
        InvalidInput: ``use_slave`` is not a boolean.
    """
    value = ctxt.get(USE_SLAVE_KEY)
    if value is not None and not isinstance(value, bool):
        raise exception.InvalidInput(reason="context use_slave must be true or false")
    return bool(value)


def context_dict(context: Any) -> dict[str, Any]:
    """Return the RPC context dict for a Cinder/oslo context, a dbworker context, a dict or None."""
    if context is None:
        return {}
    values = context if isinstance(context, dict) else context.to_dict()
    return {k: encode(values[k]) for k in CONTEXT_KEYS if values.get(k) is not None}


def oslo_messaging() -> Any:
    """Import and return oslo.messaging, when a client is built or an error raised, never at import.

    oslo.messaging imports oslo.service, which fixes the process's backend (eventlet unless the
    process chose one) and so imports eventlet, whose deprecation banner is about a library the
    entries never use: it is silenced for that one import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import oslo_messaging
    return oslo_messaging


def no_such_method(name: str) -> Exception:
    """Return the error for a call of ``name``, which the worker does not serve: oslo.messaging's
    ``NoSuchMethod``, the class an RPC caller gets, so callers catch one class for both entries."""
    return oslo_messaging().NoSuchMethod(name)


class CatalogueAPI:
    """Base of the client and the in-process API: every catalogue function as a method."""

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError  # pragma: no cover - subclasses send the call

    def call(self, context: Any, name: str, /, **kwargs: Any) -> Any:
        """Call ``name`` with wire keyword arguments as they are; return the decoded reply."""
        reply = self._invoke(name, context_dict(context), encode(kwargs))
        return decode_reply(reply, catalogue.reply_shape(name))

    def health(self, context: Any = None) -> Any:
        """Return the worker's health: ``{"status", "version", "host", "database"}``."""
        return self.call(context, "health")


def _method(function: catalogue.Function) -> Callable[..., Any]:
    aliases = catalogue.ALIASES.get(function.name, {})
    caller_only = catalogue.CALLER_ONLY.get(function.name, {})
    signature = function.signature

    def method(self: CatalogueAPI, context: Any, *args: Any, **kwargs: Any) -> Any:
        for old, new in aliases.items():
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
        arguments = signature.bind(*args, **kwargs).arguments
        for name in caller_only:
            arguments.pop(name, None)
        return self.call(context, function.name, **arguments)

    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    ctx = inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__name__ = method.__qualname__ = function.name
    method.__signature__ = inspect.Signature([this, ctx, *signature.parameters.values()])  # type: ignore[attr-defined]
    method.__doc__ = f"``{function.name}(context, {str(signature)[1:]}``, served by the worker."
    return method


for _function in catalogue.FUNCTIONS.values():
    setattr(CatalogueAPI, _function.name, _method(_function))
