"""The authorization matrix: every registered function x every kind of context x every
``read_deleted`` mode, on every database (contract §3.1; reference §1.2 levels [A] [C] [P] [PO]).

The outcome each cell must have is derived from what the handler declares (``auth``,
``project_arg``), not written per cell:

* ``Auth.ADMIN``: any non-admin context, anonymous included, gets ``AdminRequired``;
* ``Auth.CONTEXT``: a context without both a user and a project gets ``NotAuthorized``, and so does a
  user naming another project in the declared ``project_arg``;
* refused calls write nothing (every table is compared before and after);
* allowed calls by an admin or by the owning user (``u1``/``p1``, whom every sample targets) succeed
  unless ``read_deleted="only"`` hides the row (then a typed, non-authorization error);
* a user never receives or changes the other project's rows: replies carry no row of the other
  project, and that project's volumes, metadata, snapshots, quotas, usages and reservations read
  straight from the database are unchanged after every call. ``u2``/``p2`` calling the samples aimed
  at ``p1`` gets a reply without ``p1`` rows, a NotFound or NotAuthorized, never more.

A separate test checks the declared levels themselves against the reference and the contract.
"""

from __future__ import annotations

import pytest
from samples import SAMPLES, WHO, context, leaks, project_rows, seed, table_contents

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.core.context import RequestContext
from dbworker.core.registry import Auth, Handler
from dbworker.handlers import build_registry

REGISTRY = build_registry()

#: Folsom's [A] functions (reference §2), plus the contract's admin-only additions: ``sm_*``
#: (§3.1), the admin metadata family (§3), ``quota_destroy_all_by_project`` and
#: ``quota_usage_update`` (§9.1, §9.2; their IMPL is [A]). Every other function is [C].
_ADMIN_NAMES = """
    service_destroy service_get service_get_by_host_and_topic service_get_all
    service_get_all_by_topic service_get_all_by_host service_get_all_volume_sorted
    service_get_by_args service_create service_update migration_create migration_update
    migration_get migration_get_by_instance_and_status migration_get_all_unconfirmed
    iscsi_target_count_by_host iscsi_target_create_safe volume_allocate_iscsi_target
    volume_get_iscsi_target_num volume_get_all volume_get_all_by_host
    volume_get_all_by_instance_uuid volume_attached volume_detached volume_destroy
    volume_data_get_for_project snapshot_destroy snapshot_get_all volume_type_create
    volume_type_destroy sm_backend_conf_create sm_backend_conf_update sm_backend_conf_delete
    sm_backend_conf_get sm_backend_conf_get_by_sr sm_backend_conf_get_all sm_flavor_create
    sm_flavor_update sm_flavor_delete sm_flavor_get sm_flavor_get_all sm_volume_create
    sm_volume_update sm_volume_delete sm_volume_get sm_volume_get_all quota_create quota_update
    quota_destroy quota_destroy_all_by_project quota_class_create quota_class_update
    quota_class_destroy quota_class_destroy_all_by_name quota_usage_create quota_usage_update
    quota_usage_destroy reservation_create reservation_destroy reservation_expire
    volume_admin_metadata_get volume_admin_metadata_update volume_admin_metadata_delete
"""
ADMIN_LEVEL = frozenset(_ADMIN_NAMES.split())

READ_DELETED = ("no", "yes", "only")


def refusal(handler: Handler, ctx: RequestContext, kwargs: dict) -> type[exception.NotAuthorized] | None:
    """The error the contract gives ``ctx`` for this call before anything is read, or None."""
    if handler.auth is Auth.ADMIN and not ctx.is_admin:
        return exception.AdminRequired
    if handler.auth is Auth.CONTEXT and not (ctx.is_admin or ctx.is_user):
        return exception.NotAuthorized
    if handler.project_arg and ctx.is_user and kwargs.get(handler.project_arg) != ctx.project_id:
        return exception.NotAuthorized
    return None


def test_every_registered_function_has_one_sample_and_a_declared_level_matching_the_reference():
    assert set(SAMPLES) == set(REGISTRY)
    for name, handler in REGISTRY.items():
        assert handler.auth is (Auth.ADMIN if name in ADMIN_LEVEL else Auth.CONTEXT), name
        # [P]: a user-callable function taking a required project_id checks it (contract §3.1).
        takes_project = any(a.name == "project_id" and a.required for a in handler.args)
        expected_arg = "project_id" if handler.auth is Auth.CONTEXT and takes_project else None
        assert handler.project_arg == expected_arg, name


@pytest.mark.parametrize("read_deleted", READ_DELETED)
@pytest.mark.parametrize("who", WHO)
def test_authorization_matrix(db, who, read_deleted):
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    ctx = context(who, read_deleted)
    refused = {n: refusal(REGISTRY[n], ctx, kw) for n, kw in SAMPLES.items()}
    failures: list[str] = []

    # Refused calls: the contract's error, and not one row written by any of them.
    before = table_contents(db.engine)
    for name, error in refused.items():
        if error is None:
            continue
        try:
            api.call(ctx, name, **SAMPLES[name])
        except exception.CinderException as err:
            if type(err) is not error:
                failures.append(f"{name}: {type(err).__name__}, expected {error.__name__}")
        else:
            failures.append(f"{name}: succeeded, expected {error.__name__}")
    assert table_contents(db.engine) == before, "a refused call wrote to the database"

    # Allowed calls, in table order (reads, writes, destroys).
    foreign = {"user": "p2", "other": "p1"}.get(who)
    foreign_before = project_rows(db, foreign) if foreign else None
    for name, kwargs in SAMPLES.items():
        if refused[name] is not None:
            continue
        problem = _check_allowed(api, ctx, who, name, kwargs, foreign)
        if problem:
            failures.append(f"{name}: {problem}")
        if foreign and REGISTRY[name].writes and project_rows(db, foreign) != foreign_before:
            failures.append(f"{name}: changed rows of {foreign}")
            foreign_before = project_rows(db, foreign)
    if foreign and project_rows(db, foreign) != foreign_before:
        failures.append(f"a read changed rows of {foreign}")
    assert not failures, f"{who} (read_deleted={read_deleted}):\n" + "\n".join(failures)


def _check_allowed(
    api: LocalAPI, ctx: RequestContext, who: str, name: str, kwargs: dict, foreign: str | None
) -> str | None:
    """Run one allowed call; return what is wrong with its outcome, or None."""
    try:
        reply = api.call(ctx, name, **kwargs)
    except (exception.DBError, exception.DBBusy, exception.DBUnavailable) as err:
        return f"database failure {type(err).__name__}"
    except exception.NotAuthorized as err:
        if who != "other":  # the owner and an admin are never refused an allowed call
            return f"refused with {type(err).__name__}"
        return None
    except exception.CinderException as err:
        if who == "other" and isinstance(err, exception.NotFound):
            return None  # p1's row is invisible to p2
        if ctx.read_deleted == "only" and isinstance(err, exception.NotFound):
            return None  # the live sample row is hidden from an "only deleted" view
        return f"{type(err).__name__}: {err}"
    found = leaks(reply, foreign) if foreign else []
    if found:
        return f"reply carries rows of {foreign}: " + ", ".join(repr(x)[:60] for x in found[:3])
    return None


# --- references in arguments and in values ------------------------------------------------------
#: Calls by a user of p2 that name a row of project ``{p}`` in an argument or in ``values`` (some on
#: p2's own rows). Run with ``{p}`` = p1 (another project's row) and ``{p}`` = p9 (no such row):
#: to the user, p1's rows must not exist, so both give the same outcome, and neither writes.
REFERENCES = [
    ("volume_get", {"volume_id": "{p}-vol"}),
    ("volume_update", {"volume_id": "{p}-vol", "values": {"display_name": "x"}}),
    ("volume_metadata_get", {"volume_id": "{p}-vol"}),
    ("volume_metadata_update", {"volume_id": "{p}-vol", "metadata": {"k": "v"}, "delete": True}),
    ("volume_metadata_delete", {"volume_id": "{p}-vol", "key": "k"}),
    ("snapshot_get", {"snapshot_id": "{p}-snap"}),
    ("snapshot_update", {"snapshot_id": "{p}-snap", "values": {"status": "x"}}),
    ("snapshot_get_all_for_volume", {"volume_id": "{p}-vol"}),
    ("reservation_get", {"uuid": "{p}-res-get"}),
    ("reservation_commit", {"reservations": ["{p}-res-commit"]}),
    ("reservation_rollback", {"reservations": ["{p}-res-rollback"]}),
    # values that reference another row (a snapshot's volume, a volume's source snapshot)
    ("snapshot_create", {"values": {"volume_id": "{p}-vol"}}),
    ("snapshot_update", {"snapshot_id": "p2-snap", "values": {"volume_id": "{p}-vol"}}),
    ("volume_create", {"values": {"size": 1, "snapshot_id": "{p}-snap"}}),
    ("volume_update", {"volume_id": "p2-vol", "values": {"snapshot_id": "{p}-snap"}}),
]
#: The arguments that name a project's row (volume types, quota classes and services are global).
REFERENCE_ARGS = {"volume_id", "snapshot_id", "uuid", "reservations", "values"}


def _aimed_at(kwargs: dict, project: str) -> dict:
    def fill(value):
        if isinstance(value, str):
            return value.replace("{p}", project)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(kwargs)


def _outcome(api: LocalAPI, ctx: RequestContext, name: str, kwargs: dict) -> object:
    try:
        return ("reply", api.call(ctx, name, **kwargs))
    except exception.CinderException as err:
        return ("error", type(err).__name__)


def test_every_user_callable_function_taking_a_reference_is_in_the_reference_checks():
    takes_reference = {
        name
        for name, handler in REGISTRY.items()
        if handler.auth is Auth.CONTEXT and any(a.name in REFERENCE_ARGS for a in handler.args)
    }
    assert takes_reference == {name for name, _ in REFERENCES}


@pytest.mark.parametrize(
    ("name", "kwargs"), REFERENCES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REFERENCES)]
)
def test_a_user_naming_another_projects_row_finds_it_missing_and_writes_nothing(db, name, kwargs):
    seed(db.engine)
    api = LocalAPI.from_engine(db.engine)
    ctx = context("other")  # a user of p2
    before = table_contents(db.engine)
    foreign = _outcome(api, ctx, name, _aimed_at(kwargs, "p1"))
    assert table_contents(db.engine) == before, f"{name} wrote, naming p1's row"
    missing = _outcome(api, ctx, name, _aimed_at(kwargs, "p9"))
    assert table_contents(db.engine) == before, f"{name} wrote, naming a missing row"
    assert foreign == missing
    if foreign[0] == "error":
        assert issubclass(getattr(exception, foreign[1]), exception.NotFound), foreign
