"""Contract cases for the ``volume_type_*`` and ``volume_type_extra_specs_*`` functions
(reference §2.7, §2.8, §3.14, §3.15; contract §3.1, §3.2, §4), with a concurrency case on SQLite,
PostgreSQL and MariaDB: concurrent creations of one name make one type."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from testenv import DATABASES

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.models import VolumeType, VolumeTypeExtraSpecs

ADMIN_ONLY = [
    ("volume_type_create", {"values": {"name": "gold"}}),
    ("volume_type_destroy", {"name": "gold"}),
]
CONTEXT_ONLY = [
    ("volume_type_get", {"id": 1}),
    ("volume_type_get_by_name", {"name": "gold"}),
    ("volume_type_get_all", {}),
    ("volume_type_extra_specs_get", {"volume_type_id": 1}),
    ("volume_type_extra_specs_delete", {"volume_type_id": 1, "key": "k"}),
    ("volume_type_extra_specs_update_or_create", {"volume_type_id": 1, "extra_specs": {"k": "v"}}),
]
BAD_TYPE_VALUES = [
    pytest.param({"name": "gold", "no_such_column": 1}, "no_such_column", id="unknown-key"),
    pytest.param({"name": 7}, "name", id="wrong-type"),
    pytest.param({"name": "x" * 256}, "name", id="too-long"),
    pytest.param({}, "name", id="no-name"),
    pytest.param({"name": "gold", "extra_specs": ["a"]}, "extra_specs", id="specs-not-a-dict"),
    pytest.param({"name": "gold", "extra_specs": {"k": [1]}}, "extra_specs", id="spec-value-list"),
    pytest.param({"name": "gold", "extra_specs": {"k": "v" * 256}}, "extra_specs", id="spec-too-long"),
]
BAD_SPECS = [
    pytest.param({"k": {"nested": 1}}, id="value-dict"),
    pytest.param({"k": None}, id="value-null"),
    pytest.param({"k" * 256: "v"}, id="key-too-long"),
    pytest.param({"k": "v" * 256}, id="value-too-long"),
]


def _type(api, admin, name="gold", **specs):
    return api.volume_type_create(admin, {"name": name, "extra_specs": specs})


def _specs(db):
    return sorted((s.volume_type_id, s.key, s.value, s.deleted) for s in db.rows(VolumeTypeExtraSpecs))


@pytest.mark.parametrize(("name", "kwargs"), ADMIN_ONLY, ids=[n for n, _ in ADMIN_ONLY])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_volume_type_writes_are_admin_only(api, db, request, name, kwargs, who):
    with pytest.raises(exception.AdminRequired):
        getattr(api, name)(request.getfixturevalue(who), **kwargs)
    assert db.rows(VolumeType) == []


@pytest.mark.parametrize(("name", "kwargs"), CONTEXT_ONLY, ids=[n for n, _ in CONTEXT_ONLY])
def test_volume_type_functions_refuse_an_anonymous_context(api, anon, name, kwargs):
    with pytest.raises(exception.NotAuthorized):
        getattr(api, name)(anon, **kwargs)


def test_volume_type_create_returns_the_type_with_its_specs_as_a_dict(api, admin, db):
    created = _type(api, admin, tier="1", replicas=3, ssd=True)
    assert isinstance(created["id"], int) and created["name"] == "gold"
    assert created["extra_specs"] == {"tier": "1", "replicas": "3", "ssd": "True"}
    assert created["deleted"] is False and isinstance(created["created_at"], datetime)
    assert set(created) == {"id", "name", "created_at", "updated_at", "deleted_at", "deleted", "extra_specs"}
    assert len(db.rows(VolumeTypeExtraSpecs)) == 3


def test_volume_type_get_and_get_by_name_return_what_create_wrote(api, admin, user, other):
    created = _type(api, admin, tier="1")
    for ctx in (admin, user, other):
        assert api.volume_type_get(ctx, created["id"]) == created
        assert api.volume_type_get_by_name(ctx, "gold") == created


def test_volume_type_create_refuses_a_live_duplicate_name(api, admin, db):
    _type(api, admin, tier="1")
    with pytest.raises(exception.VolumeTypeExists) as caught:
        _type(api, admin, tier="2")
    assert caught.value.kwargs == {"name": "gold", "code": 500}
    assert len(db.rows(VolumeType)) == 1 and _specs(db)[0][1:3] == ("tier", "1")


def test_volume_type_create_may_reuse_the_name_of_a_deleted_type(api, admin):
    first = _type(api, admin)
    api.volume_type_destroy(admin, "gold")
    second = _type(api, admin, tier="2")
    assert second["id"] != first["id"]
    assert api.volume_type_get_by_name(admin, "gold") == second


@pytest.mark.parametrize(("values", "key"), BAD_TYPE_VALUES)
def test_volume_type_create_rejects_bad_values_and_writes_nothing(api, admin, db, values, key):
    with pytest.raises(exception.InvalidInput) as caught:
        api.volume_type_create(admin, values)
    assert key in str(caught.value)
    assert db.rows(VolumeType) == [] and db.rows(VolumeTypeExtraSpecs) == []


def test_volume_type_getters_raise_not_found(api, admin):
    with pytest.raises(exception.VolumeTypeNotFound) as caught:
        api.volume_type_get(admin, 999)
    assert caught.value.kwargs == {"volume_type_id": 999, "code": 404}
    with pytest.raises(exception.VolumeTypeNotFoundByName) as caught:
        api.volume_type_get_by_name(admin, "none")
    assert caught.value.kwargs == {"volume_type_name": "none", "code": 404}


def test_volume_type_get_sees_a_deleted_type_only_when_the_context_reads_deleted(api, admin):
    created = _type(api, admin, tier="1")
    api.volume_type_destroy(admin, "gold")
    with pytest.raises(exception.VolumeTypeNotFound):
        api.volume_type_get(admin, created["id"])
    deleted = api.volume_type_get(dataclasses.replace(admin, read_deleted="yes"), created["id"])
    assert deleted["deleted"] is True and deleted["extra_specs"] == {}


def test_volume_type_get_rejects_an_id_of_the_wrong_type(api, admin):
    with pytest.raises(exception.InvalidInput, match="id"):
        api.call(admin, "volume_type_get", id="1")


def test_volume_type_get_all_maps_names_to_types(api, admin, user):
    assert api.volume_type_get_all(user) == {}
    gold, silver = _type(api, admin, "gold", tier="1"), _type(api, admin, "silver")
    bronze = _type(api, admin, "bronze")
    api.volume_type_destroy(admin, "bronze")
    assert api.volume_type_get_all(user) == {"gold": gold, "silver": silver}
    everything = api.volume_type_get_all(user, inactive=True)
    assert sorted(everything) == ["bronze", "gold", "silver"]
    assert everything["bronze"]["id"] == bronze["id"] and everything["bronze"]["deleted"] is True


def test_volume_type_get_all_inactive_prefers_the_live_type_of_a_reused_name(api, admin):
    _type(api, admin)
    api.volume_type_destroy(admin, "gold")
    live = _type(api, admin)
    assert api.volume_type_get_all(admin, inactive=True) == {"gold": live}


def test_volume_type_destroy_soft_deletes_the_type_and_its_specs(api, admin, db):
    created = _type(api, admin, tier="1", ssd=True)
    other = _type(api, admin, "silver", tier="2")
    assert api.volume_type_destroy(admin, "gold") is None
    rows = {row.name: row for row in db.rows(VolumeType)}
    assert rows["gold"].deleted is True and rows["gold"].deleted_at is not None
    assert rows["gold"].updated_at is None and rows["silver"].deleted is False
    assert [s[3] for s in _specs(db) if s[0] == created["id"]] == [True, True]
    assert api.volume_type_extra_specs_get(admin, other["id"]) == {"tier": "2"}


def test_volume_type_destroy_of_a_missing_or_deleted_type_raises_not_found_by_name(api, admin):
    _type(api, admin)
    api.volume_type_destroy(admin, "gold")
    for name in ["gold", "none"]:
        with pytest.raises(exception.VolumeTypeNotFoundByName):
            api.volume_type_destroy(admin, name)


def test_extra_specs_get_returns_the_live_specs(api, admin, user):
    created = _type(api, admin, tier="1", ssd="yes")
    api.volume_type_extra_specs_delete(admin, created["id"], "ssd")
    assert api.volume_type_extra_specs_get(user, created["id"]) == {"tier": "1"}
    assert api.volume_type_extra_specs_get(user, 999) == {}


def test_extra_specs_update_or_create_returns_the_resulting_specs(api, admin, user, db):
    created = _type(api, admin, tier="1", keep="k")
    result = api.volume_type_extra_specs_update_or_create(
        user, created["id"], {"tier": 2, "ratio": 1.5, "ssd": False}
    )
    assert result == {"tier": "2", "keep": "k", "ratio": "1.5", "ssd": "False"}
    assert api.volume_type_get(admin, created["id"])["extra_specs"] == result
    assert len(db.rows(VolumeTypeExtraSpecs)) == 4


def test_extra_specs_update_or_create_recreates_a_deleted_key_as_a_new_row(api, admin, db):
    created = _type(api, admin, tier="1")
    api.volume_type_extra_specs_delete(admin, created["id"], "tier")
    result = api.volume_type_extra_specs_update_or_create(admin, created["id"], {"tier": "3"})
    assert result == {"tier": "3"}
    assert _specs(db) == [(created["id"], "tier", "1", True), (created["id"], "tier", "3", False)]


@pytest.mark.parametrize("name", ["update_or_create", "delete"])
def test_extra_specs_writes_to_a_missing_or_deleted_type_raise_not_found(api, admin, db, name):
    _type(api, admin)
    api.volume_type_destroy(admin, "gold")
    (deleted,) = db.rows(VolumeType)
    args = {"extra_specs": {"k": "v"}} if name == "update_or_create" else {"key": "k"}
    for type_id in [deleted.id, 999]:
        with pytest.raises(exception.VolumeTypeNotFound) as caught:
            api.call(admin, f"volume_type_extra_specs_{name}", volume_type_id=type_id, **args)
        assert caught.value.kwargs == {"volume_type_id": type_id, "code": 404}
    assert db.rows(VolumeTypeExtraSpecs) == []


@pytest.mark.parametrize("specs", BAD_SPECS)
def test_extra_specs_update_or_create_rejects_bad_specs_and_writes_nothing(api, admin, db, specs):
    created = _type(api, admin, tier="1")
    with pytest.raises(exception.InvalidInput, match="extra_specs"):
        api.volume_type_extra_specs_update_or_create(admin, created["id"], {"tier": "2", **specs})
    assert _specs(db) == [(created["id"], "tier", "1", False)]


def test_extra_specs_update_or_create_rejects_a_list(api, admin, db):
    created = _type(api, admin)
    with pytest.raises(exception.InvalidInput, match="extra_specs"):
        api.call(
            admin, "volume_type_extra_specs_update_or_create", volume_type_id=created["id"], extra_specs=["k"]
        )
    assert db.rows(VolumeTypeExtraSpecs) == []


def test_extra_specs_delete_of_an_absent_key_changes_nothing(api, admin, db):
    created = _type(api, admin, tier="1")
    assert api.volume_type_extra_specs_delete(admin, created["id"], "absent") is None
    assert _specs(db) == [(created["id"], "tier", "1", False)]
    (row,) = db.rows(VolumeTypeExtraSpecs)
    assert row.deleted_at is None


@pytest.mark.parametrize("database", DATABASES, indirect=True)
@pytest.mark.parametrize("other_types", [0, 3], ids=["empty-table", "other-types"])
def test_concurrent_creations_of_one_name_make_one_type(db, other_types):
    # Given a table with no type or with a few types of other names
    admin = admin_context()
    setup = LocalAPI.from_engine(db.engine)
    for n in range(other_types):
        _type(setup, admin, name=f"other-{n}")
    start = threading.Barrier(16)

    def create(_worker: int) -> str:
        api = LocalAPI.from_engine(db.engine)
        start.wait()
        try:
            return _type(api, admin, name="gold", tier="1")["name"]
        except exception.VolumeTypeExists:
            return "VolumeTypeExists"

    # When 16 workers create the type "gold" at the same time
    with ThreadPoolExecutor(16) as pool:
        outcomes = Counter(pool.map(create, range(16)))

    # Then one made it, the others were told it exists, and one live row holds the name
    assert outcomes == {"gold": 1, "VolumeTypeExists": 15}
    assert len(db.rows(VolumeType, VolumeType.name == "gold", VolumeType.deleted == False)) == 1
