"""Contract cases for the ``service_*`` functions (reference §2.1, §3.9; contract §9.12)."""

from __future__ import annotations

from datetime import datetime

import pytest

from dbworker import exception
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
