"""The dispatcher: one handler call, one transaction, one JSON reply, one log line.

It has the handler admit the call (authorization, then the arguments: :meth:`Handler.admit`, before
anything is read or written), runs the handler in its own transaction, serializes the reply
*inside* that transaction, commits, and turns database errors into typed errors. Deadlocks and lost
connections re-run the whole call (bounded); errors never carry SQL text or bound parameters.

A caller may give a write call a :class:`CallRecord`: its :meth:`~CallRecord.begin` runs first in
the call's transaction (and again in a re-run), before the handler, and may stop the call by
raising :class:`NotRun`; its :meth:`~CallRecord.keep` runs last, before the commit, with the call's
outcome. A typed error that rolled the call back is kept in a transaction of its own. The RPC edge
uses it for at-most-once delivery and idempotency keys (:mod:`dbworker.edge.delivery`). A caller
may also give a call its *deadline*: a call taken after it is not started (:class:`DeadlinePassed`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from oslo_db import exception as db_exc
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dbworker import __version__, exception
from dbworker.core.context import RequestContext
from dbworker.core.hooks import CallObserver, CallRecord, DeadlinePassed, NotRun
from dbworker.core.registry import Handler, Registry
from dbworker.core.replica import Database, Replica, ReplicaState
from dbworker.core.serialize import View, to_primitive
from dbworker.core.settings import DEFAULT_SETTINGS, Settings
from dbworker.protocol.wire import Primitive
from dbworker.session import begin_call, is_deadlock, is_disconnect, raise_driver_error

LOG = logging.getLogger(__name__)


class _Retry(Exception):
    """A database failure that left nothing committed: the call may run again."""

    def __init__(self, final: exception.CinderException) -> None:
        super().__init__(type(final).__name__)
        self.final = final


class Dispatcher:
    """Runs registered handlers, each call in exactly one transaction.

    Parameters:
        registry: the handlers, by RPC method name.
        sessions: the sessionmaker each call opens its transaction with.
        settings: the configured values handlers declare a ``settings`` parameter for, and the
            name templates of replies. The daemon always gives its configuration; only a caller
            that gives none (the in-process API, tests) gets Folsom's, :data:`DEFAULT_SETTINGS`.
        max_deadlock_retries: re-runs after a deadlock or a lost connection.
        host: reported by ``health``.
        observer: told of each call and counted event (:class:`CallObserver`), if given.
        replica: the read replica, if any: a read call that opts in (``call(use_replica=True)``)
            runs there while :meth:`Replica.usable`, else on the primary (counted
            ``replica_fallbacks_lagging`` or ``replica_fallbacks_down``; served there:
            ``replica_calls``); a read that fails there for its database runs again on the
            primary (``replica_fallbacks_failed``, or ``_down``: a lost connection marks the
            replica down). Every write call, its reads included, runs on the primary.
    """

    def __init__(
        self,
        registry: Registry,
        sessions: sessionmaker[Session],
        *,
        settings: Settings | None = None,
        max_deadlock_retries: int = 5,
        retry_interval: float = 0.05,
        host: str = "localhost",
        observer: CallObserver | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.registry = registry
        self.observer = observer
        self.replica = replica
        self.sessions = sessions
        self.settings = settings = DEFAULT_SETTINGS if settings is None else settings
        self._engine: Engine = sessions.kw["bind"]
        self._primary = Database(self._engine, sessions)
        self._driver_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        self._view = View(
            volume_name_template=settings.volume_name_template,
            snapshot_name_template=settings.snapshot_name_template,
        )
        self.max_deadlock_retries = max_deadlock_retries
        self.retry_interval = retry_interval
        self.host = host
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(
        self,
        name: str,
        ctx: RequestContext,
        kwargs: Mapping[str, Any],
        *,
        record: CallRecord | None = None,
        deadline: float | None = None,
        use_replica: bool = False,
    ) -> Primitive:
        """Run handler ``name`` for ``ctx`` with ``kwargs`` and return its JSON-safe reply.

        ``record``, for a write call, is begun and kept in its transaction (see the module
        docstring). ``deadline`` (seconds since the epoch, ``time.time()``'s clock): past it, the
        call is not started. ``use_replica``: the caller accepts a reply from the read replica
        (a read call only; see the class).

        Raises:
            KeyError: no handler is registered under ``name`` (the RPC layer answers NoSuchMethod).
            CinderException: every expected outcome and every database failure, typed.
            NotRun: the deadline had passed (:class:`DeadlinePassed`) or the record stopped the
                call; nothing ran.
        """
        handler = self.registry[name]
        start = time.perf_counter()
        outcome = "ok"
        counter = None
        if self.observer is not None:
            self.observer.started(name)
        try:
            if deadline is not None and (late := time.time() - deadline) > 0:
                raise DeadlinePassed(late)
            if use_replica and not handler.writes and self.replica is not None:
                return self._read_on_replica(handler, ctx, kwargs, self.replica)
            return self._call(handler, ctx, kwargs, record if handler.writes else None)
        except NotRun as err:
            outcome = type(err).__name__
            counter = err.counter
            LOG.log(err.log_level, "%s: %s", name, err)
            raise
        except exception.CinderException as err:
            outcome = type(err).__name__
            raise
        except Exception as err:
            outcome = type(err).__name__
            LOG.exception("%s failed with an unexpected error", name)
            raise
        finally:
            elapsed = time.perf_counter() - start
            self._count(counter or ("calls_ok" if outcome == "ok" else "calls_failed"))
            if self.observer is not None:
                self.observer.finished(name, outcome, elapsed)
            LOG.info("%s %.1fms %s", name, elapsed * 1000, outcome)

    def health(self) -> dict[str, Primitive]:
        """Return ``{"status", "version", "host", "database"}``, and with a read replica
        ``"replica": {"state": "ok"|"lagging"|"down", "lag_seconds": float|null}`` (checked now;
        the status is the primary's: reads go there while the replica is unfit); never raises."""
        database = "unreachable"
        for _attempt in range(2):  # a pooled connection found dead is discarded: try a fresh one
            try:
                with self.sessions() as session:
                    session.execute(text("SELECT 1"))
                database = "ok"
                break
            except Exception as err:
                LOG.warning("health: database check failed: %s", type(err).__name__)
        reply: dict[str, Primitive] = {
            "status": "ok" if database == "ok" else "degraded",
            "version": __version__,
            "host": self.host,
            "database": database,
        }
        if self.replica is not None:
            state, lag = self.replica.check(), self.replica.lag()
            reply["replica"] = {"state": state.value, "lag_seconds": None if lag is None else round(lag, 3)}
        return reply

    @property
    def engine(self) -> Engine:
        """The engine every call's transaction is opened on."""
        return self._engine

    def _read_on_replica(
        self, handler: Handler, ctx: RequestContext, kwargs: Mapping[str, Any], replica: Replica
    ) -> Primitive:
        """Run a read call on ``replica`` if it is usable, else (or if the read fails there for its
        database) on the primary."""
        if not replica.usable():
            self._count(_fallback(replica))
            return self._call(handler, ctx, kwargs, None)
        bound = handler.admit(ctx, kwargs, self.settings)
        try:
            reply = self._run_once(handler, ctx, bound, self._view, None, replica.database)
        except (_Retry, exception.DBError) as err:
            final = err.final if isinstance(err, _Retry) else err
            if isinstance(final, exception.DBUnavailable):
                replica.mark_down(f"{handler.name}: connection lost")
            self._count(
                "replica_fallbacks_down" if replica.state is ReplicaState.DOWN else "replica_fallbacks_failed"
            )
            LOG.warning(
                "%s: %s on the read replica; running it on the primary", handler.name, type(final).__name__
            )
            return self._call(handler, ctx, kwargs, None, bound=bound)
        self._count("replica_calls")
        return reply

    def _call(
        self,
        handler: Handler,
        ctx: RequestContext,
        kwargs: Mapping[str, Any],
        record: CallRecord | None,
        *,
        bound: dict[str, Any] | None = None,
    ) -> Primitive:
        if bound is None:
            bound = handler.admit(ctx, kwargs, self.settings)
        view = self._view
        for attempt in range(self.max_deadlock_retries + 1):
            try:
                return self._run_once(handler, ctx, bound, view, record, self._primary)
            except exception.CinderException as err:
                # An expected error rolled the call back (one raised after its writes committed,
                # commit_first, was kept in the call's own transaction).
                if record is not None and record.keeps_outcome and err.expected and not err.commit_first:
                    self._keep_error(handler, record, err)
                raise
            except _Retry as retry:
                if attempt == self.max_deadlock_retries:
                    raise retry.final from None
                self._count("retries")
                LOG.warning(
                    "%s: %s, re-running the call (attempt %d of %d)",
                    handler.name,
                    type(retry.final).__name__,
                    attempt + 2,
                    self.max_deadlock_retries + 1,
                )
                time.sleep(self.retry_interval * (2**attempt))
        raise AssertionError("unreachable")

    def _run_once(
        self,
        handler: Handler,
        ctx: RequestContext,
        kwargs: dict[str, Any],
        view: View,
        record: CallRecord | None,
        database: Database,
    ) -> Primitive:
        deferred: exception.CinderException | None = None
        failed: Exception | None = None
        committing = False
        tx: Session | Connection | None = None
        try:
            try:
                tx = begin_call(
                    database.engine,
                    database.sessions,
                    core=handler.core,
                    writes=handler.writes,
                    single_statement=handler.single_statement,
                )
                if record is not None:
                    record.begin(tx, handler.name)
                reply = None
                try:
                    reply = to_primitive(handler.fn(tx, ctx, **kwargs), view)
                except exception.CinderException as err:
                    if not err.commit_first:
                        raise
                    deferred = err
                if record is not None:
                    record.keep(tx, reply, deferred)
                if isinstance(tx, Session):
                    tx.flush()
                committing = True
                tx.commit()
            except (db_exc.DBError, sqlalchemy.exc.SQLAlchemyError) as err:
                failed = err
            except self._driver_error as err:  # raised past SQLAlchemy: a connection setting
                failed = self._wrap_driver_error(err, tx)
        finally:
            if tx is not None:
                _close(tx, handler)
        if failed is not None:
            # Translated (and logged) outside the except block: oslo.log appends the active
            # exception's first line to ERROR records, and a driver's message carries row values.
            raise self._translate(failed, handler, ctx, committing=committing) from None
        if deferred is not None:
            raise deferred
        return reply

    def _keep_error(self, handler: Handler, record: CallRecord, err: exception.CinderException) -> None:
        """Keep the typed error of a call that rolled back, in a transaction of its own.

        Raises :class:`NotRun` when another delivery of the call kept its outcome meanwhile (the
        caller is answered with that one). A database failure here is logged, and the call's
        error stands: its outcome is not kept, and a retry runs it again (it wrote nothing).
        """
        tx = None
        try:
            tx = begin_call(self._engine, self.sessions, core=True, writes=True, single_statement=False)
            record.begin(tx, handler.name)
            record.keep(tx, None, err)
            tx.commit()
        except NotRun:
            raise
        except Exception as failure:
            kept, why = type(err).__name__, type(failure).__name__
            LOG.warning("%s: the outcome %s was not kept (%s)", handler.name, kept, why)
        finally:
            if tx is not None:
                _close(tx, handler)

    def _wrap_driver_error(self, err: Exception, tx: Session | Connection | None) -> Exception:
        """Return a driver error raised past SQLAlchemy wrapped as SQLAlchemy would wrap it."""
        conn = tx if isinstance(tx, Connection) and not tx.closed else None
        if conn is None:
            return sqlalchemy.exc.DBAPIError.instance(
                None, None, err, self._driver_error, hide_parameters=True, dialect=self._engine.dialect
            )
        try:
            raise_driver_error(conn, err)
        except (db_exc.DBError, sqlalchemy.exc.SQLAlchemyError) as wrapped:
            return wrapped

    def _translate(
        self, err: Exception, handler: Handler, ctx: RequestContext, *, committing: bool
    ) -> Exception:
        """Map a database error to a typed error (or a re-run); log it without SQL text."""
        attempts = self.max_deadlock_retries + 1
        if is_deadlock(err):
            return _Retry(exception.DBBusy(attempts=attempts))
        if is_disconnect(err):
            if committing and handler.writes:
                # The commit may or may not have landed: re-running could write twice.
                LOG.error("%s: connection lost while committing", handler.name)
                return exception.DBUnavailable()
            return _Retry(exception.DBUnavailable())
        if isinstance(err, db_exc.DBDuplicateEntry):
            return exception.Duplicate()
        if isinstance(err, db_exc.DBReferenceError):
            return exception.InvalidInput(reason="a referenced row does not exist")
        if isinstance(err, db_exc.DBDataError) or isinstance(
            getattr(err, "inner_exception", err), sqlalchemy.exc.DataError
        ):  # oslo.db raises DBDataError on MySQL only; PostgreSQL's "value too long" is a DataError
            return exception.InvalidInput(reason="a value does not fit its column")
        LOG.error(
            "%s: unexpected database error %s (%s)",
            handler.name,
            type(err).__name__,
            _db_code(err),
        )
        return exception.DBError(request_id=ctx.request_id)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1
        if self.observer is not None:
            self.observer.counted(key)


def _fallback(replica: Replica) -> str:
    """The counter of a read the replica could not take: ``replica_fallbacks_down`` or
    ``replica_fallbacks_lagging`` (lagging, not yet measured, or its last check too old)."""
    return "replica_fallbacks_down" if replica.state is ReplicaState.DOWN else "replica_fallbacks_lagging"


def _close(tx: Session | Connection, handler: Handler) -> None:
    """Close the call's session or connection without letting a failure replace its outcome.

    Closing rolls back a transaction the call left open (it raised); on a lost connection that
    rollback fails, but the database has already rolled the transaction back, and SQLAlchemy
    discards the connection. Raising here would turn the call's typed error (or its re-run) into a
    raw database error on the wire.
    """
    try:
        tx.close()
    except (db_exc.DBError, sqlalchemy.exc.SQLAlchemyError) as err:
        LOG.warning("%s: closing the session failed: %s", handler.name, type(err).__name__)


def _db_code(err: Exception) -> str:
    """Return the driver's error code (never the statement or its parameters)."""
    orig = getattr(getattr(err, "inner_exception", err), "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)  # psycopg2, psycopg 3
    if code is None and orig is not None and getattr(orig, "args", None):
        code = orig.args[0] if isinstance(orig.args[0], int) else None
    return f"code {code}" if code is not None else "no code"
