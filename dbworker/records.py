"""Reply records built straight from result rows: the hot path's half of contract §4.

A handler on the hot path runs Core statements built once and maps their rows to records with a
:class:`Mapper` per table, without the ORM's identity map or loaders. The records are
:class:`Record` dicts: JSON data by construction (columns of known types, datetimes already wire
strings), which the dispatcher passes through without walking them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import DateTime, Table

from dbworker.wire import format_time


class Record(dict[str, Any]):
    """One reply record (a row's columns plus its computed fields), already JSON data."""


class Mapper:
    """Maps a table's columns, found at ``offset`` in a result row, to the table's record.

    ``select(*table.c)`` (or a join listing ``*table.c`` at ``offset``) gives the row; every
    column becomes a key (contract §4: a record has all its columns), datetimes as wire strings.
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
