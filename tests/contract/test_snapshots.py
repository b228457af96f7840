"""Contract cases for the ``snapshot_*`` functions (reference §2.5; contract §3.1, §4, §9.11, §9.14)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

import pytest

from dbworker import exception
from dbworker.models import Snapshot

VOLUME = "11111111-1111-1111-1111-111111111111"
ADMIN_ONLY = [
    ("snapshot_destroy", {"snapshot_id": "s"}),
    ("snapshot_get_all", {}),
]
CONTEXT_ONLY = [
    ("snapshot_create", {"values": {"volume_id": VOLUME}}),
    ("snapshot_get", {"snapshot_id": "s"}),
    ("snapshot_get_all_by_project", {"project_id": "p1"}),
    ("snapshot_get_all_for_volume", {"volume_id": VOLUME}),
    ("snapshot_update", {"snapshot_id": "s", "values": {"status": "x"}}),
]
BAD_VALUES = [
    pytest.param({"no_such_column": 1}, "no_such_column", id="unknown-key"),
    pytest.param({"volume_size": "big"}, "volume_size", id="wrong-type"),
    pytest.param({"display_name": "x" * 256}, "display_name", id="too-long"),
    pytest.param({"volume_id": None}, "volume_id", id="null-not-null"),
]


def _snapshot(api, ctx, **values):
    return api.snapshot_create(ctx, {"volume_id": VOLUME, "project_id": "p1", **values})


@pytest.mark.parametrize(("name", "kwargs"), ADMIN_ONLY, ids=[n for n, _ in ADMIN_ONLY])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_admin_snapshot_functions_refuse_every_other_context(api, request, name, kwargs, who):
    with pytest.raises(exception.AdminRequired):
        api.call(request.getfixturevalue(who), name, **kwargs)


@pytest.mark.parametrize(("name", "kwargs"), CONTEXT_ONLY, ids=[n for n, _ in CONTEXT_ONLY])
def test_snapshot_functions_refuse_an_anonymous_context(api, anon, db, name, kwargs):
    with pytest.raises(exception.NotAuthorized):
        api.call(anon, name, **kwargs)
    assert db.rows(Snapshot) == []


def test_snapshot_create_returns_the_record_with_names_and_a_new_uuid(api, admin):
    snapshot = _snapshot(api, admin, volume_size=2, display_name="nightly")
    assert str(uuid.UUID(snapshot["id"])) == snapshot["id"]
    assert snapshot["name"] == f"snapshot-{snapshot['id']}"
    assert snapshot["volume_name"] == f"volume-{VOLUME}"
    assert snapshot["volume_size"] == 2 and snapshot["display_name"] == "nightly"
    assert snapshot["deleted"] is False and isinstance(snapshot["created_at"], datetime)
    assert snapshot["updated_at"] is None and snapshot["scheduled_at"] is None
    assert api.snapshot_get(admin, snapshot["id"]) == snapshot


def test_snapshot_create_keeps_a_given_id_and_refuses_it_twice(api, admin, db):
    _snapshot(api, admin, id="snap-1")
    with pytest.raises(exception.Duplicate):
        _snapshot(api, admin, id="snap-1", display_name="second")
    assert [row.display_name for row in db.rows(Snapshot)] == [None]


def test_snapshot_create_by_a_user_fills_in_its_identity(api, admin, user):
    api.volume_create(admin, {"id": VOLUME, "project_id": "p1", "size": 1})
    snapshot = api.snapshot_create(user, {"volume_id": VOLUME})
    assert (snapshot["user_id"], snapshot["project_id"]) == ("u1", "p1")
    assert api.snapshot_get(user, snapshot["id"]) == snapshot


def test_snapshot_create_by_a_user_for_another_project_is_refused(api, user, db):
    with pytest.raises(exception.NotAuthorized):
        api.snapshot_create(user, {"volume_id": VOLUME, "project_id": "p2"})
    assert db.rows(Snapshot) == []


@pytest.mark.parametrize("owner", ["p2", None])
def test_snapshot_create_by_a_user_of_another_projects_or_a_missing_volume_is_volume_not_found(
    api, admin, user, db, owner
):
    # A reference is a read (contract §3.1): another project's volume is, to a user, no volume.
    if owner:
        api.volume_create(admin, {"id": VOLUME, "project_id": owner, "size": 1})
    with pytest.raises(exception.VolumeNotFound) as caught:
        api.snapshot_create(user, {"volume_id": VOLUME})
    assert caught.value.kwargs["volume_id"] == VOLUME
    assert db.rows(Snapshot) == []


@pytest.mark.parametrize(("values", "key"), BAD_VALUES)
def test_snapshot_create_rejects_bad_values_and_writes_nothing(api, admin, db, values, key):
    with pytest.raises(exception.InvalidInput) as caught:
        _snapshot(api, admin, **values)
    assert key in str(caught.value)
    assert db.rows(Snapshot) == []


def test_snapshot_create_requires_a_volume_id(api, admin, db):
    with pytest.raises(exception.InvalidInput, match="volume_id"):
        api.snapshot_create(admin, {"display_name": "orphan"})
    assert db.rows(Snapshot) == []


def test_snapshot_get_raises_snapshot_not_found(api, admin):
    with pytest.raises(exception.SnapshotNotFound) as caught:
        api.snapshot_get(admin, "missing")
    assert caught.value.kwargs == {"snapshot_id": "missing", "code": 404}


def test_snapshot_get_hides_another_projects_snapshot_from_a_user(api, admin, user, other):
    snapshot = _snapshot(api, admin)
    assert api.snapshot_get(user, snapshot["id"])["id"] == snapshot["id"]
    with pytest.raises(exception.SnapshotNotFound):
        api.snapshot_get(other, snapshot["id"])


def test_snapshot_get_sees_deleted_snapshots_only_when_the_context_reads_deleted(api, admin):
    snapshot = _snapshot(api, admin)
    api.snapshot_destroy(admin, snapshot["id"])
    with pytest.raises(exception.SnapshotNotFound):
        api.snapshot_get(admin, snapshot["id"])
    deleted = api.snapshot_get(dataclasses.replace(admin, read_deleted="yes"), snapshot["id"])
    assert deleted["deleted"] is True


def test_snapshot_get_all_returns_every_project_ordered_by_id(api, admin):
    made = [_snapshot(api, admin, id=i, project_id=p) for i, p in [("b", "p2"), ("a", "p1"), ("c", "p3")]]
    api.snapshot_destroy(admin, "c")
    assert [s["id"] for s in api.snapshot_get_all(admin)] == ["a", "b"]
    everything = api.snapshot_get_all(dataclasses.replace(admin, read_deleted="yes"))
    assert [s["id"] for s in everything] == ["a", "b", "c"] and len(made) == 3


def test_snapshot_get_all_by_project_returns_that_projects_snapshots(api, admin, user):
    for i, project in enumerate(["p1", "p2", "p1"]):
        _snapshot(api, admin, id=f"s{i}", project_id=project)
    assert [s["id"] for s in api.snapshot_get_all_by_project(admin, "p1")] == ["s0", "s2"]
    assert [s["id"] for s in api.snapshot_get_all_by_project(user, "p1")] == ["s0", "s2"]
    assert api.snapshot_get_all_by_project(admin, "nobody") == []


def test_snapshot_get_all_by_project_refuses_a_user_of_another_project(api, admin, other):
    _snapshot(api, admin)
    with pytest.raises(exception.NotAuthorized):
        api.snapshot_get_all_by_project(other, "p1")


def test_snapshot_get_all_for_volume_returns_live_snapshots_of_the_callers_project(api, admin, user, other):
    _snapshot(api, admin, id="s1")
    _snapshot(api, admin, id="s2", project_id="p2")
    _snapshot(api, admin, id="s3")
    _snapshot(api, admin, id="s4", volume_id="another-volume")
    api.snapshot_destroy(admin, "s3")
    assert [s["id"] for s in api.snapshot_get_all_for_volume(admin, VOLUME)] == ["s1", "s2"]
    assert [s["id"] for s in api.snapshot_get_all_for_volume(user, VOLUME)] == ["s1"]
    assert [s["id"] for s in api.snapshot_get_all_for_volume(other, VOLUME)] == ["s2"]


def test_snapshot_update_returns_the_updated_record(api, admin, user):
    snapshot = _snapshot(api, admin)
    updated = api.snapshot_update(user, snapshot["id"], {"status": "available", "progress": "100%"})
    assert (updated["status"], updated["progress"]) == ("available", "100%")
    assert updated["name"] == snapshot["name"] and isinstance(updated["updated_at"], datetime)
    assert api.snapshot_get(admin, snapshot["id"]) == updated


def test_snapshot_update_raises_snapshot_not_found(api, admin, other, db):
    snapshot = _snapshot(api, admin)
    for ctx, snapshot_id in [(admin, "missing"), (other, snapshot["id"])]:
        with pytest.raises(exception.SnapshotNotFound):
            api.snapshot_update(ctx, snapshot_id, {"status": "error"})
    assert [row.status for row in db.rows(Snapshot)] == [None]


def test_snapshot_update_refuses_a_user_moving_it_to_another_project(api, admin, user, db):
    snapshot = _snapshot(api, admin)
    with pytest.raises(exception.NotAuthorized):
        api.snapshot_update(user, snapshot["id"], {"project_id": "p2"})
    assert [row.project_id for row in db.rows(Snapshot)] == ["p1"]


@pytest.mark.parametrize(("values", "key"), BAD_VALUES)
def test_snapshot_update_rejects_bad_values_and_changes_nothing(api, admin, db, values, key):
    snapshot = _snapshot(api, admin)
    with pytest.raises(exception.InvalidInput) as caught:
        api.snapshot_update(admin, snapshot["id"], {"status": "changed", **values})
    assert key in str(caught.value)
    (row,) = db.rows(Snapshot)
    assert row.status is None and row.updated_at is None


def test_snapshot_destroy_soft_deletes_keeping_updated_at(api, admin, db):
    snapshot = _snapshot(api, admin)
    assert api.snapshot_destroy(admin, snapshot["id"]) is None
    (row,) = db.rows(Snapshot)
    assert row.deleted is True and row.deleted_at is not None and row.updated_at is None


def test_snapshot_destroy_of_a_missing_or_deleted_snapshot_raises_not_found(api, admin, db):
    snapshot = _snapshot(api, admin)
    api.snapshot_destroy(admin, snapshot["id"])
    (before,) = db.rows(Snapshot)
    for snapshot_id in ["missing", snapshot["id"]]:
        with pytest.raises(exception.SnapshotNotFound) as caught:
            api.snapshot_destroy(admin, snapshot_id)
        assert caught.value.kwargs == {"snapshot_id": snapshot_id, "code": 404}
    (after,) = db.rows(Snapshot)
    assert after.deleted_at == before.deleted_at
