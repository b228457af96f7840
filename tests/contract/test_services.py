"""Contract cases for the ``service_*`` functions (reference §2.1, §3.9; contract §9.12)."""

from __future__ import annotations

from datetime import datetime

import pytest

from dbworker import exception
from dbworker.core.context import admin_context
from dbworker.models import Service

SERVICE_FUNCTIONS = [
    ("service_get", {"service_id": 1}),
    ("service_get_by_host_and_topic", {"host": "h", "topic": "t"}),
    ("service_get_all", {}),
    ("service_get_all_by_topic", {"topic": "t"}),
    ("service_get_all_by_host", {"host": "h"}),
    ("service_get_all_volume_sorted", {}),
    ("service_get_by_args", {"host": "h", "binary": "b"}),
    ("service_create", {"values": {"host": "h"}}),
    ("service_update", {"service_id": 1, "values": {"host": "h2"}}),
    ("service_destroy", {"service_id": 1}),
]


def _service(api, ctx, **values):
    values = {"host": "host1", "binary": "cinder-volume", "topic": "cinder-volume", **values}
    return api.service_create(ctx, values)


@pytest.mark.parametrize(("name", "kwargs"), SERVICE_FUNCTIONS, ids=[n for n, _ in SERVICE_FUNCTIONS])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_service_functions_are_admin_only(api, db, request, name, kwargs, who):
    ctx = request.getfixturevalue(who)
    with pytest.raises(exception.AdminRequired):
        api.call(ctx, name, **kwargs)
    assert db.rows(Service) == []


def test_service_create_returns_the_record_with_folsom_defaults(api, admin):
    service = _service(api, admin)
    assert isinstance(service["id"], int)
    assert service["report_count"] == 0
    assert service["disabled"] is False
    assert service["availability_zone"] == "cinder"
    assert service["deleted"] is False
    assert isinstance(service["created_at"], datetime)
    assert service["updated_at"] is None and service["deleted_at"] is None


def test_service_get_returns_what_service_create_wrote(api, admin):
    created = _service(api, admin, report_count=3)
    assert api.service_get(admin, created["id"]) == created


def test_service_get_raises_service_not_found(api, admin):
    with pytest.raises(exception.ServiceNotFound) as caught:
        api.service_get(admin, 12345)
    assert caught.value.kwargs == {"service_id": 12345, "code": 404}
    assert str(caught.value) == "Service 12345 could not be found."


def test_service_update_returns_the_updated_record(api, admin):
    created = _service(api, admin)
    updated = api.service_update(admin, created["id"], {"report_count": 7})
    assert updated["report_count"] == 7
    assert isinstance(updated["updated_at"], datetime)
    assert api.service_get(admin, created["id"])["report_count"] == 7


def test_service_destroy_soft_deletes_and_bumps_updated_at(api, admin, db):
    created = _service(api, admin)
    assert api.service_destroy(admin, created["id"]) is None
    with pytest.raises(exception.ServiceNotFound):
        api.service_get(admin, created["id"])
    (row,) = db.rows(Service)
    assert row.deleted is True and row.deleted_at is not None and row.updated_at is not None


def test_service_get_all_volume_sorted_puts_services_without_volumes_first(api, admin):
    services = [_service(api, admin, host=f"h{i}") for i in range(3)]
    api.volume_create(admin, {"host": "h1", "size": 15})
    api.volume_create(admin, {"host": "h2", "size": 3})
    sorted_ = api.service_get_all_volume_sorted(admin)
    assert [(s["host"], gb) for s, gb in sorted_] == [("h0", 0), ("h2", 3), ("h1", 15)]
    assert sorted_[0][0] == services[0]


def test_service_create_rejects_unknown_keys_and_writes_nothing(api, admin, db):
    with pytest.raises(exception.InvalidInput) as caught:
        api.service_create(admin, {"host": "h", "no_such_column": 1})
    assert "no_such_column" in str(caught.value)
    assert db.rows(Service) == []


# --- the readers: which rows, in which order (reference §2.1; contract §9.13) --------------------
#: Rows created in this order by ``_seed``, with explicit ids out of insertion order, so that a
#: reader returning rows in storage (insertion) order instead of by id fails on PostgreSQL, whose
#: heap keeps insertion order (SQLite and InnoDB store rows in primary key order, so only
#: PostgreSQL can show a missing ORDER BY). Several rows differ from a query's row in one column
#: only (a host that starts the same, a binary equal to another row's topic, a disabled or a
#: deleted twin). Ids start high so that no autoincremented id of another test in the session
#: meets them.
BASE_ID = 1_000_000
SEED = {
    # key: (id - BASE_ID, host, binary, topic, disabled, deleted)
    "vol1-off": (15, "node1", "cinder-volume", "cinder-volume", True, False),
    "vol1-b": (18, "node1", "cinder-volume", "cinder-volume", False, False),
    "vol1": (13, "node1", "cinder-volume", "cinder-volume", False, False),
    "sch1": (11, "node1", "cinder-scheduler", "cinder-scheduler", False, False),
    "vol2": (12, "node2", "cinder-volume", "cinder-volume", False, False),
    "vol1-gone": (10, "node1", "cinder-volume", "cinder-volume", False, True),
    "vol10": (14, "node10", "cinder-volume", "cinder-volume", False, False),
    "sch2-off": (16, "node2", "cinder-scheduler", "cinder-scheduler", True, False),
    "bak2": (17, "node2", "cinder-volume", "cinder-backup", False, False),
    "sch1-gone-off": (9, "node1", "cinder-scheduler", "cinder-scheduler", True, True),
    "vol3-gone": (19, "node3", "cinder-volume", "cinder-volume", False, True),
}
#: Every seeded row in id order; the expected lists below are written in this order.
BY_ID = [
    *("sch1-gone-off", "vol1-gone", "sch1", "vol2", "vol1", "vol10"),
    *("vol1-off", "sch2-off", "bak2", "vol1-b", "vol3-gone"),
]
READ_DELETED = ["no", "yes", "only"]


def _seed(api, admin) -> dict[str, dict]:
    """Create the ``SEED`` rows (those marked deleted as soft-deleted rows) and return the created
    records by key."""
    rows = {}
    for key, (id_, host, binary, topic, disabled, deleted) in SEED.items():
        values = {"id": BASE_ID + id_, "host": host, "binary": binary, "topic": topic, "disabled": disabled}
        if deleted:
            values.update(deleted=True, deleted_at="2012-09-27T00:00:00")
        rows[key] = api.service_create(admin, values)
    assert [key for key, _ in sorted(rows.items(), key=lambda item: item[1]["id"])] == BY_ID
    return rows


@pytest.mark.parametrize(
    ("read_deleted", "disabled", "expected"),
    [
        ("no", {}, ["sch1", "vol2", "vol1", "vol10", "vol1-off", "sch2-off", "bak2", "vol1-b"]),
        (
            "no",
            {"disabled": None},
            ["sch1", "vol2", "vol1", "vol10", "vol1-off", "sch2-off", "bak2", "vol1-b"],
        ),
        ("no", {"disabled": True}, ["vol1-off", "sch2-off"]),
        ("no", {"disabled": False}, ["sch1", "vol2", "vol1", "vol10", "bak2", "vol1-b"]),
        ("yes", {}, BY_ID),
        ("yes", {"disabled": True}, ["sch1-gone-off", "vol1-off", "sch2-off"]),
        (
            "yes",
            {"disabled": False},
            ["vol1-gone", "sch1", "vol2", "vol1", "vol10", "bak2", "vol1-b", "vol3-gone"],
        ),
        ("only", {}, ["sch1-gone-off", "vol1-gone", "vol3-gone"]),
        ("only", {"disabled": True}, ["sch1-gone-off"]),
        ("only", {"disabled": False}, ["vol1-gone", "vol3-gone"]),
    ],
    ids=lambda value: f"disabled={value.get('disabled', 'omitted')}" if isinstance(value, dict) else None,
)
def test_service_get_all_filters_on_disabled_and_the_contexts_read_deleted_by_id(
    api, admin, read_deleted, disabled, expected
):
    rows = _seed(api, admin)
    got = api.service_get_all(admin_context(read_deleted=read_deleted), **disabled)
    assert [row["id"] for row in got] == [rows[key]["id"] for key in expected]
    assert got == [rows[key] for key in expected]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("node1", ["sch1", "vol1", "vol1-off", "vol1-b"]),
        ("node2", ["vol2", "sch2-off", "bak2"]),
        ("node10", ["vol10"]),
        ("node3", []),
        ("node", []),
    ],
)
def test_service_get_all_by_host_returns_live_rows_disabled_included_by_id(api, admin, host, expected):
    _check_live_rows_by_id(api.service_get_all_by_host, _seed(api, admin), host, expected)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("cinder-volume", ["vol2", "vol1", "vol10", "vol1-b"]),
        ("cinder-scheduler", ["sch1"]),
        ("cinder-backup", ["bak2"]),
        ("cinder", []),
    ],
)
def test_service_get_all_by_topic_returns_live_enabled_rows_by_id(api, admin, topic, expected):
    _check_live_rows_by_id(api.service_get_all_by_topic, _seed(api, admin), topic, expected)


def _check_live_rows_by_id(function, rows: dict[str, dict], arg: str, expected: list[str]) -> None:
    """``function(ctx, arg)`` returns the ``expected`` seeded rows, by id, whatever the context's
    ``read_deleted`` (these readers always return live rows)."""
    for read_deleted in READ_DELETED:
        got = function(admin_context(read_deleted=read_deleted), arg)
        assert [row["id"] for row in got] == [rows[key]["id"] for key in expected], read_deleted
        assert got == [rows[key] for key in expected]


@pytest.mark.parametrize(
    ("host", "binary", "read_deleted", "expected"),
    [
        ("node1", "cinder-volume", "no", "vol1"),  # lowest live id, not the deleted 10 nor 15 or 18
        ("node1", "cinder-volume", "yes", "vol1-gone"),
        ("node1", "cinder-volume", "only", "vol1-gone"),
        ("node1", "cinder-scheduler", "no", "sch1"),
        ("node1", "cinder-scheduler", "only", "sch1-gone-off"),
        ("node2", "cinder-scheduler", "no", "sch2-off"),  # disabled rows count
        ("node2", "cinder-volume", "no", "vol2"),
        ("node3", "cinder-volume", "yes", "vol3-gone"),
        ("node3", "cinder-volume", "no", None),  # deleted only
        ("node2", "cinder-scheduler", "only", None),  # live only
        ("node2", "cinder-backup", "no", None),  # a topic, not a binary, of node2
        ("node10", "cinder-scheduler", "no", None),
        ("node", "cinder-volume", "yes", None),
    ],
)
def test_service_get_by_args_returns_the_first_match_by_id_or_raises_host_binary_not_found(
    api, admin, host, binary, read_deleted, expected
):
    rows = _seed(api, admin)
    ctx = admin_context(read_deleted=read_deleted)
    if expected is None:
        with pytest.raises(exception.HostBinaryNotFound) as caught:
            api.service_get_by_args(ctx, host, binary)
        assert caught.value.kwargs == {"host": host, "binary": binary, "code": 404}
        assert str(caught.value) == f"Could not find binary {binary} on host {host}."
    else:
        assert api.service_get_by_args(ctx, host, binary) == rows[expected]


@pytest.mark.parametrize(
    ("host", "topic", "expected"),
    [
        ("node1", "cinder-volume", "vol1"),  # lowest live enabled id, not 10 (deleted), 15 (disabled), 18
        ("node1", "cinder-scheduler", "sch1"),
        ("node2", "cinder-volume", "vol2"),
        ("node2", "cinder-backup", "bak2"),
        ("node2", "cinder-scheduler", None),  # disabled only
        ("node3", "cinder-volume", None),  # deleted only
        ("node10", "cinder-scheduler", None),
        ("node", "cinder-volume", None),
    ],
)
def test_service_get_by_host_and_topic_returns_the_first_live_enabled_match_or_none(
    api, admin, host, topic, expected
):
    rows = _seed(api, admin)
    for read_deleted in READ_DELETED:  # always live rows: the context's read_deleted is ignored
        got = api.service_get_by_host_and_topic(admin_context(read_deleted=read_deleted), host, topic)
        assert got == (None if expected is None else rows[expected]), read_deleted
