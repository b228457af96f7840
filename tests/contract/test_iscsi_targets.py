"""Contract cases for the iSCSI target functions (reference §2.3, §3.5; contract §6, §9.7), with a
concurrency case on SQLite, PostgreSQL and MariaDB: no target is handed out twice."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from testenv import DATABASES

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.models import IscsiTarget, Volume

FUNCTIONS = [
    ("iscsi_target_count_by_host", {"host": "h"}),
    ("iscsi_target_create_safe", {"values": {"target_num": 1, "host": "h"}}),
    ("volume_allocate_iscsi_target", {"volume_id": "v1", "host": "h"}),
    ("volume_get_iscsi_target_num", {"volume_id": "v1"}),
]
BAD_VALUES = [
    pytest.param({"no_such_column": 1}, "no_such_column", id="unknown-key"),
    pytest.param({"target_num": "1"}, "target_num", id="wrong-type"),
    pytest.param({"host": "h" * 256}, "host", id="too-long"),
    pytest.param({"target_num": None}, "target_num", id="missing-target-num"),
    pytest.param({"host": None}, "host", id="missing-host"),
    pytest.param({"volume_id": "no-such-volume"}, "volume_id", id="missing-volume"),
]


def _volumes(db, *ids, deleted=False):
    """Volume rows written straight to the database (targets reference volumes)."""
    with db.engine.begin() as conn:
        conn.execute(sa.insert(Volume), [{"id": i, "deleted": deleted} for i in ids])


def _targets(api, admin, host, *numbers):
    return [api.iscsi_target_create_safe(admin, {"target_num": n, "host": host}) for n in numbers]


def _allocations(db):
    return sorted((t.host, t.target_num, t.volume_id) for t in db.rows(IscsiTarget))


@pytest.mark.parametrize(("name", "kwargs"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_iscsi_target_functions_are_admin_only(api, db, request, name, kwargs, who):
    _volumes(db, "v1")
    _targets(api, admin_context(), "h", 2)
    with pytest.raises(exception.AdminRequired):
        api.call(request.getfixturevalue(who), name, **kwargs)
    assert _allocations(db) == [("h", 2, None)]


def test_iscsi_target_create_safe_returns_the_new_target(api, admin, db):
    (target,) = _targets(api, admin, "h", 7)
    assert isinstance(target["id"], int) and target["volume_id"] is None
    assert (target["target_num"], target["host"], target["deleted"]) == (7, "h", False)
    assert _allocations(db) == [("h", 7, None)]


def test_iscsi_target_create_safe_returns_null_for_a_duplicate_and_keeps_the_first(api, admin, db):
    _volumes(db, "v1")
    first = api.iscsi_target_create_safe(admin, {"target_num": 1, "host": "h", "volume_id": "v1"})
    assert api.iscsi_target_create_safe(admin, {"target_num": 1, "host": "h"}) is None
    assert _targets(api, admin, "other-host", 1)[0]["target_num"] == 1
    assert _allocations(db) == [("h", 1, "v1"), ("other-host", 1, None)]
    assert api.volume_get_iscsi_target_num(admin, "v1") == first["target_num"]


@pytest.mark.parametrize(("values", "key"), BAD_VALUES)
def test_iscsi_target_create_safe_rejects_bad_values_and_writes_nothing(api, admin, db, values, key):
    with pytest.raises(exception.InvalidInput) as caught:
        api.iscsi_target_create_safe(admin, {"target_num": 1, "host": "h", **values})
    assert key in str(caught.value)
    assert db.rows(IscsiTarget) == []


def test_iscsi_target_count_by_host_counts_free_and_allocated_targets(api, admin, db):
    _volumes(db, "v1")
    _targets(api, admin, "h", 1, 2, 3)
    _targets(api, admin, "elsewhere", 1)
    api.volume_allocate_iscsi_target(admin, "v1", "h")
    with db.engine.begin() as conn:
        conn.execute(sa.update(IscsiTarget).where(IscsiTarget.target_num == 3).values(deleted=True))
    assert api.iscsi_target_count_by_host(admin, "h") == 2
    assert api.iscsi_target_count_by_host(dataclasses.replace(admin, read_deleted="yes"), "h") == 3
    assert api.iscsi_target_count_by_host(admin, "nowhere") == 0


def test_volume_allocate_iscsi_target_hands_out_the_lowest_free_number_first(api, admin, db):
    _volumes(db, "v1", "v2", "v3", "v4")
    _targets(api, admin, "h", 3, 1, 2)
    _targets(api, admin, "elsewhere", 0)
    allocated = [api.volume_allocate_iscsi_target(admin, v, "h") for v in ("v1", "v2", "v3")]
    assert allocated == [1, 2, 3]
    with pytest.raises(exception.NoMoreTargets) as caught:
        api.volume_allocate_iscsi_target(admin, "v4", "h")
    assert caught.value.kwargs == {"code": 500}
    assert _allocations(db) == [("elsewhere", 0, None), ("h", 1, "v1"), ("h", 2, "v2"), ("h", 3, "v3")]


def test_volume_allocate_iscsi_target_skips_deleted_targets(api, admin, db):
    _volumes(db, "v1")
    _targets(api, admin, "h", 1, 2)
    with db.engine.begin() as conn:
        conn.execute(sa.update(IscsiTarget).where(IscsiTarget.target_num == 1).values(deleted=True))
    assert api.volume_allocate_iscsi_target(admin, "v1", "h") == 2


def test_volume_allocate_iscsi_target_refuses_a_missing_or_deleted_volume(api, admin, db):
    _volumes(db, "gone", deleted=True)
    _targets(api, admin, "h", 1)
    for volume_id in ["missing", "gone"]:
        with pytest.raises(exception.VolumeNotFound) as caught:
            api.volume_allocate_iscsi_target(admin, volume_id, "h")
        assert caught.value.kwargs == {"volume_id": volume_id, "code": 404}
    assert _allocations(db) == [("h", 1, None)]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"volume_id": "v1", "host": 5}, "host"), ({"volume_id": 1, "host": "h"}, "volume_id")],
    ids=["host", "volume_id"],
)
def test_volume_allocate_iscsi_target_rejects_wrong_types_and_writes_nothing(api, admin, db, kwargs, key):
    _volumes(db, "v1")
    _targets(api, admin, "h", 1)
    with pytest.raises(exception.InvalidInput, match=key):
        api.call(admin, "volume_allocate_iscsi_target", **kwargs)
    assert _allocations(db) == [("h", 1, None)]


def test_volume_get_iscsi_target_num_returns_the_volumes_target(api, admin, db):
    _volumes(db, "v1", "v2")
    _targets(api, admin, "h", 4, 5)
    api.volume_allocate_iscsi_target(admin, "v2", "h")
    api.volume_allocate_iscsi_target(admin, "v1", "h")
    assert api.volume_get_iscsi_target_num(admin, "v1") == 5
    assert api.volume_get_iscsi_target_num(admin, "v2") == 4


def test_volume_get_iscsi_target_num_includes_deleted_targets(api, admin, db):
    _volumes(db, "v1")
    _targets(api, admin, "h", 4)
    api.volume_allocate_iscsi_target(admin, "v1", "h")
    with db.engine.begin() as conn:
        conn.execute(sa.update(IscsiTarget).values(deleted=True))
    assert api.volume_get_iscsi_target_num(admin, "v1") == 4


def test_volume_get_iscsi_target_num_raises_not_found_for_a_volume_without_target(api, admin):
    with pytest.raises(exception.ISCSITargetNotFoundForVolume) as caught:
        api.volume_get_iscsi_target_num(admin, "v9")
    assert caught.value.kwargs == {"volume_id": "v9", "code": 404}


@pytest.mark.parametrize("database", DATABASES, indirect=True)
def test_concurrent_allocations_never_hand_out_a_target_twice(db):
    # Given 24 free targets and 32 volumes
    admin = admin_context()
    setup = LocalAPI.from_engine(db.engine)
    volumes = [f"vol-{i:02d}" for i in range(32)]
    _volumes(db, *volumes)
    _targets(setup, admin, "h", *range(1, 25))
    start = threading.Barrier(16)

    def allocate(worker: int) -> list[int | None]:
        api = LocalAPI.from_engine(db.engine)
        start.wait()
        got: list[int | None] = []
        for volume_id in volumes[worker * 2 : worker * 2 + 2]:
            try:
                got.append(api.volume_allocate_iscsi_target(admin, volume_id, "h"))
            except exception.NoMoreTargets:
                got.append(None)
        return got

    # When 16 workers allocate two targets each at the same time
    with ThreadPoolExecutor(16) as pool:
        results = [n for got in pool.map(allocate, range(16)) for n in got]

    # Then every target went to exactly one volume and 8 allocations found none left
    handed_out = [n for n in results if n is not None]
    assert sorted(handed_out) == list(range(1, 25)) and results.count(None) == 8
    rows = db.rows(IscsiTarget)
    assert len({row.volume_id for row in rows}) == 24
    assert Counter(row.target_num for row in rows if row.volume_id) == Counter(range(1, 25))
