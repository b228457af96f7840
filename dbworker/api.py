"""The in-process API: the worker's handlers called directly, no broker.

Same methods, arguments, replies and errors as :mod:`dbworker.client`: arguments are encoded as for
the wire, the dispatcher runs the call in its own transaction, and the JSON reply is decoded back
(datetimes as naive UTC ``datetime``). For tests, tools and single-process users.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from dbworker.core.context import RequestContext
from dbworker.core.dispatch import Dispatcher
from dbworker.core.logcontext import call_scope
from dbworker.core.settings import Settings
from dbworker.handlers import build_registry
from dbworker.protocol.calls import CatalogueAPI, no_such_method, use_slave
from dbworker.session import make_sessionmaker


class LocalAPI(CatalogueAPI):
    """Every catalogue function, served in this process by ``dispatcher``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    @classmethod
    def from_engine(cls, engine: Engine, settings: Settings | None = None) -> LocalAPI:
        """Return an API over ``engine`` with every registered handler."""
        return cls(Dispatcher(build_registry(), make_sessionmaker(engine), settings=settings))

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if name == "health":
            return self.dispatcher.health()
        if name not in self.dispatcher.registry:
            raise no_such_method(name)
        ctx = RequestContext.from_dict(ctxt)
        with call_scope(ctx):
            return self.dispatcher.call(name, ctx, kwargs, use_replica=use_slave(ctxt))
