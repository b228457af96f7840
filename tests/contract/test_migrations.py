"""Contract cases for the ``migration_*`` functions (reference §2.2, §3.12; contract §9.6)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dbworker import exception
from dbworker.models import Migration, utcnow

FUNCTIONS = [
    ("migration_create", {"values": {"status": "new"}}),
    ("migration_update", {"id": 1, "values": {"status": "done"}}),
    ("migration_get", {"migration_id": 1}),
    ("migration_get_by_instance_and_status", {"instance_uuid": "i", "status": "s"}),
    ("migration_get_all_unconfirmed", {"confirm_window": 60}),
]
BAD_VALUES = [
    pytest.param({"no_such_column": 1}, "no_such_column", id="unknown-key"),
    pytest.param({"old_instance_type_id": "small"}, "old_instance_type_id", id="wrong-type"),
    pytest.param({"dest_host": "h" * 256}, "dest_host", id="too-long"),
    pytest.param({"updated_at": "yesterday"}, "updated_at", id="bad-datetime"),
]


def _migration(api, admin, **values):
    values = {"source_compute": "c1", "dest_compute": "c2", "instance_uuid": "i1", **values}
    return api.migration_create(admin, {"status": "migrating", **values})


def _ago(seconds):
    return (utcnow() - timedelta(seconds=seconds)).isoformat()


def _delete(db, migration_id):
    """Mark the row deleted straight in the database, keeping updated_at (there is no destroy)."""
    stmt = sa.update(Migration).where(Migration.id == migration_id)
    with db.engine.begin() as conn:
        conn.execute(stmt.values(deleted=True, updated_at=Migration.updated_at))


@pytest.mark.parametrize(("name", "kwargs"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_migration_functions_are_admin_only(api, db, admin, request, name, kwargs, who):
    created = _migration(api, admin, id=1, instance_uuid="i", status="s")
    with pytest.raises(exception.AdminRequired):
        api.call(request.getfixturevalue(who), name, **kwargs)
    assert api.migration_get(admin, 1) == created and len(db.rows(Migration)) == 1


def test_migration_create_returns_the_record(api, admin):
    created = _migration(api, admin, old_instance_type_id=1, new_instance_type_id=2)
    assert isinstance(created["id"], int) and isinstance(created["created_at"], datetime)
    assert created["status"] == "migrating" and created["new_instance_type_id"] == 2
    assert created["deleted"] is False and created["updated_at"] is None
    assert api.migration_get(admin, created["id"]) == created


@pytest.mark.parametrize(("values", "key"), BAD_VALUES)
def test_migration_create_rejects_bad_values_and_writes_nothing(api, admin, db, values, key):
    with pytest.raises(exception.InvalidInput) as caught:
        _migration(api, admin, **values)
    assert key in str(caught.value)
    assert db.rows(Migration) == []


def test_migration_update_returns_the_updated_record(api, admin):
    created = _migration(api, admin)
    updated = api.migration_update(admin, created["id"], {"status": "finished", "dest_host": "10.0.0.2"})
    assert (updated["status"], updated["dest_host"]) == ("finished", "10.0.0.2")
    assert isinstance(updated["updated_at"], datetime)
    assert api.migration_get(admin, created["id"]) == updated


def test_migration_update_changes_a_deleted_migration_too(api, admin, db):
    created = _migration(api, admin)
    _delete(db, created["id"])
    assert api.migration_update(admin, created["id"], {"status": "reverted"})["status"] == "reverted"


def test_migration_update_raises_migration_not_found(api, admin, db):
    with pytest.raises(exception.MigrationNotFound) as caught:
        api.migration_update(admin, 404, {"status": "finished"})
    assert caught.value.kwargs == {"migration_id": 404, "code": 404}
    assert db.rows(Migration) == []


@pytest.mark.parametrize(("values", "key"), BAD_VALUES)
def test_migration_update_rejects_bad_values_and_changes_nothing(api, admin, db, values, key):
    created = _migration(api, admin)
    with pytest.raises(exception.InvalidInput) as caught:
        api.migration_update(admin, created["id"], {"status": "finished", **values})
    assert key in str(caught.value)
    (row,) = db.rows(Migration)
    assert row.status == "migrating" and row.updated_at is None


def test_migration_get_returns_deleted_migrations(api, admin, db):
    created = _migration(api, admin)
    _delete(db, created["id"])
    assert api.migration_get(admin, created["id"])["deleted"] is True


def test_migration_get_raises_migration_not_found(api, admin):
    with pytest.raises(exception.MigrationNotFound) as caught:
        api.migration_get(admin, 77)
    assert caught.value.kwargs == {"migration_id": 77, "code": 404}
    assert str(caught.value) == "Migration 77 could not be found."


def test_migration_get_by_instance_and_status_returns_the_first_match(api, admin, db):
    first = _migration(api, admin, status="finished")
    _migration(api, admin, status="finished")
    _migration(api, admin, status="finished", instance_uuid="i2")
    _delete(db, first["id"])
    found = api.migration_get_by_instance_and_status(admin, "i1", "finished")
    assert found["id"] == first["id"] and found["deleted"] is True


def test_migration_get_by_instance_and_status_raises_not_found_by_status(api, admin):
    _migration(api, admin, status="migrating")
    with pytest.raises(exception.MigrationNotFoundByStatus) as caught:
        api.migration_get_by_instance_and_status(admin, "i1", "finished")
    assert caught.value.kwargs == {"instance_id": "i1", "status": "finished", "code": 404}
    assert isinstance(caught.value, exception.MigrationNotFound)


def test_migration_get_all_unconfirmed_returns_finished_migrations_older_than_the_window(api, admin, db):
    old = _migration(api, admin, status="finished", updated_at=_ago(600))
    old_deleted = _migration(api, admin, status="finished", updated_at=_ago(900))
    _delete(db, old_deleted["id"])
    _migration(api, admin, status="finished", updated_at=_ago(10))  # inside the window
    _migration(api, admin, status="migrating", updated_at=_ago(600))  # not finished
    _migration(api, admin, status="finished")  # never updated
    unconfirmed = api.migration_get_all_unconfirmed(admin, 300)
    assert [m["id"] for m in unconfirmed] == [old["id"], old_deleted["id"]]
    assert api.migration_get_all_unconfirmed(admin, 3600) == []


@pytest.mark.parametrize("window", ["60", 1.5, 2**40], ids=["string", "float", "huge"])
def test_migration_get_all_unconfirmed_rejects_a_bad_window(api, admin, window):
    with pytest.raises(exception.InvalidInput, match="confirm_window"):
        api.call(admin, "migration_get_all_unconfirmed", confirm_window=window)
