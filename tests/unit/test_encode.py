"""The one JSON converter, ``wire.encode``: each rule of its docstring, and what it refuses."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dbworker import models
from dbworker.core.serialize import View, to_primitive
from dbworker.protocol.wire import Record, encode


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Row:
    """A Folsom-style model: ``keys()`` and ``__getitem__``, no dict."""

    def __init__(self, **values):
        self._values = values

    def keys(self):
        return list(self._values)

    def __getitem__(self, key):
        return self._values[key]


T = datetime(2012, 9, 26, 1, 2, 3, 7)
TEXT = "2012-09-26T01:02:03.000007"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (0, 0),
        (2**70, 2**70),
        (1.5, 1.5),
        ("", ""),
        ("naïve", "naïve"),
        (Colour.RED, "red"),
        (Level.HIGH, 3),
        ({"a": 1, "b": [None, "x"]}, {"a": 1, "b": [None, "x"]}),
        ({}, {}),
        ([1, (2, (3,))], [1, [2, [3]]]),
        ((), []),
        (T, TEXT),
        (T.replace(tzinfo=timezone(timedelta(hours=2))) + timedelta(hours=2), TEXT),
        ({"t": [T]}, {"t": [TEXT]}),
        (date(2012, 9, 26), "2012-09-26"),
        (Decimal("5"), 5),
        (Decimal("5.000"), 5),
        (Decimal("2.5"), 2.5),
        (Row(size=1, created_at=T), {"size": 1, "created_at": TEXT}),
    ],
    ids=repr,
)
def test_encode_converts_by_its_declared_rules(value, expected):
    encoded = encode(value)
    assert encoded == expected
    assert type(encoded) is type(expected) or isinstance(value, enum.Enum)
    assert json.loads(json.dumps(encoded)) == expected


def test_an_integral_decimal_becomes_an_int_and_a_fraction_a_float():
    assert type(encode(Decimal("7.00"))) is int
    assert type(encode(Decimal("0.1"))) is float
    assert math.isinf(encode(Decimal("Infinity")))


def test_floats_pass_through_even_when_not_finite():
    # Where a number is expected, the worker refuses these itself (an InvalidInput naming it).
    assert math.isnan(encode(float("nan")))
    assert encode([float("inf")]) == [float("inf")]


def test_a_record_passes_through_as_it_is_without_being_walked():
    record = Record(id="v1", created_at=TEXT)
    assert encode(record) is record
    assert encode([record])[0] is record
    assert encode({"volume": record})["volume"] is record


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({"a"}),
        b"bytes",
        uuid.UUID(int=1),
        ValueError("boom"),
        object(),
        timedelta(seconds=1),
        {1: "an int key"},
        {("a", "b"): 1},
        [{"deep": [{"set": {1}}]}],
        {"row": Row(bad={1})},
    ],
    ids=repr,
)
def test_encode_refuses_what_no_rule_converts(value):
    with pytest.raises(TypeError, match=r"is not JSON data|is not a string"):
        encode(value)


def test_the_refusal_names_the_type_and_never_stringifies():
    with pytest.raises(TypeError, match=r"^UUID is not JSON data$"):
        encode({"id": uuid.UUID(int=1)})
    with pytest.raises(TypeError, match=r"^dict key 1 is not a string$"):
        encode({"ok": {1: "x"}})


def test_a_mapping_with_a_key_that_is_not_a_string_is_refused():
    row = Row()
    row._values = {1: "x"}
    with pytest.raises(TypeError, match="dict key 1 is not a string"):
        encode(row)


def test_other_converts_the_callers_own_types_at_any_depth():
    seen = []

    def other(value):
        seen.append(value)
        if isinstance(value, uuid.UUID):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON data")

    u = uuid.UUID(int=1)
    assert encode({"ids": [u, (u,)]}, other) == {"ids": [str(u), [str(u)]]}
    assert seen == [u, u]
    # Given ``other``, it decides for what no rule matches: mappings included.
    with pytest.raises(TypeError, match="Row is not JSON data"):
        encode(Row(a=1), other)


# --- serialize: the reply's rule for ORM rows -------------------------------------------------------
def test_to_primitive_turns_orm_rows_into_records_and_passes_records_through():
    service = models.Service(id=7, host="h", binary="cinder-volume", created_at=T, deleted=False)
    record = Record(id="v1")

    reply = to_primitive([(service, 3), record], View())

    (converted, gigabytes), passed = reply
    assert converted["id"] == 7 and converted["host"] == "h" and converted["created_at"] == TEXT
    assert set(converted) == {c.key for c in models.Service.__table__.c}
    assert gigabytes == 3 and passed is record
    assert json.loads(json.dumps(reply)) == reply


@pytest.mark.parametrize("bad", [Row(a=1), {1, 2}, uuid.UUID(int=1), {"rows": [object()]}], ids=repr)
def test_to_primitive_refuses_mappings_that_are_not_dicts_and_every_unknown_type(bad):
    with pytest.raises(TypeError, match="is not JSON data"):
        to_primitive(bad, View())
