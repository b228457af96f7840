"""The registry's invariants: unique, non-reserved names; handlers that live in their family's
module and are all called by the contract cases; the wire's datetime fields. (The catalogue's
signatures and reply shapes: test_catalogue.py; the direction of imports: test_layers.py.)"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
import sqlalchemy as sa
from seed_catalogue import SEED_SIGNATURES

from dbworker import exception, models
from dbworker.core.context import RequestContext, admin_context
from dbworker.core.registry import Auth, Registry, handler
from dbworker.core.settings import DEFAULT_SETTINGS, Settings
from dbworker.handlers import MODULES, build_registry
from dbworker.protocol import catalogue, wire

REGISTRY = build_registry()
PACKAGE = Path(catalogue.__file__).parent


def _module(name: str, *functions: str) -> types.ModuleType:
    """A module defining a marked handler ``fn(tx, ctx)`` for each name."""
    module = types.ModuleType(name)
    for fn_name in functions:
        exec(f"def {fn_name}(tx, ctx):\n    return None", module.__dict__)
        fn = module.__dict__[fn_name]
        fn.__module__ = name
        handler(fn)
    return module


# --- names --------------------------------------------------------------------------------------
def test_a_name_registered_twice_is_rejected():
    with pytest.raises(ValueError, match="'thing_get' is registered twice"):
        Registry.from_modules([_module("a", "thing_get"), _module("b", "thing_get")])


@pytest.mark.parametrize("name", ["health", "target", "_private"])
def test_reserved_and_private_names_are_rejected(name):
    with pytest.raises(ValueError, match="cannot be an RPC method name"):
        Registry.from_modules([_module("m", name)])


def test_only_functions_defined_in_a_module_are_collected_from_it():
    source = _module("source", "thing_get")
    reexport = types.ModuleType("reexport")
    reexport.thing_get = source.thing_get
    assert list(Registry.from_modules([source, reexport])) == ["thing_get"]


# --- handlers against the catalogue -------------------------------------------------------------
def test_every_seed_function_is_called_by_the_contract_cases():
    """Each function appears in ``tests/contract`` as ``api.<name>(`` or ``"<name>"`` (a call by
    name), so the cases run it in process, over RPC and through the daemon."""
    cases = "".join(path.read_text() for path in (Path(__file__).parents[1] / "contract").glob("test_*.py"))
    called = {name for name in SEED_SIGNATURES if re.search(rf"\bapi\.{name}\(|[\"']{name}[\"']", cases)}
    assert sorted(set(SEED_SIGNATURES) - called) == []


#: Which handler module serves a function, by name prefix (longest first) ...
FAMILY_PREFIXES = [
    ("volume_type_", "volume_types"),
    ("volume_metadata_", "volume_metadata"),
    ("volume_admin_metadata_", "volume_metadata"),
    ("volume_", "volumes"),
    ("snapshot_", "snapshots"),
    ("iscsi_target_", "iscsi_targets"),
    ("migration_", "migrations"),
    ("sm_", "sm_backends"),
    ("quota_", "quotas"),
    ("reservation_", "reservations"),
    ("service_", "services"),
]
#: ... except these, which live with the table they write (or else read).
FAMILY_EXCEPTIONS = {
    "volume_allocate_iscsi_target": "iscsi_targets",
    "volume_get_iscsi_target_num": "iscsi_targets",
    "quota_reserve": "quota_reserve",
}


def family_of(name: str) -> str:
    if name in FAMILY_EXCEPTIONS:
        return FAMILY_EXCEPTIONS[name]
    return next(family for prefix, family in FAMILY_PREFIXES if name.startswith(prefix))


def test_every_catalogue_function_belongs_to_a_handler_module():
    modules = {module.__name__.rsplit(".", 1)[1] for module in MODULES}
    assert {family_of(name) for name in catalogue.FUNCTIONS} == modules


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_handler_lives_in_its_family_module(name):
    assert REGISTRY[name].fn.__module__ == f"dbworker.handlers.{family_of(name)}"


# --- admitting a call ----------------------------------------------------------------------------
def admin_only(tx, ctx, host: str):
    return host


def own_project(tx, ctx, project_id: str, *, settings: Settings):
    return project_id


def _declared(fn, **flags):
    module = types.ModuleType("admitting")
    fn.__module__ = module.__name__
    setattr(module, fn.__name__, handler(**flags)(fn))
    return Registry.from_modules([module])[fn.__name__]


ADMIN_ONLY = _declared(admin_only, auth=Auth.ADMIN)
OWN_PROJECT = _declared(own_project, project_arg="project_id")
USER = RequestContext(user_id="u", project_id="p1")


def test_admit_refuses_authorization_before_it_looks_at_the_arguments():
    with pytest.raises(exception.AdminRequired):
        ADMIN_ONLY.admit(USER, {"host": 5, "extra": 1}, DEFAULT_SETTINGS)
    with pytest.raises(exception.NotAuthorized):
        OWN_PROJECT.admit(RequestContext(), "not a dict", DEFAULT_SETTINGS)


def test_admit_checks_storable_arguments_before_the_project():
    with pytest.raises(exception.InvalidInput, match="'project_id'"):
        OWN_PROJECT.admit(USER, {"project_id": "p2\x00"}, DEFAULT_SETTINGS)
    with pytest.raises(exception.NotAuthorized):
        OWN_PROJECT.admit(USER, {"project_id": "p2"}, DEFAULT_SETTINGS)


def test_admit_returns_the_bound_arguments_and_the_settings_only_where_declared():
    assert ADMIN_ONLY.admit(admin_context(), {"host": "h"}, DEFAULT_SETTINGS) == {"host": "h"}
    assert [arg.name for arg in OWN_PROJECT.args] == ["project_id"]
    assert OWN_PROJECT.admit(USER, {"project_id": "p1"}, DEFAULT_SETTINGS) == {
        "project_id": "p1",
        "settings": DEFAULT_SETTINGS,
    }


def _with_settings_as(params: str):
    module = types.ModuleType("configured")
    exec(f"def configured(tx, ctx, {params}):\n    return None", {"Settings": Settings}, module.__dict__)
    fn = module.__dict__["configured"]
    fn.__annotations__ = {name: Settings for name in fn.__code__.co_varnames if name not in ("tx", "ctx")}
    fn.__module__ = module.__name__
    handler(fn)
    return module


@pytest.mark.parametrize("params", ["settings", "*, settings=None", "*, config", "settings=None"])
def test_a_handler_takes_the_settings_only_as_a_keyword_only_settings_without_a_default(params):
    with pytest.raises(ValueError, match="keyword-only parameter 'settings'"):
        Registry.from_modules([_with_settings_as(params)])
    assert Registry.from_modules([_with_settings_as("*, settings")])["configured"].needs_settings


# --- wire -----------------------------------------------------------------------------------------
def test_the_wire_datetime_fields_are_exactly_the_datetime_columns():
    columns = {
        column.name
        for table in models.Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, sa.DateTime)
    }
    assert columns == wire.DATETIME_FIELDS


def test_a_handler_signature_starts_with_tx_and_ctx():
    for name, entry in REGISTRY.items():
        params = list(inspect.signature(entry.fn).parameters)
        assert params[:2] == ["tx", "ctx"], name
