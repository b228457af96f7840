"""The registry's invariants: unique, non-reserved names; handlers that live in their family's
module and are all called by the contract cases; imports that go one way; the wire's datetime
fields. (The catalogue's signatures and reply shapes: test_catalogue.py.)"""

from __future__ import annotations

import ast
import graphlib
import inspect
import re
import types
from pathlib import Path

import pytest
import sqlalchemy as sa
from seed_catalogue import SEED_SIGNATURES

from dbworker import catalogue, exception, models, wire
from dbworker.context import RequestContext, admin_context
from dbworker.handlers import MODULES, build_registry
from dbworker.registry import Auth, Registry, handler
from dbworker.settings import DEFAULT_SETTINGS, Settings

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


# --- import direction ---------------------------------------------------------------------------
def imports_of(path: Path) -> set[str]:
    """The modules a source file imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


SOURCES = {
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): imports_of(path)
    for path in sorted(PACKAGE.rglob("*.py"))
    if "migrations" not in path.relative_to(PACKAGE).parts
}


def _dbworker_imports(module: str) -> set[str]:
    return {name for name in SOURCES[module] if name.startswith("dbworker.")} - {"dbworker.__version__"}


def _dbworker_modules(module: str) -> set[str]:
    """The package's modules ``module`` imports (``from dbworker.wire import encode`` counts as
    ``dbworker.wire``)."""
    names = _dbworker_imports(module)
    return {name if name in SOURCES else name.rsplit(".", 1)[0] for name in names} - {module}


#: The only modules that speak oslo.messaging: the RPC edge (rpc.py and its flow_control.py), the
#: daemon's wiring (service.py; cmd.py only starts it), the client, what the two Python entries
#: share (calls.py: the one lazy import, for a client or a NoSuchMethod) and dbworker-manage (its
#: `call` command). The in-process API (api.py) is not one of them.
MESSAGING_MODULES = {
    "dbworker.rpc",
    "dbworker.flow_control",
    "dbworker.service",
    "dbworker.client",
    "dbworker.calls",
    "dbworker.manage",
}


def test_only_the_rpc_edge_and_the_entries_import_oslo_messaging():
    importers = {
        module
        for module, names in SOURCES.items()
        if any(name == "oslo_messaging" or name.startswith("oslo_messaging.") for name in names)
    }
    assert {"dbworker.rpc", "dbworker.flow_control"} <= importers
    assert importers <= MESSAGING_MODULES


def _private_oslo(name: str) -> bool:
    """A module of oslo.messaging outside its public API: a private module or its server classes."""
    parts = name.split(".")
    return parts[0] == "oslo_messaging" and (
        any(part.startswith("_") for part in parts[1:]) or name.startswith("oslo_messaging.rpc.server")
    )


def test_only_flow_control_imports_oslo_messaging_private_modules():
    """The private oslo.messaging names flow control needs are listed in its docstring and checked
    by test_oslo_private_names.py; a second importer would escape both."""
    importers = {module for module, names in SOURCES.items() if any(map(_private_oslo, names))}
    assert importers == {"dbworker.flow_control"}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("dbworker.flow_control", {"dbworker.delivery"}),
        ("dbworker.delivery", {"dbworker.dispatch", "dbworker.models"}),
        (
            "dbworker.rpc",
            {
                "dbworker.catalogue",
                "dbworker.context",
                "dbworker.delivery",
                "dbworker.dispatch",
                "dbworker.exception",
                "dbworker.flow_control",
                "dbworker.logcontext",
                "dbworker.wire",
            },
        ),
        ("dbworker.logcontext", {"dbworker.context"}),
    ],
)
def test_the_rpc_edge_imports_nothing_from_the_daemon(module, allowed):
    """The edge hands the per-call logging scope down (logcontext.call_scope), never climbs back
    up to the daemon's modules (service, cmd, manage)."""
    assert _dbworker_modules(module) <= allowed


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("dbworker.handlers.")))
def test_handlers_never_import_the_machinery_around_them(module):
    machinery = {
        "session",
        "dispatch",
        "delivery",
        "rpc",
        "flow_control",
        "cmd",
        "service",
        "manage",
        "migration",
    }
    machinery |= {"client", "api", "calls", "catalogue", "describe"}  # the callers' side
    assert {name.split(".")[1] for name in _dbworker_imports(module)} & machinery == set()


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("dbworker.handlers.")))
def test_handlers_get_the_settings_only_from_their_declared_parameter(module):
    """Never a default of their own, never through the transaction's ``info``."""
    path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
    assert "dbworker.settings.DEFAULT_SETTINGS" not in SOURCES[module]
    tree = ast.parse(path.read_text())
    assert not [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "info"
        and not (isinstance(node.value, ast.Name) and node.value.id == "LOG")
    ]


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("dbworker.times", set()),
        ("dbworker.wire", {"dbworker.times"}),
        ("dbworker.exception", {"dbworker.wire"}),
        ("dbworker.models", set()),
        ("dbworker.catalogue", {"dbworker.wire", "dbworker.signatures"}),
        ("dbworker.signatures", set()),
        ("dbworker.conf", set()),
        ("dbworker.context", {"dbworker.exception"}),
        (  # a handler admits its calls: the context, then query's column checks
            "dbworker.registry",
            {"dbworker.context", "dbworker.exception", "dbworker.query", "dbworker.settings"},
        ),
        ("dbworker.settings", set()),
    ],
)
def test_the_leaf_modules_import_nothing_above_them(module, allowed):
    assert _dbworker_modules(module) <= allowed


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        # Below the call core: checks of a call's values, and the reply's two halves.
        ("dbworker.query", {"dbworker.exception", "dbworker.models", "dbworker.context", "dbworker.times"}),
        ("dbworker.serialize", {"dbworker.models", "dbworker.wire"}),
        ("dbworker.records", {"dbworker.session", "dbworker.times", "dbworker.wire"}),
    ],
)
def test_the_query_and_reply_helpers_import_only_modules_below_them(module, allowed):
    assert _dbworker_modules(module) <= allowed


def test_the_package_imports_form_no_cycle():
    graph = {module: _dbworker_modules(module) for module in SOURCES}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


@pytest.mark.parametrize("module", ["dbworker.client", "dbworker.calls", "dbworker.catalogue"])
def test_the_callers_modules_never_import_the_handlers_or_the_database_layer(module):
    """The client's signatures come from the generated description, never from the handlers."""
    database_side = {"handlers", "describe", "registry", "models", "records", "session", "dispatch"}
    assert {name.split(".")[1] for name in _dbworker_imports(module)} & database_side == set()


def test_only_tests_import_the_describer():
    """describe.py imports every handler: it writes signatures.py and runs in tests, never in a
    worker or a caller."""
    assert [module for module, names in SOURCES.items() if "dbworker.describe" in names] == []


def test_the_dispatcher_never_imports_the_handlers():
    assert not any(name.startswith("dbworker.handlers") for name in SOURCES["dbworker.dispatch"])


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
