"""Contract cases for the ``volume_*`` functions on the ``volumes`` table (reference §2.4, §3.6-§3.8,
§3.10, §3.11; contract §3.1, §4, §9.10, §9.11, §9.13, §9.14). Metadata: test_volume_metadata.py."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy.orm import Session

from dbworker import exception
from dbworker.core.context import RequestContext, admin_context
from dbworker.models import IscsiTarget, Volume, VolumeMetadata, VolumeType, VolumeTypeExtraSpecs

INSTANCE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

ADMIN_ONLY = [
    ("volume_get_all", {}),
    ("volume_get_all_by_host", {"host": "h1"}),
    ("volume_get_all_by_instance_uuid", {"instance_uuid": INSTANCE}),
    ("volume_attached", {"volume_id": "vol-a", "instance_id": INSTANCE, "mountpoint": "/dev/vdb"}),
    ("volume_detached", {"volume_id": "vol-a"}),
    ("volume_destroy", {"volume_id": "vol-a"}),
    ("volume_data_get_for_project", {"project_id": "p1"}),
]

CONTEXT_ONLY = [
    ("volume_create", {"values": {"size": 1}}),
    ("volume_get", {"volume_id": "vol-a"}),
    ("volume_get_all_by_project", {"project_id": "p1"}),
    ("volume_update", {"volume_id": "vol-a", "values": {"size": 2}}),
    ("volume_get_active_by_window", {"begin": "2020-01-01T00:00:00"}),
]


def _volume(api, ctx, **values):
    values = {"project_id": "p1", "user_id": "u1", "host": "h1", "size": 1, **values}
    return api.volume_create(ctx, values)


def _insert(db, *rows):
    """Write rows another family owns (types, targets) straight to the database."""
    with Session(db.engine, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)
    return rows


def _ids(volumes):
    return [v["id"] for v in volumes]


def _user(read_deleted="no"):
    return RequestContext(user_id="u1", project_id="p1", read_deleted=read_deleted)


# --- authorization ----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs"), ADMIN_ONLY, ids=[n for n, _ in ADMIN_ONLY])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_admin_volume_functions_refuse_others_and_change_nothing(api, admin, db, request, name, kwargs, who):
    before = _volume(api, admin, id="vol-a", instance_uuid=INSTANCE)
    with pytest.raises(exception.AdminRequired):
        api.call(request.getfixturevalue(who), name, **kwargs)
    assert api.volume_get(admin, "vol-a") == before


@pytest.mark.parametrize(("name", "kwargs"), CONTEXT_ONLY, ids=[n for n, _ in CONTEXT_ONLY])
def test_context_volume_functions_refuse_an_anonymous_context(api, admin, anon, db, name, kwargs):
    before = _volume(api, admin, id="vol-a")
    with pytest.raises(exception.NotAuthorized) as caught:
        api.call(anon, name, **kwargs)
    assert type(caught.value) is exception.NotAuthorized
    assert db.rows(Volume, Volume.id != "vol-a") == []
    assert api.volume_get(admin, "vol-a") == before


def test_a_user_cannot_see_or_change_another_projects_volume(api, admin, other, db):
    before = _volume(api, admin, id="vol-a")
    with pytest.raises(exception.VolumeNotFound):
        api.volume_get(other, "vol-a")
    with pytest.raises(exception.VolumeNotFound):
        api.volume_update(other, "vol-a", {"size": 99})
    with pytest.raises(exception.NotAuthorized):
        api.volume_get_all_by_project(other, "p1")
    assert api.volume_get_active_by_window(other, "2000-01-01T00:00:00") == []
    with pytest.raises(exception.NotAuthorized):
        api.volume_get_active_by_window(other, "2000-01-01T00:00:00", project_id="p1")
    assert api.volume_get(admin, "vol-a") == before


# --- volume_create ----------------------------------------------------------------------------
def test_volume_create_returns_the_full_record_with_computed_fields(api, admin):
    volume = api.volume_create(admin, {"size": 2, "metadata": {"a": "x"}, "admin_metadata": {"k": "v"}})
    assert str(uuid.UUID(volume["id"], version=4)) == volume["id"]
    assert volume["name"] == f"volume-{volume['id']}"
    assert volume["size"] == 2 and volume["status"] is None and volume["attach_time"] is None
    assert volume["deleted"] is False and volume["deleted_at"] is None and volume["updated_at"] is None
    assert isinstance(volume["created_at"], datetime)
    assert volume["metadata"] == {"a": "x"}
    assert [(m["key"], m["value"], m["volume_id"]) for m in volume["volume_metadata"]] == [
        ("a", "x", volume["id"])
    ]
    assert volume["volume_type"] is None
    assert volume["admin_metadata"] == {"k": "v"}
    assert api.volume_get(admin, volume["id"]) == volume


def test_volume_create_stores_metadata_values_in_their_string_form(api, admin):
    volume = api.volume_create(admin, {"metadata": {"s": "x", "i": 3, "b": True, "f": 1.5}})
    assert volume["metadata"] == {"b": "True", "f": "1.5", "i": "3", "s": "x"}


def test_volume_create_by_a_user_fills_user_and_project_from_the_context(api, user):
    volume = api.volume_create(user, {"size": 1, "metadata": {"a": "1"}})
    assert (volume["user_id"], volume["project_id"]) == ("u1", "p1")
    assert "admin_metadata" not in volume
    assert api.volume_get(user, volume["id"]) == volume


def test_volume_create_keeps_a_given_id_and_a_users_explicit_own_project(api, user):
    volume = api.volume_create(user, {"id": "vol-a", "project_id": "p1", "user_id": "someone"})
    assert (volume["id"], volume["project_id"], volume["user_id"]) == ("vol-a", "p1", "someone")


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"project_id": "p2"}, exception.NotAuthorized),
        ({"admin_metadata": {"k": "v"}}, exception.AdminRequired),
    ],
    ids=["another_project", "admin_metadata"],
)
def test_volume_create_by_a_user_is_refused_and_writes_nothing(api, user, db, values, error):
    with pytest.raises(error):
        api.volume_create(user, {"metadata": {"a": "1"}, **values})
    assert db.rows(Volume) == [] and db.rows(VolumeMetadata) == []


@pytest.mark.parametrize("deleted", [False, True], ids=["live", "deleted"])
def test_volume_create_with_a_used_id_raises_duplicate(api, admin, db, deleted):
    _volume(api, admin, id="vol-a", size=1)
    if deleted:
        api.volume_destroy(admin, "vol-a")
    with pytest.raises(exception.Duplicate):
        _volume(api, admin, id="vol-a", size=9, metadata={"a": "1"})
    assert [v.size for v in db.rows(Volume)] == [1]
    assert db.rows(VolumeMetadata) == []


BAD_VALUES = [
    ({"no_such_column": 1}, "no_such_column"),
    ({"size": "big"}, "size"),
    ({"display_name": "x" * 256}, "display_name"),
    ({"id": "x" * 37}, "id"),
    ({"scheduled_at": "yesterday"}, "scheduled_at"),
    ({"metadata": {"a": ["list"]}}, "metadata"),
    ({"metadata": {"a": None}}, "metadata"),
    ({"metadata": "a=1"}, "metadata"),
    ({"metadata": {"k" * 256: "v"}}, "metadata"),
]


@pytest.mark.parametrize(("values", "named"), BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_volume_create_rejects_bad_values_and_writes_nothing(api, admin, db, values, named):
    with pytest.raises(exception.InvalidInput) as caught:
        api.volume_create(admin, {"size": 1, "metadata": {"ok": "1"}, **values})
    assert named in str(caught.value)
    assert db.rows(Volume) == [] and db.rows(VolumeMetadata) == []


def test_a_volume_record_carries_its_live_type_with_extra_specs(api, admin, user, db):
    (vtype,) = _insert(db, VolumeType(name="gold"))
    _insert(db, VolumeTypeExtraSpecs(volume_type_id=vtype.id, key="tier", value="1"))
    volume = _volume(api, admin, volume_type_id=vtype.id)
    assert volume["volume_type"]["name"] == "gold"
    assert volume["volume_type"]["extra_specs"] == {"tier": "1"}
    assert api.volume_get(user, volume["id"])["volume_type"] == volume["volume_type"]


# --- volume_get and the listings ----------------------------------------------------------------
def test_volume_get_raises_volume_not_found(api, admin):
    with pytest.raises(exception.VolumeNotFound) as caught:
        api.volume_get(admin, "nope")
    assert caught.value.kwargs == {"volume_id": "nope", "code": 404}
    assert str(caught.value) == "Volume nope could not be found."


@pytest.mark.parametrize(
    ("read_deleted", "found"), [("no", False), ("yes", True), ("only", True)], ids=["no", "yes", "only"]
)
def test_volume_get_of_a_deleted_volume_follows_read_deleted(api, admin, read_deleted, found):
    _volume(api, admin, id="vol-a")
    api.volume_destroy(admin, "vol-a")
    for ctx in (admin_context(read_deleted=read_deleted), _user(read_deleted)):
        if found:
            assert api.volume_get(ctx, "vol-a")["deleted"] is True
        else:
            with pytest.raises(exception.VolumeNotFound):
                api.volume_get(ctx, "vol-a")


def test_volume_get_with_read_deleted_only_hides_live_volumes(api, admin):
    _volume(api, admin, id="vol-a")
    with pytest.raises(exception.VolumeNotFound):
        api.volume_get(admin_context(read_deleted="only"), "vol-a")


@pytest.fixture
def three_volumes(api, admin):
    """vol-c (p2, h2), vol-a (p1, h1, attached) and vol-b (p1, h1, attached, then deleted)."""
    _volume(api, admin, id="vol-c", project_id="p2", host="h2", instance_uuid=INSTANCE)
    _volume(api, admin, id="vol-a", instance_uuid=INSTANCE)
    _volume(api, admin, id="vol-b", instance_uuid=INSTANCE)
    api.volume_destroy(admin, "vol-b")


LISTINGS = [
    ("volume_get_all", {}, {"no": "ac", "yes": "abc", "only": "b"}),
    ("volume_get_all_by_host", {"host": "h1"}, {"no": "a", "yes": "ab", "only": "b"}),
    ("volume_get_all_by_project", {"project_id": "p1"}, {"no": "a", "yes": "ab", "only": "b"}),
    ("volume_get_all_by_instance_uuid", {"instance_uuid": INSTANCE}, {"no": "ac", "yes": "ac", "only": "ac"}),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), LISTINGS, ids=[n for n, _, _ in LISTINGS])
@pytest.mark.parametrize("read_deleted", ["no", "yes", "only"])
def test_volume_listings_filter_and_order_by_id(api, three_volumes, name, kwargs, expected, read_deleted):
    volumes = api.call(admin_context(read_deleted=read_deleted), name, **kwargs)
    assert _ids(volumes) == [f"vol-{c}" for c in expected[read_deleted]]
    assert all("admin_metadata" in v and v["name"] == f"volume-{v['id']}" for v in volumes)


def test_volume_get_all_by_project_serves_a_user_its_own_project(api, three_volumes, user):
    volumes = api.volume_get_all_by_project(user, "p1")
    assert _ids(volumes) == ["vol-a"]
    assert "admin_metadata" not in volumes[0]
    assert _ids(api.volume_get_all_by_project(_user("yes"), "p1")) == ["vol-a", "vol-b"]


def test_volume_listings_return_empty_lists_when_nothing_matches(api, admin):
    assert api.volume_get_all(admin) == []
    assert api.volume_get_all_by_host(admin, "h9") == []
    assert api.volume_get_all_by_instance_uuid(admin, INSTANCE) == []
    assert api.volume_get_all_by_project(admin, "p9") == []


# --- volume_update ----------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["admin", "user"])
def test_volume_update_returns_the_updated_record(api, admin, request, who):
    ctx = request.getfixturevalue(who)
    created = _volume(api, admin, id="vol-a", metadata={"a": "1"})
    updated = api.volume_update(ctx, "vol-a", {"status": "available", "launched_at": "2020-01-02T03:04:05"})
    assert updated["status"] == "available"
    assert updated["launched_at"] == datetime(2020, 1, 2, 3, 4, 5)
    assert isinstance(updated["updated_at"], datetime)
    assert updated["metadata"] == created["metadata"]
    assert api.volume_get(ctx, "vol-a") == updated


def test_volume_update_replaces_metadata_in_the_same_call(api, admin, db):
    _volume(api, admin, id="vol-a", metadata={"a": "1", "b": "2"})
    updated = api.volume_update(admin, "vol-a", {"size": 5, "metadata": {"b": 3, "c": "4"}})
    assert updated["size"] == 5
    assert updated["metadata"] == {"b": "3", "c": "4"}
    (gone,) = db.rows(VolumeMetadata, VolumeMetadata.deleted == True)
    assert gone.key == "a" and gone.deleted_at is not None


def test_volume_update_with_null_metadata_leaves_metadata_alone(api, admin):
    _volume(api, admin, id="vol-a", metadata={"a": "1"})
    assert api.volume_update(admin, "vol-a", {"metadata": None, "size": 2})["metadata"] == {"a": "1"}
    assert api.volume_update(admin, "vol-a", {"metadata": {}})["metadata"] == {}


def test_volume_update_raises_volume_not_found(api, admin, db):
    with pytest.raises(exception.VolumeNotFound):
        api.volume_update(admin, "nope", {"size": 1})
    assert db.rows(Volume) == []


def test_volume_update_refuses_to_move_a_users_volume_to_another_project(api, admin, user):
    before = _volume(api, admin, id="vol-a")
    with pytest.raises(exception.NotAuthorized):
        api.volume_update(user, "vol-a", {"project_id": "p2"})
    assert api.volume_get(admin, "vol-a") == before
    assert api.volume_update(admin, "vol-a", {"project_id": "p2"})["project_id"] == "p2"


@pytest.mark.parametrize(("values", "named"), BAD_VALUES[:6], ids=[n for _, n in BAD_VALUES[:6]])
def test_volume_update_rejects_bad_values_and_changes_nothing(api, admin, values, named):
    before = _volume(api, admin, id="vol-a", metadata={"keep": "1"})
    with pytest.raises(exception.InvalidInput) as caught:
        api.volume_update(admin, "vol-a", {"size": 7, "metadata": {"new": "2"}, **values})
    assert named in str(caught.value)
    assert api.volume_get(admin, "vol-a") == before


# --- attach, detach, destroy ------------------------------------------------------------------
@pytest.mark.parametrize("given", [INSTANCE, INSTANCE.replace("-", ""), f"urn:uuid:{INSTANCE}"])
def test_volume_attached_marks_the_volume_in_use(api, admin, given):
    _volume(api, admin, id="vol-a", status="available")
    volume = api.volume_attached(admin, "vol-a", given, "/dev/vdb")
    assert volume["status"] == "in-use" and volume["attach_status"] == "attached"
    assert volume["instance_uuid"] == INSTANCE and volume["mountpoint"] == "/dev/vdb"
    assert volume["attach_time"] is None
    assert api.volume_get(admin, "vol-a") == volume


@pytest.mark.parametrize("volume_id", ["vol-a", "nope"])
def test_volume_attached_checks_the_uuid_before_the_volume(api, admin, volume_id):
    before = _volume(api, admin, id="vol-a")
    with pytest.raises(exception.InvalidUUID) as caught:
        api.volume_attached(admin, volume_id, "not-a-uuid", "/dev/vdb")
    assert caught.value.kwargs == {"uuid": "not-a-uuid", "code": 400}
    assert api.volume_get(admin, "vol-a") == before


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("volume_attached", {"instance_id": INSTANCE, "mountpoint": "/dev/vdb"}),
        ("volume_detached", {}),
        ("volume_destroy", {}),
    ],
    ids=["attached", "detached", "destroy"],
)
def test_volume_state_changes_of_a_missing_volume_raise_volume_not_found(api, admin, db, name, kwargs):
    with pytest.raises(exception.VolumeNotFound) as caught:
        api.call(admin, name, volume_id="nope", **kwargs)
    assert caught.value.kwargs["volume_id"] == "nope"
    assert db.rows(Volume) == []


def test_volume_detached_clears_the_attachment(api, admin):
    _volume(api, admin, id="vol-a")
    api.volume_attached(admin, "vol-a", INSTANCE, "/dev/vdb")
    volume = api.volume_detached(admin, "vol-a")
    assert (volume["status"], volume["attach_status"]) == ("available", "detached")
    assert volume["instance_uuid"] is None and volume["mountpoint"] is None
    assert api.volume_get_all_by_instance_uuid(admin, INSTANCE) == []


def test_volume_destroy_soft_deletes_the_volume_and_its_metadata_and_frees_targets(api, admin, db):
    _volume(api, admin, id="vol-a", metadata={"a": "1"})
    _volume(api, admin, id="vol-b", metadata={"b": "1"})
    _insert(db, IscsiTarget(target_num=1, host="h1", volume_id="vol-a"))
    _insert(db, IscsiTarget(target_num=2, host="h1", volume_id="vol-b"))
    assert api.volume_destroy(admin, "vol-a") is None
    (volume,) = db.rows(Volume, Volume.id == "vol-a")
    assert volume.deleted is True and volume.deleted_at is not None and volume.updated_at is None
    (meta,) = db.rows(VolumeMetadata, VolumeMetadata.volume_id == "vol-a")
    assert meta.deleted is True and meta.deleted_at is not None and meta.updated_at is None
    targets = {t.target_num: (t.volume_id, t.deleted) for t in db.rows(IscsiTarget)}
    assert targets == {1: (None, False), 2: ("vol-b", False)}
    assert api.volume_get(admin, "vol-b")["metadata"] == {"b": "1"}


def test_volume_destroy_of_a_deleted_volume_raises_volume_not_found(api, admin, db):
    _volume(api, admin, id="vol-a")
    api.volume_destroy(admin, "vol-a")
    (before,) = db.rows(Volume)
    with pytest.raises(exception.VolumeNotFound):
        api.volume_destroy(admin_context(read_deleted="yes"), "vol-a")
    (after,) = db.rows(Volume)
    assert after.deleted_at == before.deleted_at


# --- volume_data_get_for_project --------------------------------------------------------------
def test_volume_data_get_for_project_counts_live_volumes_and_gigabytes(api, admin):
    assert api.volume_data_get_for_project(admin, "p1") == [0, 0]
    for i, size in enumerate([3, 4, 5]):
        _volume(api, admin, id=f"vol-{i}", size=size)
    _volume(api, admin, id="vol-other", project_id="p2", size=100)
    api.volume_destroy(admin, "vol-2")
    assert api.volume_data_get_for_project(admin, "p1") == [2, 7]


def test_volume_data_get_for_project_of_null_counts_volumes_without_a_project(api, admin):
    api.volume_create(admin, {"size": 6})
    _volume(api, admin, size=1)
    assert api.volume_data_get_for_project(admin, None) == [1, 6]


# --- volume_get_active_by_window --------------------------------------------------------------
@pytest.fixture
def window_volumes(api, admin):
    """vol-1 live; vol-2 deleted in June; vol-3 deleted in March (all p1, created in January);
    vol-4 of p2, created in September."""
    jan = "2020-01-01T00:00:00"
    _volume(api, admin, id="vol-1", created_at=jan)
    _volume(api, admin, id="vol-2", created_at=jan, deleted=True, deleted_at="2020-06-01T00:00:00")
    _volume(api, admin, id="vol-3", created_at=jan, deleted=True, deleted_at="2020-03-01T00:00:00")
    _volume(api, admin, id="vol-4", project_id="p2", created_at="2020-09-01T00:00:00")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["vol-1", "vol-2", "vol-4"]),
        ({"end": "2020-08-01T00:00:00"}, ["vol-1", "vol-2"]),
        ({"end": "2020-08-01T02:00:00+02:00"}, ["vol-1", "vol-2"]),
        ({"project_id": "p2"}, ["vol-4"]),
        ({"end": "2020-01-01T00:00:00"}, []),
    ],
    ids=["begin_only", "end", "end_with_offset", "project", "end_excludes_equal"],
)
def test_volume_get_active_by_window_returns_volumes_alive_in_the_window(
    api, admin, window_volumes, kwargs, expected
):
    volumes = api.volume_get_active_by_window(admin, "2020-05-01T00:00:00", **kwargs)
    assert _ids(volumes) == expected
    assert [v["deleted"] for v in volumes] == [v == "vol-2" for v in expected]


def test_volume_get_active_by_window_serves_a_user_its_own_project_only(api, user, window_volumes):
    assert _ids(api.volume_get_active_by_window(user, "2020-05-01T00:00:00")) == ["vol-1", "vol-2"]
    assert _ids(api.volume_get_active_by_window(user, "2020-05-01T00:00:00", project_id="p1")) == [
        "vol-1",
        "vol-2",
    ]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"begin": "last tuesday"}, "begin"),
        ({"begin": "2020-01-01T00:00:00", "end": "2020-13-01"}, "end"),
        ({"begin": 1577836800}, "begin"),
    ],
    ids=["bad_begin", "bad_end", "number"],
)
def test_volume_get_active_by_window_rejects_bad_datetimes(api, admin, kwargs, named):
    with pytest.raises(exception.InvalidInput) as caught:
        api.call(admin, "volume_get_active_by_window", **kwargs)
    assert named in str(caught.value)
