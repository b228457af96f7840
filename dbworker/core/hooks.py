"""What the dispatcher's callers plug into a call, and what it raises for a call it does not run.

:class:`CallRecord`: a write call's record in its own transaction (the RPC edge's delivery records
and idempotency keys, :mod:`dbworker.edge.delivery`). :class:`CallObserver`: told of every call (the
daemon's metrics). :class:`NotRun`: the call was not run (:class:`DeadlinePassed`, or a record's
first step stopped it).
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.protocol.wire import Primitive


class NotRun(Exception):
    """The call was not run and wrote nothing (a record's first step, or a passed deadline). Logged
    at :attr:`log_level` with its message and counted under :attr:`counter`; not a
    CinderException, it never reaches the wire: the edge decides the reply."""

    counter = "calls_not_run"
    log_level = logging.WARNING


class DeadlinePassed(NotRun):
    """The call's deadline had passed when a thread took it: nothing ran (its caller is gone)."""

    counter = "calls_expired"

    def __init__(self, late: float) -> None:
        super().__init__(f"taken {late:.3f}s after its deadline; not run, no reply sent")
        self.late = late


class CallRecord(Protocol):
    """A write call's record in its own transaction (implemented by :mod:`dbworker.edge.delivery`)."""

    def begin(self, tx: Session | Connection, name: str) -> None:
        """The first statement of the call's transaction. Raises :class:`NotRun` to stop the call."""

    def keep(
        self, tx: Session | Connection, reply: Primitive, error: exception.CinderException | None
    ) -> None:
        """The last statement before the commit: the call's outcome (its reply, or its typed error)."""

    @property
    def keeps_outcome(self) -> bool:
        """Whether a typed error that rolled the call back is kept (in a transaction of its own)."""


class CallObserver(Protocol):
    """Told of every call the dispatcher runs (the daemon's metrics, :mod:`dbworker.daemon.metrics`).
    Its methods run on the call's thread and must not raise."""

    def started(self, name: str) -> None:
        """Call ``name`` was taken and is about to run (or be refused)."""

    def finished(self, name: str, outcome: str, seconds: float) -> None:
        """Call ``name`` ended with ``outcome`` (``ok``, or its error's class name) after ``seconds``."""

    def counted(self, key: str) -> None:
        """An event of the dispatcher's :attr:`Dispatcher.counters` happened (``retries``,
        ``calls_expired``, a :class:`NotRun`'s counter...)."""
