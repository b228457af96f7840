"""Contract cases for ``quota_*``, ``quota_class_*`` and ``quota_usage_*`` (reference §2.10-§2.12;
contract §3.1, §9 items 1, 2, 15)."""

from __future__ import annotations

import pytest

from dbworker import exception
from dbworker.core.context import RequestContext
from dbworker.models import Quota, QuotaClass, QuotaUsage, Reservation

ADMIN_ONLY = [
    ("quota_create", {"project_id": "p1", "resource": "volumes", "limit": 1}),
    ("quota_update", {"project_id": "p1", "resource": "volumes", "limit": 1}),
    ("quota_destroy", {"project_id": "p1", "resource": "volumes"}),
    ("quota_destroy_all_by_project", {"project_id": "p1"}),
    ("quota_class_create", {"class_name": "c", "resource": "volumes", "limit": 1}),
    ("quota_class_update", {"class_name": "c", "resource": "volumes", "limit": 1}),
    ("quota_class_destroy", {"class_name": "c", "resource": "volumes"}),
    ("quota_class_destroy_all_by_name", {"class_name": "c"}),
    (
        "quota_usage_create",
        {"project_id": "p1", "resource": "volumes", "in_use": 0, "reserved": 0, "until_refresh": None},
    ),
    (
        "quota_usage_update",
        {"project_id": "p1", "resource": "volumes", "in_use": 0, "reserved": 0, "until_refresh": None},
    ),
    ("quota_usage_destroy", {"project_id": "p1", "resource": "volumes"}),
]

PROJECT_READS = [
    ("quota_get", {"project_id": "p1", "resource": "volumes"}),
    ("quota_get_all_by_project", {"project_id": "p1"}),
    ("quota_usage_get", {"project_id": "p1", "resource": "volumes"}),
    ("quota_usage_get_all_by_project", {"project_id": "p1"}),
]


@pytest.mark.parametrize(("name", "kwargs"), ADMIN_ONLY, ids=[n for n, _ in ADMIN_ONLY])
def test_quota_writes_are_admin_only_and_write_nothing(api, db, user, name, kwargs):
    with pytest.raises(exception.AdminRequired):
        api.call(user, name, **kwargs)
    assert db.rows(Quota) == [] and db.rows(QuotaClass) == [] and db.rows(QuotaUsage) == []


@pytest.mark.parametrize(("name", "kwargs"), PROJECT_READS, ids=[n for n, _ in PROJECT_READS])
@pytest.mark.parametrize(
    ("who", "error"), [("other", exception.NotAuthorized), ("anon", exception.NotAuthorized)]
)
def test_project_quota_reads_refuse_other_projects_and_anonymous(api, request, name, kwargs, who, error):
    with pytest.raises(error):
        api.call(request.getfixturevalue(who), name, **kwargs)


def test_quota_create_get_update_destroy_round_trip(api, admin, user, db):
    created = api.quota_create(admin, "p1", "volumes", 10)
    assert (created["project_id"], created["resource"], created["hard_limit"]) == ("p1", "volumes", 10)
    assert api.quota_get(user, "p1", "volumes") == created
    updated = api.quota_update(admin, "p1", "volumes", None)
    assert updated["hard_limit"] is None and updated["updated_at"] is not None
    assert api.quota_get_all_by_project(user, "p1") == {"project_id": "p1", "volumes": None}
    assert api.quota_destroy(admin, "p1", "volumes") is None
    with pytest.raises(exception.ProjectQuotaNotFound) as caught:
        api.quota_get(admin, "p1", "volumes")
    assert caught.value.kwargs == {"project_id": "p1", "code": 404}
    (row,) = db.rows(Quota)
    assert row.deleted is True and row.deleted_at is not None


@pytest.mark.parametrize("name", ["quota_update", "quota_destroy"])
def test_quota_changes_of_a_missing_quota_raise_project_quota_not_found(api, admin, name):
    kwargs = {"limit": 3} if name == "quota_update" else {}
    with pytest.raises(exception.ProjectQuotaNotFound):
        api.call(admin, name, project_id="p9", resource="volumes", **kwargs)


@pytest.mark.parametrize("limit", ["10", 1.5, True, 2**40])
def test_quota_create_rejects_a_non_integer_limit(api, admin, db, limit):
    with pytest.raises(exception.InvalidInput) as caught:
        api.quota_create(admin, "p1", "volumes", limit)
    assert "limit" in str(caught.value)
    assert db.rows(Quota) == []


def test_quota_get_all_by_project_lists_the_oldest_row_of_each_resource(api, admin):
    api.quota_create(admin, "p1", "volumes", 1)
    api.quota_create(admin, "p1", "volumes", 2)
    api.quota_create(admin, "p1", "gigabytes", 30)
    api.quota_create(admin, "p2", "volumes", 99)
    assert api.quota_get_all_by_project(admin, "p1") == {"project_id": "p1", "volumes": 1, "gigabytes": 30}
    assert api.quota_get(admin, "p1", "volumes")["hard_limit"] == 1


def test_quota_destroy_all_by_project_removes_quotas_usages_and_reservations(api, admin, user, db):
    api.quota_create(admin, "p1", "volumes", 5)
    api.quota_create(admin, "p2", "volumes", 5)
    api.quota_reserve(user, ["volumes"], {"volumes": 5}, {"volumes": 1})
    assert api.quota_destroy_all_by_project(admin, "p1") is None
    assert api.quota_get_all_by_project(user, "p1") == {"project_id": "p1"}
    assert api.quota_usage_get_all_by_project(user, "p1") == {"project_id": "p1"}
    assert api.reservation_get_all_by_project(user, "p1") == {"project_id": "p1"}
    assert all(r.deleted for r in db.rows(Reservation))
    assert all(u.deleted and u.live is None for u in db.rows(QuotaUsage))
    assert api.quota_get(admin, "p2", "volumes")["hard_limit"] == 5


# --- quota classes ----------------------------------------------------------------------------
def test_quota_class_create_get_update_destroy_round_trip(api, admin, user, db):
    created = api.quota_class_create(admin, "gold", "volumes", 50)
    assert api.quota_class_get(user, "gold", "volumes") == created
    assert api.quota_class_update(admin, "gold", "volumes", 60)["hard_limit"] == 60
    assert api.quota_class_destroy(admin, "gold", "volumes") is None
    with pytest.raises(exception.QuotaClassNotFound) as caught:
        api.quota_class_get(admin, "gold", "volumes")
    assert caught.value.kwargs == {"class_name": "gold", "code": 404}
    assert db.rows(QuotaClass)[0].deleted is True


def test_quota_class_get_all_by_name_needs_the_users_own_class(api, admin, user):
    api.quota_class_create(admin, "gold", "volumes", 50)
    api.quota_class_create(admin, "gold", "gigabytes", 500)
    expected = {"class_name": "gold", "volumes": 50, "gigabytes": 500}
    assert api.quota_class_get_all_by_name(admin, "gold") == expected
    member = RequestContext(user_id="u1", project_id="p1", quota_class="gold")
    assert api.quota_class_get_all_by_name(member, "gold") == expected
    with pytest.raises(exception.NotAuthorized):
        api.quota_class_get_all_by_name(user, "gold")


def test_quota_class_destroy_all_by_name_soft_deletes_only_that_class(api, admin):
    api.quota_class_create(admin, "gold", "volumes", 50)
    api.quota_class_create(admin, "silver", "volumes", 5)
    assert api.quota_class_destroy_all_by_name(admin, "gold") is None
    assert api.quota_class_destroy_all_by_name(admin, "none") is None
    assert api.quota_class_get_all_by_name(admin, "gold") == {"class_name": "gold"}
    assert api.quota_class_get(admin, "silver", "volumes")["hard_limit"] == 5


# --- quota usages -----------------------------------------------------------------------------
def test_quota_usage_create_get_and_list(api, admin, user):
    usage = api.quota_usage_create(admin, "p1", "volumes", 2, 1, None)
    assert (usage["in_use"], usage["reserved"], usage["until_refresh"]) == (2, 1, None)
    assert api.quota_usage_get(user, "p1", "volumes") == usage
    assert api.quota_usage_get_all_by_project(user, "p1") == {
        "project_id": "p1",
        "volumes": {"in_use": 2, "reserved": 1},
    }


def test_a_second_live_usage_for_the_pair_is_a_duplicate(api, admin, db):
    api.quota_usage_create(admin, "p1", "volumes", 0, 0, None)
    with pytest.raises(exception.Duplicate):
        api.quota_usage_create(admin, "p1", "volumes", 5, 0, None)
    api.quota_usage_destroy(admin, "p1", "volumes")
    assert api.quota_usage_create(admin, "p1", "volumes", 5, 0, None)["in_use"] == 5
    assert sorted(u.deleted for u in db.rows(QuotaUsage)) == [False, True]


@pytest.mark.parametrize("alias", ["project_id", "class_name"])
def test_quota_usage_update_takes_project_id_or_its_alias_and_returns_the_record(api, admin, alias):
    api.quota_usage_create(admin, "p1", "volumes", 0, 0, None)
    updated = api.call(
        admin,
        "quota_usage_update",
        resource="volumes",
        in_use=3,
        reserved=2,
        until_refresh=4,
        **{alias: "p1"},
    )
    assert (updated["in_use"], updated["reserved"], updated["until_refresh"]) == (3, 2, 4)
    assert api.quota_usage_get(admin, "p1", "volumes") == updated


def test_the_client_signature_of_quota_usage_update_uses_project_id(api, admin):
    api.quota_usage_create(admin, "p1", "volumes", 0, 0, None)
    assert api.quota_usage_update(admin, "p1", "volumes", 1, 0, None)["in_use"] == 1


@pytest.mark.parametrize("name", ["quota_usage_update", "quota_usage_destroy", "quota_usage_get"])
def test_quota_usage_functions_raise_quota_usage_not_found(api, admin, name):
    extra = {"in_use": 1, "reserved": 0, "until_refresh": None} if name.endswith("update") else {}
    with pytest.raises(exception.QuotaUsageNotFound) as caught:
        api.call(admin, name, project_id="p9", resource="volumes", **extra)
    assert caught.value.kwargs == {"project_id": "p9", "code": 404}


@pytest.mark.parametrize("bad", [{"in_use": "1"}, {"reserved": None}, {"until_refresh": 1.5}])
def test_quota_usage_create_rejects_bad_counts(api, admin, db, bad):
    kwargs = {
        "project_id": "p1",
        "resource": "volumes",
        "in_use": 0,
        "reserved": 0,
        "until_refresh": None,
        **bad,
    }
    with pytest.raises(exception.InvalidInput):
        api.call(admin, "quota_usage_create", **kwargs)
    assert db.rows(QuotaUsage) == []
