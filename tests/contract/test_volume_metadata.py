"""Contract cases for ``volume_metadata_*`` (reference §2.6, §3.13) and the admin-only
``volume_admin_metadata_*`` family (contract §3, §3.2, §4). Both families share one behaviour, so
most cases run on each: ``prefix`` names the family, ``model`` its table, ``field`` its record key."""

from __future__ import annotations

import pytest

from dbworker import exception
from dbworker.core.context import RequestContext, admin_context
from dbworker.models import VolumeAdminMetadata, VolumeMetadata

FAMILIES = [
    pytest.param(("volume_metadata", VolumeMetadata, "metadata"), id="metadata"),
    pytest.param(("volume_admin_metadata", VolumeAdminMetadata, "admin_metadata"), id="admin_metadata"),
]

FUNCTIONS = [
    ("get", {}),
    ("delete", {"key": "a"}),
    ("update", {"metadata": {"a": "2"}, "delete": False}),
]


def _volume(api, admin, volume_id="vol-a", **metadata):
    """A p1 volume with ``metadata`` in both families."""
    values = {"id": volume_id, "project_id": "p1", "user_id": "u1", "size": 1}
    return api.volume_create(admin, {**values, "metadata": metadata, "admin_metadata": metadata})


def _live(db, model):
    return {row.key: row.value for row in db.rows(model, model.deleted == False)}


def _snapshot(db):
    """Every metadata row of both families, as comparable tuples."""
    return [
        (type(r).__name__, r.id, r.key, r.value, r.deleted, r.deleted_at, r.updated_at)
        for model in (VolumeMetadata, VolumeAdminMetadata)
        for r in db.rows(model)
    ]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


# --- authorization ----------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "kwargs"), FUNCTIONS, ids=[op for op, _ in FUNCTIONS])
@pytest.mark.parametrize("who", ["anon", "other"])
def test_metadata_functions_refuse_strangers_and_change_nothing(api, admin, db, request, op, kwargs, who):
    _volume(api, admin, a="1")
    before = _snapshot(db)
    ctx = request.getfixturevalue(who)
    expected = exception.NotAuthorized if who == "anon" else exception.VolumeNotFound
    with pytest.raises(expected):
        api.call(ctx, f"volume_metadata_{op}", volume_id="vol-a", **kwargs)
    with pytest.raises(exception.AdminRequired):
        api.call(ctx, f"volume_admin_metadata_{op}", volume_id="vol-a", **kwargs)
    assert _snapshot(db) == before


@pytest.mark.parametrize(("op", "kwargs"), FUNCTIONS, ids=[op for op, _ in FUNCTIONS])
def test_admin_metadata_functions_refuse_the_volumes_own_user(api, admin, user, db, op, kwargs):
    _volume(api, admin, a="1")
    before = _snapshot(db)
    with pytest.raises(exception.AdminRequired):
        api.call(user, f"volume_admin_metadata_{op}", volume_id="vol-a", **kwargs)
    assert _snapshot(db) == before


def test_the_volumes_own_user_manages_its_metadata(api, admin, user, db):
    _volume(api, admin, a="1", b="2")
    assert api.volume_metadata_get(user, "vol-a") == {"a": "1", "b": "2"}
    assert api.volume_metadata_update(user, "vol-a", {"c": "3"}, False) == {"a": "1", "b": "2", "c": "3"}
    assert api.volume_metadata_delete(user, "vol-a", "a") is None
    assert _live(db, VolumeMetadata) == {"b": "2", "c": "3"}
    assert _live(db, VolumeAdminMetadata) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(("op", "kwargs"), FUNCTIONS, ids=[op for op, _ in FUNCTIONS])
def test_metadata_functions_of_a_missing_volume_raise_volume_not_found(api, admin, db, family, op, kwargs):
    prefix, model, _ = family
    with pytest.raises(exception.VolumeNotFound) as caught:
        api.call(admin, f"{prefix}_{op}", volume_id="nope", **kwargs)
    assert caught.value.kwargs == {"volume_id": "nope", "code": 404}
    assert db.rows(model) == []


@pytest.mark.parametrize(("op", "kwargs"), FUNCTIONS, ids=[op for op, _ in FUNCTIONS])
def test_metadata_functions_of_a_deleted_volume_follow_read_deleted(api, admin, db, family, op, kwargs):
    prefix, model, _ = family
    _volume(api, admin)
    api.volume_destroy(admin, "vol-a")
    with pytest.raises(exception.VolumeNotFound):
        api.call(admin, f"{prefix}_{op}", volume_id="vol-a", **kwargs)
    assert db.rows(model) == []
    api.call(admin_context(read_deleted="yes"), f"{prefix}_{op}", volume_id="vol-a", **kwargs)


# --- get --------------------------------------------------------------------------------------
def test_metadata_get_returns_the_live_pairs(api, admin, family):
    prefix, _, _ = family
    _volume(api, admin, a="1", b="2")
    _volume(api, admin, "vol-b", c="3")
    api.call(admin, f"{prefix}_delete", volume_id="vol-a", key="b")
    assert api.call(admin, f"{prefix}_get", volume_id="vol-a") == {"a": "1"}
    assert api.call(admin, f"{prefix}_get", volume_id="vol-b") == {"c": "3"}


def test_metadata_get_of_a_volume_without_metadata_is_an_empty_dict(api, admin, family):
    prefix, _, _ = family
    _volume(api, admin)
    assert api.call(admin, f"{prefix}_get", volume_id="vol-a") == {}


# --- delete -----------------------------------------------------------------------------------
def test_metadata_delete_soft_deletes_the_key_and_keeps_updated_at(api, admin, db, family):
    prefix, model, field = family
    _volume(api, admin, a="1", b="2")
    assert api.call(admin, f"{prefix}_delete", volume_id="vol-a", key="a") is None
    (row,) = db.rows(model, model.key == "a")
    assert row.deleted is True and row.deleted_at is not None and row.updated_at is None
    assert api.volume_get(admin, "vol-a")[field] == {"b": "2"}


def test_metadata_delete_of_an_absent_key_changes_nothing(api, admin, db, family):
    prefix, _, _ = family
    _volume(api, admin, a="1")
    before = _snapshot(db)
    assert api.call(admin, f"{prefix}_delete", volume_id="vol-a", key="zz") is None
    assert _snapshot(db) == before


def test_metadata_delete_touches_only_the_named_volume(api, admin, db, family):
    prefix, model, _ = family
    _volume(api, admin, a="1")
    _volume(api, admin, "vol-b", a="1")
    api.call(admin, f"{prefix}_delete", volume_id="vol-a", key="a")
    assert [r.volume_id for r in db.rows(model, model.deleted == False)] == ["vol-b"]


# --- update -----------------------------------------------------------------------------------
def test_metadata_update_without_delete_merges_and_returns_the_result(api, admin, db, family):
    prefix, model, field = family
    _volume(api, admin, a="1", b="2")
    (b_row,) = db.rows(model, model.key == "b")
    result = api.call(
        admin, f"{prefix}_update", volume_id="vol-a", metadata={"b": "20", "c": 3}, delete=False
    )
    assert result == {"a": "1", "b": "20", "c": "3"}
    (b_after,) = db.rows(model, model.key == "b")
    assert b_after.id == b_row.id and b_after.updated_at is not None
    assert api.volume_get(admin, "vol-a")[field] == result


def test_metadata_update_with_delete_replaces_and_soft_deletes_the_rest(api, admin, db, family):
    prefix, model, _ = family
    _volume(api, admin, a="1", b="2", c="3")
    result = api.call(admin, f"{prefix}_update", volume_id="vol-a", metadata={"b": "2"}, delete=True)
    assert result == {"b": "2"}
    gone = db.rows(model, model.deleted == True)
    assert sorted(r.key for r in gone) == ["a", "c"]
    assert all(r.deleted_at is not None for r in gone)
    assert api.call(admin, f"{prefix}_update", volume_id="vol-a", metadata={}, delete=True) == {}
    assert _live(db, model) == {}


def test_metadata_update_of_a_deleted_key_adds_a_new_row(api, admin, db, family):
    prefix, model, _ = family
    _volume(api, admin, a="1")
    api.call(admin, f"{prefix}_delete", volume_id="vol-a", key="a")
    api.call(admin, f"{prefix}_update", volume_id="vol-a", metadata={"a": "2"}, delete=False)
    rows = db.rows(model)
    assert [(r.key, r.value, r.deleted) for r in sorted(rows, key=lambda r: r.id)] == [
        ("a", "1", True),
        ("a", "2", False),
    ]


def test_metadata_update_stores_values_in_their_string_form(api, admin, family):
    prefix, _, _ = family
    _volume(api, admin)
    result = api.call(
        admin, f"{prefix}_update", volume_id="vol-a", metadata={"i": 3, "b": False, "f": 0.5}, delete=False
    )
    assert result == {"b": "False", "f": "0.5", "i": "3"}


BAD_METADATA = [
    pytest.param({"a": ["list"]}, id="list_value"),
    pytest.param({"a": {"x": 1}}, id="dict_value"),
    pytest.param({"a": None}, id="null_value"),
    pytest.param({"a": "v" * 256}, id="long_value"),
    pytest.param({"k" * 256: "v"}, id="long_key"),
    pytest.param("a=1", id="not_a_dict"),
]


@pytest.mark.parametrize("metadata", BAD_METADATA)
@pytest.mark.parametrize("delete", [False, True])
def test_metadata_update_rejects_bad_metadata_and_changes_nothing(api, admin, db, family, metadata, delete):
    prefix, _, _ = family
    _volume(api, admin, a="1")
    before = _snapshot(db)
    bad = metadata if isinstance(metadata, str) else {"ok": "1", **metadata}
    with pytest.raises(exception.InvalidInput) as caught:
        api.call(admin, f"{prefix}_update", volume_id="vol-a", metadata=bad, delete=delete)
    assert "metadata" in str(caught.value)
    assert _snapshot(db) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"metadata": {"a": "1"}}, id="missing_delete"),
        pytest.param({"metadata": {"a": "1"}, "delete": "yes"}, id="delete_not_bool"),
        pytest.param({"metadata": {"a": "1"}, "delete": False, "session": None}, id="session"),
    ],
)
def test_metadata_update_rejects_bad_arguments(api, admin, db, family, kwargs):
    prefix, _, _ = family
    _volume(api, admin)
    before = _snapshot(db)
    with pytest.raises(exception.InvalidInput):
        api.call(admin, f"{prefix}_update", volume_id="vol-a", **kwargs)
    assert _snapshot(db) == before


# --- what a volume record shows ---------------------------------------------------------------
def test_volume_records_show_admin_metadata_to_admins_only(api, admin, user):
    _volume(api, admin, a="1")
    api.volume_admin_metadata_update(admin, "vol-a", {"secret": "x"}, False)
    assert api.volume_get(admin, "vol-a")["admin_metadata"] == {"a": "1", "secret": "x"}
    as_user = api.volume_get(user, "vol-a")
    assert "admin_metadata" not in as_user
    assert as_user["metadata"] == {"a": "1"}
    user_reader = RequestContext(user_id="u9", project_id="p1", read_deleted="yes")
    assert "admin_metadata" not in api.volume_get_all_by_project(user_reader, "p1")[0]
