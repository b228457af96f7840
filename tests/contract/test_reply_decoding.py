"""The Python entries decode a reply by what the function returns, never by the keys of a dict
(contract §4): caller data whose keys are column names and whose values look like datetimes comes
back exactly as stored, strings included, through the in-process API, the RPC client and a real
daemon; the records around it still carry ``datetime`` values."""

from __future__ import annotations

from datetime import datetime

import pytest

#: Looks like a record (``id`` and ``deleted``) and holds datetime-like values: it is caller data.
LOOKALIKE = {
    "id": "a",
    "deleted": "no",
    "created_at": "tomorrow",
    "updated_at": "2020-01-01T00:00:00.000000",
    "expire": "2021-02-03T04:05:06.000007",
}


def test_volume_metadata_that_looks_like_a_record_comes_back_as_sent(api, admin):
    volume = api.volume_create(admin, {"size": 1, "metadata": LOOKALIKE})
    assert volume["metadata"] == LOOKALIKE and isinstance(volume["created_at"], datetime)
    assert api.volume_metadata_get(admin, volume["id"]) == LOOKALIKE
    assert api.volume_get(admin, volume["id"])["metadata"] == LOOKALIKE
    assert api.volume_metadata_update(
        admin, volume["id"], {"scheduled_at": "2020-01-01T00:00:00"}, False
    ) == {
        **LOOKALIKE,
        "scheduled_at": "2020-01-01T00:00:00",
    }
    (listed,) = api.volume_get_all(admin)
    assert listed["metadata"]["updated_at"] == "2020-01-01T00:00:00.000000"
    rows = {row["key"]: row for row in listed["volume_metadata"]}
    assert rows["created_at"]["value"] == "tomorrow" and isinstance(
        rows["created_at"]["created_at"], datetime
    )


def test_admin_metadata_that_looks_like_a_record_comes_back_as_sent(api, admin):
    volume = api.volume_create(admin, {"size": 1, "admin_metadata": LOOKALIKE})
    assert volume["admin_metadata"] == LOOKALIKE
    assert api.volume_admin_metadata_get(admin, volume["id"]) == LOOKALIKE


def test_extra_specs_that_look_like_a_record_come_back_as_sent(api, admin):
    created = api.volume_type_create(admin, {"name": "gold", "extra_specs": LOOKALIKE})
    assert created["extra_specs"] == LOOKALIKE and isinstance(created["created_at"], datetime)
    assert api.volume_type_extra_specs_get(admin, created["id"]) == LOOKALIKE
    assert api.volume_type_get(admin, created["id"])["extra_specs"] == LOOKALIKE
    assert api.volume_type_get_all(admin)["gold"]["extra_specs"] == LOOKALIKE
    volume = api.volume_create(admin, {"size": 1, "volume_type_id": created["id"]})
    assert volume["volume_type"]["extra_specs"] == LOOKALIKE
    assert isinstance(volume["volume_type"]["created_at"], datetime)
    updated = api.volume_type_extra_specs_update_or_create(admin, created["id"], {"deleted_at": "x"})
    assert updated == {**LOOKALIKE, "deleted_at": "x"}


@pytest.mark.parametrize("project", ["2020-01-01T00:00:00.000000", "created_at"])
def test_quota_dicts_keyed_by_datetime_lookalikes_come_back_as_sent(api, admin, project):
    api.quota_create(admin, project, "created_at", 5)
    assert api.quota_get_all_by_project(admin, project) == {"project_id": project, "created_at": 5}
