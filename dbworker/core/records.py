"""Reply records built straight from result rows, for the hot path's handlers.

A handler on the hot path runs Core statements built once and maps their rows to records with a
:class:`Mapper` per table, without the ORM's identity map or loaders. The records are
:class:`~dbworker.protocol.wire.Record` dicts: JSON data by construction (columns of known types, datetimes
already wire strings), which the wire encoding passes through without walking them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CompoundSelect, Connection, DateTime, Executable, Insert, Select, Table, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from dbworker.protocol.times import format_time
from dbworker.protocol.wire import Record
from dbworker.session import raise_driver_error


class Mapper:
    """Maps a table's columns, found at ``offset`` in a result row, to the table's record.

    ``select(*table.c)`` (or a join listing ``*table.c`` at ``offset``) gives the row; every
    column becomes a key (a reply record has all its columns), datetimes as wire strings.
    """

    def __init__(self, table: Table, offset: int = 0) -> None:
        self.table = table
        self.keys = tuple(column.key for column in table.c)
        self.start, self.stop = offset, offset + len(self.keys)
        self._datetimes = tuple(
            key for key, column in zip(self.keys, table.c, strict=True) if isinstance(column.type, DateTime)
        )

    def __call__(self, row: Sequence[Any]) -> Record:
        record = Record(zip(self.keys, row[self.start : self.stop], strict=True))
        for key in self._datetimes:
            value = record[key]
            if value is not None:
                record[key] = format_time(value)
        return record


class _Prepared:
    """A statement built once, compiled once per database driver, run on the call's own driver
    cursor (see :class:`PreparedRead`, :class:`PreparedWrite`)."""

    def __init__(self, statement: Executable, *, server_prepared: bool = False) -> None:
        self.statement = statement
        self.server_prepared = server_prepared
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _run(self, conn: Connection, params: dict[str, Any], *, fetch: bool) -> tuple[Any, _Compiled]:
        """Run the statement with ``params``; return its rows (``fetch``) or its row count, and
        its compiled form. Raises the driver's error as SQLAlchemy wraps it."""
        dialect = conn.dialect
        compiled = self._compiled.get((dialect.name, dialect.driver)) or self._compile(dialect)
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(params), **compiled.options)
            return (cursor.fetchall() if fetch else cursor.rowcount), compiled
        except dialect.loaded_dbapi.Error as err:
            raise_driver_error(conn, err)
        finally:
            cursor.close()

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = _Compiled(self.statement, dialect, self.server_prepared)
        self._compiled[dialect.name, dialect.driver] = compiled
        return compiled


class PreparedRead(_Prepared):
    """A read statement built once, run on the call's own driver cursor.

    For each database driver the statement is compiled once, with the bind and result processors
    of its columns' types. :meth:`rows` then runs it straight on the driver (psycopg 3 prepares it
    on the server after a few runs) and converts the values as SQLAlchemy would, but without
    SQLAlchemy's per-execution result set-up, which rebuilds the cursor description: for a wide
    reply row on psycopg 3 that is most of a read's client CPU (measured in instructions per call).
    Only reads use it: they need no ORM, no unit of work, no events.

    ``server_prepared=True`` (a lookup by primary key, whose plan is the same for every key) has
    psycopg 3 prepare the statement on the server, so PostgreSQL plans it once per connection;
    every other statement is planned for its values on each run (see
    ``session._prepare_only_when_asked``: a generic plan for a listing can cost a table scan).
    """

    def __init__(self, statement: Select[Any] | CompoundSelect, *, server_prepared: bool = False) -> None:
        super().__init__(statement, server_prepared=server_prepared)

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Sequence[Any]]:
        """Return every row of the statement run with ``params`` on ``conn``'s transaction.

        Raises:
            sqlalchemy.exc.DBAPIError: the driver's error, wrapped as SQLAlchemy wraps it (an
                oslo.db ``DBError``; on a lost connection the pool is invalidated).
        """
        rows, compiled = self._run(conn, params, fetch=True)
        processors = compiled.results
        if not processors:
            return rows
        return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]


class PreparedWrite(_Prepared):
    """An ``INSERT`` or ``UPDATE`` built once, run on the call's own driver cursor, as
    :class:`PreparedRead` runs a read: for a statement every write call runs (its delivery record),
    where SQLAlchemy's per-execution set-up would cost more than the statement. Its values are
    given whole (no column defaults are applied) and it fires no ORM or engine events.
    """

    def __init__(self, statement: Insert | Update, *, server_prepared: bool = False) -> None:
        super().__init__(statement, server_prepared=server_prepared)

    def run(self, tx: Connection | Session, params: dict[str, Any]) -> int:
        """Run the statement with ``params`` in ``tx``'s transaction; return the rows it wrote.

        Raises:
            sqlalchemy.exc.DBAPIError: the driver's error, wrapped as SQLAlchemy wraps it (an
                oslo.db ``DBError``: ``DBDuplicateEntry`` for a key already taken).
        """
        conn = tx.connection() if isinstance(tx, Session) else tx
        count, _compiled = self._run(conn, params, fetch=False)
        return count


class _Compiled:
    """A prepared statement for one dialect: its SQL, parameter order and the bind and result
    processors of its types (``None`` where a value needs none)."""

    def __init__(self, statement: Executable, dialect: Dialect, server_prepared: bool) -> None:
        compiled = statement.compile(dialect=dialect)
        #: the driver's execute options: psycopg 3 alone prepares statements on the server
        self.options = {"prepare": True} if server_prepared and dialect.driver == "psycopg" else {}
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("a prepared statement binds no expanding IN parameter")
        self.sql = compiled.string
        self._positions = compiled.positiontup if dialect.positional else None
        self._binds = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in ((b.key, b) for b in compiled.binds.values())
        }
        columns = getattr(statement, "selected_columns", ())
        results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        self.results = results if any(results) else None

    def parameters(self, params: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        values = {}
        for name, process in self._binds.items():
            value = params[name]
            values[name] = process(value) if process is not None and value is not None else value
        if self._positions is None:
            return values
        return tuple(values[name] for name in self._positions)
