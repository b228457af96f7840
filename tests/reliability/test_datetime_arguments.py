"""Every datetime a caller sends is parsed one way: a bad string is ``InvalidInput`` naming the
argument or key, and nothing is written (contract §3.2), whichever function carries it: the
datetime arguments (``begin``, ``end``, ``expire``) and every ``*_at`` key (and ``expire``) of
every ``values`` dict."""

from __future__ import annotations

import pytest
from samples import SAMPLES, context, seed, table_contents

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.handlers import build_registry
from dbworker.protocol.wire import DATETIME_FIELDS

REGISTRY = build_registry()
BAD = ("next tuesday", "2024-13-01T00:00:00", "0999-01-01T00:00:00", ["2024-01-01"])

#: Handler arguments that carry a datetime (the registry cannot tell them from other strings).
DATETIME_ARGS = {"begin", "end", "expire"}
DATETIME_ARG_CALLS = sorted(
    (name, arg.name) for name, h in REGISTRY.items() for arg in h.args if arg.name in DATETIME_ARGS
)
VALUES_CALLS = sorted(
    (name, key)
    for name, h in REGISTRY.items()
    if any(arg.name == "values" for arg in h.args)
    for key in sorted(DATETIME_FIELDS)
)


def _refused(db, name: str, kwargs: dict, culprit: str) -> str:
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    before = table_contents(db.engine)
    with pytest.raises(exception.InvalidInput) as caught:
        api.call(context("admin"), name, **kwargs)
    assert type(caught.value) is exception.InvalidInput
    assert culprit in str(caught.value)
    assert table_contents(db.engine) == before, f"{name} wrote with a bad {culprit}"
    return str(caught.value)


def test_the_datetime_arguments_are_the_ones_the_catalogue_has():
    assert DATETIME_ARG_CALLS == [
        ("quota_reserve", "expire"),
        ("reservation_create", "expire"),
        ("volume_get_active_by_window", "begin"),
        ("volume_get_active_by_window", "end"),
    ]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(("name", "arg"), DATETIME_ARG_CALLS)
def test_a_bad_datetime_argument_is_invalid_input_naming_it(db, name, arg, bad):
    _refused(db, name, {**SAMPLES[name], arg: bad}, arg)


@pytest.mark.parametrize(("name", "key"), VALUES_CALLS)
def test_a_bad_datetime_in_values_is_invalid_input_naming_the_key(db, name, key):
    sample = SAMPLES[name]
    message = _refused(db, name, {**sample, "values": {**sample["values"], key: "next tuesday"}}, key)
    # The CinderBase timestamps are columns of every table: there the datetime check speaks.
    if key in ("created_at", "updated_at", "deleted_at"):
        assert "ISO 8601" in message, message
