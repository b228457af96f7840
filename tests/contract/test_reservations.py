"""Contract cases for ``quota_reserve`` and ``reservation_*`` (reference §2.13, §3.1-§3.4, §3.18;
contract §3.2, §6, §9 items 4, 5, 8)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from dbworker import exception
from dbworker.models import QuotaUsage, Reservation, utcnow

BOTH = ["volumes", "gigabytes"]
QUOTAS = {"volumes": 3, "gigabytes": 100}


def _usages(api, admin, project="p1"):
    return api.quota_usage_get_all_by_project(admin, project)


def test_quota_reserve_creates_usage_rows_and_reservations(api, admin, user, db):
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1, "gigabytes": 10})
    assert len(uuids) == 2
    assert _usages(api, admin) == {
        "project_id": "p1",
        "volumes": {"in_use": 0, "reserved": 1},
        "gigabytes": {"in_use": 0, "reserved": 10},
    }
    assert api.reservation_get_all_by_project(user, "p1") == {
        "project_id": "p1",
        "volumes": {uuids[0]: 1},
        "gigabytes": {uuids[1]: 10},
    }
    assert len(db.rows(QuotaUsage)) == 2


def test_quota_reserve_refreshes_both_volume_resources_from_live_volumes(api, admin, user):
    api.volume_create(admin, {"project_id": "p1", "size": 7})
    api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1})
    assert _usages(api, admin) == {
        "project_id": "p1",
        "gigabytes": {"in_use": 7, "reserved": 0},
        "volumes": {"in_use": 1, "reserved": 1},
    }


def test_over_quota_keeps_the_usage_refreshes_and_reserves_nothing(api, admin, user, db):
    api.volume_create(admin, {"project_id": "p1", "size": 95})
    with pytest.raises(exception.OverQuota) as caught:
        api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1, "gigabytes": 10})
    assert caught.value.kwargs["overs"] == ["gigabytes"]
    assert caught.value.kwargs["quotas"] == QUOTAS
    assert caught.value.kwargs["usages"] == {
        "volumes": {"in_use": 1, "reserved": 0},
        "gigabytes": {"in_use": 95, "reserved": 0},
    }
    assert sorted((u.resource, u.in_use, u.reserved) for u in db.rows(QuotaUsage)) == [
        ("gigabytes", 95, 0),
        ("volumes", 1, 0),
    ]
    assert db.rows(Reservation) == []


@pytest.mark.parametrize("limit", [-1, -7, None], ids=["-1", "-7", "null"])
def test_negative_and_unlimited_quotas_are_never_over(api, admin, user, limit):
    api.volume_create(admin, {"project_id": "p1", "size": 500})  # refreshed: 1 volume, 500 gigabytes
    with pytest.raises(exception.OverQuota):  # the same deltas are over any limit >= 0 ...
        api.quota_reserve(user, BOTH, {"volumes": 0, "gigabytes": 0}, {"volumes": 50, "gigabytes": 9})
    quotas = {"volumes": limit, "gigabytes": limit}  # ... and reserved under a negative or null one
    uuids = api.quota_reserve(user, BOTH, quotas, {"volumes": 50, "gigabytes": 9})
    assert api.reservation_get_all_by_project(user, "p1") == {
        "project_id": "p1",
        "volumes": {uuids[0]: 50},
        "gigabytes": {uuids[1]: 9},
    }
    assert _usages(api, admin) == {
        "project_id": "p1",
        "volumes": {"in_use": 1, "reserved": 50},
        "gigabytes": {"in_use": 500, "reserved": 9},
    }


def test_a_negative_delta_below_zero_usage_is_reserved(api, admin, user):
    # Folsom (reference §3.1 step 5) only logs the "unders": Cinder's delete path reserves
    # volumes=-1, gigabytes=-size, which must work even when the usage drifted low.
    api.volume_create(admin, {"project_id": "p1", "size": 2})  # refreshed: 1 volume, 2 gigabytes
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": -3, "gigabytes": -2})
    assert api.reservation_get_all_by_project(user, "p1") == {
        "project_id": "p1",
        "volumes": {uuids[0]: -3},
        "gigabytes": {uuids[1]: -2},
    }
    # A negative delta never touches reserved; committing it takes in_use down (below 0 here).
    assert _usages(api, admin) == {
        "project_id": "p1",
        "volumes": {"in_use": 1, "reserved": 0},
        "gigabytes": {"in_use": 2, "reserved": 0},
    }
    api.reservation_commit(user, uuids)
    assert _usages(api, admin) == {
        "project_id": "p1",
        "volumes": {"in_use": -2, "reserved": 0},
        "gigabytes": {"in_use": 0, "reserved": 0},
    }
    assert api.reservation_get_all_by_project(user, "p1") == {"project_id": "p1"}


def test_a_reservation_below_zero_logs_a_warning_naming_the_resources_under_the_request(db, admin, user):
    from oslo_context import context as oslo_context

    from dbworker.api import LocalAPI

    class Capture(logging.Handler):
        def emit(self, record):
            current = oslo_context.get_current()
            seen.append((record.levelno, record.getMessage(), current and current.request_id))

    seen: list = []
    api = LocalAPI.from_engine(db.engine)
    api.volume_create(admin, {"project_id": "p1", "size": 2})
    logger = logging.getLogger("dbworker.handlers.quota_reserve")
    capture = Capture()
    logger.addHandler(capture)
    try:
        api.quota_reserve(user, BOTH, QUOTAS, {"volumes": -3, "gigabytes": -2})
    finally:
        logger.removeHandler(capture)
    ((level, message, request_id),) = seen
    assert level == logging.WARNING and "volumes" in message and "gigabytes" not in message
    assert request_id == user.request_id  # oslo.log prints it on the line


def test_a_negative_reservation_below_zero_rolls_back_without_changing_usage(api, admin, user):
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": -1})
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 0}
    api.reservation_rollback(user, uuids)
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 0}
    with pytest.raises(exception.ReservationNotFound):
        api.reservation_get(user, uuids[0])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"deltas": {"volumes": 1, "snapshots": 1}}, "snapshots"),
        ({"deltas": {"volumes": "1"}}, "volumes"),
        ({"resources": ["gigabytes"]}, "volumes"),
        ({"quotas": {"volumes": "3", "gigabytes": 1}}, "quotas"),
        ({"until_refresh": -1}, "until_refresh"),
    ],
)
def test_quota_reserve_rejects_bad_input_and_writes_nothing(api, user, db, kwargs, word):
    call = {"resources": BOTH, "quotas": QUOTAS, "deltas": {"volumes": 1}, **kwargs}
    with pytest.raises(exception.InvalidInput) as caught:
        api.call(user, "quota_reserve", **call)
    assert word in str(caught.value)
    assert db.rows(QuotaUsage) == []


@pytest.mark.parametrize(
    "expire", ["next tuesday", "tomorrow", "0001-01-01T00:00:00", True, [1], float("inf"), 1e300]
)
def test_a_bad_expire_is_invalid_input_naming_it(api, user, db, expire):
    # Contract §3.2: a bad datetime string is InvalidInput, whatever argument carries it.
    with pytest.raises(exception.InvalidInput) as caught:
        api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1}, expire=expire)
    assert type(caught.value) is exception.InvalidInput and "expire" in str(caught.value)
    assert db.rows(Reservation) == [] and db.rows(QuotaUsage) == []


@pytest.mark.parametrize(
    ("expire", "offset"),
    [(None, 86400), (60, 60), (-5, -5), ("2030-01-02T03:04:05", None), ("2030-01-02T05:04:05+02:00", None)],
)
def test_quota_reserve_expire_forms(api, user, expire, offset):
    (uuid,) = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1}, expire=expire)
    got = api.reservation_get(user, uuid)["expire"]
    if offset is None:
        assert got == datetime(2030, 1, 2, 3, 4, 5)
    else:
        assert abs(got - (utcnow() + timedelta(seconds=offset))) < timedelta(seconds=30)


def test_a_user_may_reserve_only_for_its_own_project(api, admin, user, db):
    with pytest.raises(exception.NotAuthorized):
        api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1}, project_id="p2")
    assert db.rows(QuotaUsage) == []
    api.quota_reserve(admin, BOTH, QUOTAS, {"volumes": 1}, project_id="p2")
    assert _usages(api, admin, "p2")["volumes"] == {"in_use": 0, "reserved": 1}


def test_until_refresh_counts_down_to_a_resync(api, admin, user):
    api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1}, until_refresh=2)
    api.quota_usage_update(admin, "p1", "volumes", 2, 1, 2)
    api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 0})
    assert _usages(api, admin)["volumes"]["in_use"] == 2
    api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 0})
    assert _usages(api, admin)["volumes"]["in_use"] == 0


def test_reservation_commit_moves_reserved_to_in_use(api, admin, user, db):
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1, "gigabytes": 10})
    assert api.reservation_commit(user, [*uuids, "unknown"]) is None
    assert _usages(api, admin)["gigabytes"] == {"in_use": 10, "reserved": 0}
    (uuid,) = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": -1})
    api.reservation_commit(user, [uuid])
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 0}
    assert all(r.deleted for r in db.rows(Reservation))


def test_reservation_rollback_returns_positive_deltas_only(api, admin, user):
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 2, "gigabytes": 10})
    assert api.reservation_rollback(user, uuids) is None
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 0}
    assert api.reservation_get_all_by_project(user, "p1") == {"project_id": "p1"}


@pytest.mark.parametrize("name", ["reservation_commit", "reservation_rollback"])
def test_a_user_cannot_settle_another_projects_reservations(api, admin, user, other, name):
    uuids = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1})
    api.call(other, name, reservations=uuids)
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 1}
    with pytest.raises(exception.ReservationNotFound):
        api.reservation_get(other, uuids[0])
    api.call(admin, name, reservations=uuids)
    assert _usages(api, admin)["volumes"]["reserved"] == 0


def test_reservation_expire_rolls_back_only_expired_reservations(api, admin, user, db):
    (old,) = api.quota_reserve(user, BOTH, QUOTAS, {"volumes": 1}, expire=-10)
    (new,) = api.quota_reserve(user, BOTH, QUOTAS, {"gigabytes": 5})
    with pytest.raises(exception.AdminRequired):
        api.reservation_expire(user)
    assert api.reservation_expire(admin) is None
    assert _usages(api, admin)["volumes"] == {"in_use": 0, "reserved": 0}
    assert _usages(api, admin)["gigabytes"] == {"in_use": 0, "reserved": 5}
    with pytest.raises(exception.ReservationNotFound):
        api.reservation_get(admin, old)
    assert api.reservation_get(user, new)["delta"] == 5


def test_reservation_create_get_destroy(api, admin, user, db):
    usage = api.quota_usage_create(admin, "p1", "volumes", 0, 0, None)
    created = api.reservation_create(admin, "u-1", usage, "p1", "volumes", 2, "2031-01-01T00:00:00")
    assert created["usage_id"] == usage["id"] and created["expire"] == datetime(2031, 1, 1)
    assert api.reservation_get(user, "u-1") == created
    with pytest.raises(exception.AdminRequired):
        api.reservation_destroy(user, "u-1")
    assert api.reservation_destroy(admin, "u-1") is None
    with pytest.raises(exception.ReservationNotFound) as caught:
        api.reservation_destroy(admin, "u-1")
    assert caught.value.kwargs == {"uuid": "u-1", "code": 404}


@pytest.mark.parametrize("usage", [{}, {"id": 999}, {"id": "x"}])
def test_reservation_create_needs_a_live_usage_of_the_project(api, admin, db, usage):
    api.quota_usage_create(admin, "p2", "volumes", 0, 0, None)
    with pytest.raises(exception.InvalidInput):
        api.reservation_create(admin, "u-1", usage, "p1", "volumes", 1, None)
    assert db.rows(Reservation) == []


@pytest.mark.parametrize("who", ["anon", "other"])
def test_reservation_reads_are_refused_to_anonymous_and_other_projects(api, request, who):
    with pytest.raises(exception.NotAuthorized):
        api.reservation_get_all_by_project(request.getfixturevalue(who), "p1")
