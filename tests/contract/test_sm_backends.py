"""Contract cases for the ``sm_backend_conf_*``, ``sm_flavor_*`` and ``sm_volume_*`` functions
(reference §2.9; contract §3.1, §3.2, §9.3)."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from dbworker import exception
from dbworker.models import SmBackendConfig, SmFlavor, SmVolume, Volume

FUNCTIONS = [
    ("sm_backend_conf_create", {"values": {"flavor_id": 1}}),
    ("sm_backend_conf_update", {"sm_backend_conf_id": 1, "values": {"sr_type": "x"}}),
    ("sm_backend_conf_delete", {"sm_backend_conf_id": 1}),
    ("sm_backend_conf_get", {"sm_backend_conf_id": 1}),
    ("sm_backend_conf_get_by_sr", {"sr_uuid": "sr"}),
    ("sm_backend_conf_get_all", {}),
    ("sm_flavor_create", {"values": {"label": "x"}}),
    ("sm_flavor_update", {"sm_flavor_id": "gold", "values": {"label": "x"}}),
    ("sm_flavor_delete", {"sm_flavor_id": "gold"}),
    ("sm_flavor_get", {"sm_flavor": "gold"}),
    ("sm_flavor_get_all", {}),
    ("sm_volume_create", {"values": {"id": "v2", "backend_id": 1}}),
    ("sm_volume_update", {"volume_id": "v1", "values": {"vdi_uuid": "x"}}),
    ("sm_volume_delete", {"volume_id": "v1"}),
    ("sm_volume_get", {"volume_id": "v1"}),
    ("sm_volume_get_all", {}),
]
# (create function, valid values, bad values, the key the error names)
BAD_CREATES = [
    ("sm_flavor_create", {"label": "x"}, {"no_such_column": 1}, "no_such_column"),
    ("sm_flavor_create", {"label": "x"}, {"label": 5}, "label"),
    ("sm_flavor_create", {"label": "x"}, {"description": "d" * 256}, "description"),
    ("sm_backend_conf_create", {"flavor_id": 1}, {"flavor_id": None}, "flavor_id"),
    ("sm_backend_conf_create", {"flavor_id": 1}, {"flavor_id": 999}, "flavor_id"),
    ("sm_backend_conf_create", {"flavor_id": 1}, {"config_params": "c" * 2048}, "config_params"),
    ("sm_backend_conf_create", {"flavor_id": 1}, {"sr_uuid": ["sr"]}, "sr_uuid"),
    ("sm_volume_create", {"id": "v2", "backend_id": 1}, {"id": None}, "id"),
    ("sm_volume_create", {"id": "v2", "backend_id": 1}, {"id": "no-volume"}, "id"),
    ("sm_volume_create", {"id": "v2", "backend_id": 1}, {"backend_id": 999}, "backend_id"),
    ("sm_volume_create", {"id": "v2", "backend_id": 1}, {"unknown": "x"}, "unknown"),
]
# (update function, its key argument, good values, bad values, getter, the getter's key argument)
UPDATES = [
    (
        "sm_flavor_update",
        {"sm_flavor_id": "gold"},
        {"description": "better"},
        {"description": 3},
        "sm_flavor_get",
        {"sm_flavor": "gold"},
    ),
    (
        "sm_backend_conf_update",
        {"sm_backend_conf_id": 1},
        {"sr_type": "nfs"},
        {"sr_type": "t" * 256},
        "sm_backend_conf_get",
        {"sm_backend_conf_id": 1},
    ),
    (
        "sm_volume_update",
        {"volume_id": "v1"},
        {"vdi_uuid": "vdi-2"},
        {"backend_id": 999},
        "sm_volume_get",
        {"volume_id": "v1"},
    ),
]
#: Folsom raises Cinder's base NotFound with a positional message (reference §2.9); a missing
#: flavor label (Folsom: KeyError) is a NotFound too (contract §9.3).
NOT_FOUND = [
    ("sm_backend_conf_get", {"sm_backend_conf_id": 9}, "No backend config with id 9"),
    ("sm_backend_conf_update", {"sm_backend_conf_id": 9, "values": {}}, "No backend config with id 9"),
    ("sm_flavor_get", {"sm_flavor": "none"}, "No sm_flavor called none"),
    ("sm_flavor_update", {"sm_flavor_id": "none", "values": {}}, "No sm_flavor called none"),
    ("sm_volume_get", {"volume_id": "v9"}, "No sm_volume with id v9"),
    ("sm_volume_update", {"volume_id": "v9", "values": {}}, "No sm_volume with id v9"),
]


@pytest.fixture
def stack(api, admin, db):
    """Volumes v1 and v2, flavor "gold" (id 1), backend 1 on sr "sr-1", sm volume v1 on it."""
    with db.engine.begin() as conn:
        conn.execute(sa.insert(Volume), [{"id": "v1"}, {"id": "v2"}])
    flavor = api.sm_flavor_create(admin, {"id": 1, "label": "gold", "description": "fast"})
    backend = api.sm_backend_conf_create(
        admin, {"id": 1, "flavor_id": 1, "sr_uuid": "sr-1", "sr_type": "iscsi"}
    )
    sm_volume = api.sm_volume_create(admin, {"id": "v1", "backend_id": 1, "vdi_uuid": "vdi-1"})
    return {"sm_flavor": flavor, "sm_backend_conf": backend, "sm_volume": sm_volume}


def _contents(db):
    """Every row of the three tables, to compare before and after a call that must write nothing."""
    return [
        sorted(repr([getattr(row, a.key) for a in sa.inspect(model).column_attrs]) for row in db.rows(model))
        for model in (SmFlavor, SmBackendConfig, SmVolume)
    ]


@pytest.mark.parametrize(("name", "kwargs"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
@pytest.mark.parametrize("who", ["user", "anon"])
def test_sm_functions_are_admin_only(api, db, stack, request, name, kwargs, who):
    before = _contents(db)
    with pytest.raises(exception.AdminRequired):
        api.call(request.getfixturevalue(who), name, **kwargs)
    assert _contents(db) == before


def test_sm_creates_return_records_that_the_getters_return(api, admin, stack):
    assert stack["sm_flavor"]["label"] == "gold" and stack["sm_flavor"]["deleted"] is False
    assert isinstance(stack["sm_backend_conf"]["created_at"], datetime)
    assert stack["sm_volume"]["backend_id"] == 1
    assert api.sm_flavor_get(admin, "gold") == stack["sm_flavor"]
    assert api.sm_backend_conf_get(admin, 1) == stack["sm_backend_conf"]
    assert api.sm_backend_conf_get_by_sr(admin, "sr-1") == stack["sm_backend_conf"]
    assert api.sm_volume_get(admin, "v1") == stack["sm_volume"]


def test_sm_get_alls_return_every_row_ordered_by_id(api, admin, db, stack):
    api.sm_flavor_create(admin, {"id": 2, "label": "silver"})  # explicit ids: the stack's are too
    api.sm_backend_conf_create(admin, {"id": 2, "flavor_id": 1, "sr_uuid": "sr-2"})
    api.sm_volume_create(admin, {"id": "v2", "backend_id": 1})
    with db.engine.begin() as conn:
        conn.execute(sa.update(SmFlavor).where(SmFlavor.label == "silver").values(deleted=True))
    assert [f["label"] for f in api.sm_flavor_get_all(admin)] == ["gold", "silver"]
    assert [b["sr_uuid"] for b in api.sm_backend_conf_get_all(admin)] == ["sr-1", "sr-2"]
    assert [v["id"] for v in api.sm_volume_get_all(admin)] == ["v1", "v2"]
    assert api.sm_flavor_get(admin, "silver")["deleted"] is True


def test_sm_backend_conf_get_by_sr_returns_null_for_an_unknown_sr(api, admin, stack):
    assert api.sm_backend_conf_get_by_sr(admin, "sr-9") is None


@pytest.mark.parametrize(("name", "kwargs", "message"), NOT_FOUND, ids=[n for n, *_ in NOT_FOUND])
def test_sm_getters_and_updates_raise_cinders_not_found(api, admin, db, stack, name, kwargs, message):
    before = _contents(db)
    with pytest.raises(exception.NotFound) as caught:
        api.call(admin, name, **kwargs)
    assert type(caught.value) is exception.NotFound
    assert str(caught.value).splitlines()[0] == message
    assert caught.value.kwargs == {"code": 404}
    assert _contents(db) == before


@pytest.mark.parametrize(
    ("delete", "kwargs", "getter", "message"),
    [
        ("sm_volume_delete", {"volume_id": "v1"}, "sm_volume_get", "No sm_volume with id v1"),
        (
            "sm_backend_conf_delete",
            {"sm_backend_conf_id": 1},
            "sm_backend_conf_get",
            "No backend config with id 1",
        ),
    ],
)
def test_a_deleted_sm_row_is_cinders_not_found(api, admin, stack, delete, kwargs, getter, message):
    if delete == "sm_backend_conf_delete":
        api.sm_volume_delete(admin, "v1")  # the backend is in use until its volume goes
    api.call(admin, delete, **kwargs)
    with pytest.raises(exception.NotFound) as caught:
        api.call(admin, getter, **kwargs)
    assert type(caught.value) is exception.NotFound and str(caught.value).splitlines()[0] == message


UPDATE_PARAMS = ("name", "key", "values", "bad", "getter", "getter_key")


@pytest.mark.parametrize(UPDATE_PARAMS, UPDATES, ids=[u[0] for u in UPDATES])
def test_sm_updates_return_the_updated_record(api, admin, stack, name, key, values, bad, getter, getter_key):
    updated = api.call(admin, name, **key, values=values)
    assert {k: updated[k] for k in values} == values and isinstance(updated["updated_at"], datetime)
    assert api.call(admin, getter, **getter_key) == updated


@pytest.mark.parametrize(UPDATE_PARAMS, UPDATES, ids=[u[0] for u in UPDATES])
def test_sm_updates_reject_bad_values_and_change_nothing(
    api, admin, db, stack, name, key, values, bad, getter, getter_key
):
    before = _contents(db)
    with pytest.raises(exception.InvalidInput, match=next(iter(bad))):
        api.call(admin, name, **key, values={**values, **bad})
    assert _contents(db) == before


@pytest.mark.parametrize(
    ("name", "good", "bad", "key"), BAD_CREATES, ids=[f"{n}-{k}" for n, _, _, k in BAD_CREATES]
)
def test_sm_creates_reject_bad_values_and_write_nothing(api, admin, db, stack, name, good, bad, key):
    before = _contents(db)
    with pytest.raises(exception.InvalidInput) as caught:
        api.call(admin, name, values={**good, **bad})
    assert key in str(caught.value)
    assert _contents(db) == before


def test_sm_volume_create_refuses_a_second_row_for_the_volume(api, admin, db, stack):
    before = _contents(db)
    with pytest.raises(exception.Duplicate):
        api.sm_volume_create(admin, {"id": "v1", "backend_id": 1})
    assert _contents(db) == before


def test_sm_deletes_remove_rows_for_good(api, admin, db, stack):
    assert api.sm_volume_delete(admin, "v1") is None
    assert api.sm_backend_conf_delete(admin, 1) is None
    api.sm_flavor_create(admin, {"id": 2, "label": "gold"})
    assert api.sm_flavor_delete(admin, "gold") is None
    assert _contents(db) == [[], [], []]


def test_sm_deletes_of_missing_rows_are_not_errors(api, admin, db, stack):
    before = _contents(db)
    assert api.sm_volume_delete(admin, "v2") is None
    assert api.sm_backend_conf_delete(admin, 9) is None
    assert api.sm_flavor_delete(admin, "none") is None
    assert _contents(db) == before


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sm_backend_conf_delete", {"sm_backend_conf_id": 1}), ("sm_flavor_delete", {"sm_flavor_id": "gold"})],
    ids=["backend-used-by-volume", "flavor-used-by-backend"],
)
def test_sm_deletes_refuse_rows_still_in_use(api, admin, db, stack, name, kwargs):
    before = _contents(db)
    with pytest.raises(exception.InvalidInput, match="in use"):
        api.call(admin, name, **kwargs)
    assert _contents(db) == before
