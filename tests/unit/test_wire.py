"""The wire format: one datetime format, strict encoding, replies decoded back to datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.core.query import check_datetime
from dbworker.core.serialize import View, to_primitive
from dbworker.protocol.times import format_time, parse_time
from dbworker.protocol.wire import Reply, decode_reply, encode


def test_datetimes_travel_as_naive_utc_with_microseconds():
    assert format_time(datetime(2012, 9, 26, 1, 2, 3)) == "2012-09-26T01:02:03.000000"
    aware = datetime(2012, 9, 26, 3, 2, 3, 7, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(aware) == "2012-09-26T01:02:03.000007"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2012-09-26T01:02:03.000007", datetime(2012, 9, 26, 1, 2, 3, 7)),
        ("2012-09-26", datetime(2012, 9, 26)),
        ("2012-09-26T03:02:03+02:00", datetime(2012, 9, 26, 1, 2, 3)),
        ("2012-09-26T01:02:03Z", datetime(2012, 9, 26, 1, 2, 3)),
    ],
)
def test_parse_time_reads_iso_8601_into_naive_utc(text, expected):
    assert parse_time(text) == expected
    assert check_datetime("begin", text) == expected


@pytest.mark.parametrize(
    ("bad", "error", "reason"),
    [
        ("yesterday", ValueError, "begin: 'yesterday' is not an ISO 8601 datetime"),
        ("2012-13-01", ValueError, "begin: '2012-13-01' is not an ISO 8601 datetime"),
        (12, TypeError, "begin: expected an ISO 8601 datetime string, got int"),
        (["2012-01-01"], TypeError, "begin: expected an ISO 8601 datetime string, got list"),
    ],
)
def test_a_datetime_argument_that_is_not_iso_8601_is_invalid_input_naming_it(bad, error, reason):
    with pytest.raises(error):
        parse_time(bad)
    with pytest.raises(exception.InvalidInput) as caught:
        check_datetime("begin", bad)
    assert caught.value.kwargs["reason"] == reason


@pytest.mark.parametrize("bad", [None, "0999-12-31T23:59:59"])
def test_a_datetime_argument_needs_a_year_from_1000_on(bad):
    with pytest.raises(exception.InvalidInput, match="begin: a datetime from the year 1000 on is required"):
        check_datetime("begin", bad)


def test_encode_is_strict():
    assert encode({"a": [1, (2, 3)], "t": datetime(2020, 1, 1, tzinfo=UTC)}) == {
        "a": [1, [2, 3]],
        "t": "2020-01-01T00:00:00.000000",
    }
    for bad in ({1, 2}, object(), {1: "int key"}):
        with pytest.raises(TypeError):
            encode(bad)


RECORD = {
    "id": 1,
    "deleted": False,
    "created_at": "2020-01-01T00:00:00.000001",
    "updated_at": None,
    "metadata": {"created_at": "2020-01-01T00:00:00.000001", "id": "a", "deleted": "no"},
    "volume_type": {"id": 2, "deleted": False, "created_at": "2021-01-01T00:00:00.000000"},
    "volume_metadata": [{"id": 3, "key": "k", "value": "v", "deleted_at": "2022-01-01T00:00:00.000000"}],
}


def test_decode_reply_turns_record_datetimes_back_and_leaves_user_dicts_alone():
    (record,) = decode_reply([RECORD], Reply.RECORDS)
    assert record["created_at"] == datetime(2020, 1, 1, 0, 0, 0, 1)
    assert record["updated_at"] is None
    assert record["metadata"] == RECORD["metadata"]
    assert record["volume_type"]["created_at"] == datetime(2021, 1, 1)
    assert record["volume_metadata"][0]["deleted_at"] == datetime(2022, 1, 1)


@pytest.mark.parametrize(
    "reply",
    [
        {"id": "a", "deleted": "no", "created_at": "tomorrow"},  # looks like a record, is metadata
        {"created_at": "2020-01-01T00:00:00.000001"},
        ["2020-01-01T00:00:00.000001"],
        None,
    ],
)
def test_a_plain_reply_comes_back_as_sent_whatever_its_keys(reply):
    assert decode_reply(reply, Reply.PLAIN) == reply


def test_decode_reply_follows_the_other_shapes():
    by_name = decode_reply({"gold": RECORD}, Reply.RECORDS_BY_NAME)
    assert by_name["gold"]["created_at"] == datetime(2020, 1, 1, 0, 0, 0, 1)
    ((service, gigabytes),) = decode_reply([[RECORD, 7]], Reply.RECORD_PAIRS)
    assert service["created_at"] == datetime(2020, 1, 1, 0, 0, 0, 1) and gigabytes == 7
    assert decode_reply(None, Reply.RECORD) is None


def test_to_primitive_refuses_what_json_cannot_carry():
    for bad in ({1}, object(), {1: "x"}):
        with pytest.raises(TypeError):
            to_primitive(bad, View())


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"user": "u", "project": "p"}, ("u", "p", False)),
        ({"user_id": "u", "project_id": "p", "roles": ["admin"]}, ("u", "p", True)),
        ({"is_admin": False, "roles": ["admin"]}, (None, None, False)),
        ({}, (None, None, False)),
        (None, (None, None, False)),
    ],
)
def test_context_from_dict_reads_oslo_and_cinder_keys(values, expected):
    ctx = RequestContext.from_dict(values)
    assert (ctx.user_id, ctx.project_id, ctx.is_admin) == expected


def test_context_keeps_the_callers_request_id_and_validates_read_deleted():
    assert RequestContext.from_dict({"request_id": "req-1"}).request_id == "req-1"
    assert RequestContext.from_dict({}).request_id.startswith("req-")
    with pytest.raises(exception.InvalidInput, match="read_deleted"):
        RequestContext.from_dict({"read_deleted": "maybe"})
    with pytest.raises(exception.InvalidInput, match="user_id"):
        RequestContext.from_dict({"user_id": 5})
