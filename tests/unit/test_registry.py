"""The registry's invariants: unique, non-reserved names; handlers that match the catalogue and
live in their family's module; imports that go one way; the wire's datetime fields."""

from __future__ import annotations

import ast
import graphlib
import inspect
import re
import types
import typing
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbworker import catalogue, models, wire
from dbworker.handlers import MODULES, build_registry
from dbworker.records import Record
from dbworker.registry import Registry, handler

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
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_handler_takes_the_catalogue_wire_parameters(name):
    """Names, order and defaults; a handler may also accept an alias's old name (contract §9.2),
    and then the new name needs a default of its own."""
    assert name in catalogue.FUNCTIONS, f"{name} is served but not in the catalogue"
    aliases = catalogue.ALIASES.get(name, {})
    served = [
        (arg.name, "<alias>" if arg.name in aliases.values() else arg.default)
        for arg in REGISTRY[name].args
        if arg.name not in aliases
    ]
    expected = [
        (p.name, "<alias>" if p.name in aliases.values() else p.default)
        for p in catalogue.FUNCTIONS[name].wire_params
    ]
    assert served == expected


def test_aliased_seed_parameters_are_served_under_their_new_name():
    assert catalogue.ALIASES == {"quota_usage_update": {"class_name": "project_id"}}
    params = [p.name for p in catalogue.FUNCTIONS["quota_usage_update"].wire_params]
    assert params[0] == "project_id"


def test_every_seed_function_has_a_handler():
    assert sorted(catalogue.SEED_NAMES - set(REGISTRY)) == []


def test_every_seed_function_is_called_by_the_contract_cases():
    """Each function appears in ``tests/contract`` as ``api.<name>(`` or ``"<name>"`` (a call by
    name), so the cases run it in process, over RPC and through the daemon."""
    cases = "".join(path.read_text() for path in (Path(__file__).parents[1] / "contract").glob("test_*.py"))
    called = {name for name in catalogue.SEED_NAMES if re.search(rf"\bapi\.{name}\(|[\"']{name}[\"']", cases)}
    assert sorted(catalogue.SEED_NAMES - called) == []


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
#: ... except these, which live with the table they write (STYLE.md §2).
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


#: The only modules that speak oslo.messaging: the RPC edge, the daemon's wiring (cmd.py and its
#: service.py), the two Python entries (the client, and api.py for NoSuchMethod) and
#: dbworker-manage (its `call` command).
MESSAGING_MODULES = {
    "dbworker.rpc",
    "dbworker.cmd",
    "dbworker.service",
    "dbworker.client",
    "dbworker.api",
    "dbworker.manage",
}


def test_only_the_rpc_edge_and_the_entries_import_oslo_messaging():
    importers = {
        module
        for module, names in SOURCES.items()
        if any(name == "oslo_messaging" or name.startswith("oslo_messaging.") for name in names)
    }
    assert "dbworker.rpc" in importers
    assert importers <= MESSAGING_MODULES


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("dbworker.handlers.")))
def test_handlers_never_import_the_machinery_around_them(module):
    machinery = {"session", "dispatch", "rpc", "client", "api", "cmd", "service", "manage", "migration"}
    assert {name.split(".")[1] for name in _dbworker_imports(module)} & machinery == set()


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("dbworker.times", set()),
        ("dbworker.wire", {"dbworker.times"}),
        ("dbworker.exception", {"dbworker.wire"}),
        ("dbworker.models", set()),
        ("dbworker.catalogue", {"dbworker.wire"}),
        ("dbworker.conf", set()),
        ("dbworker.context", {"dbworker.exception"}),
        ("dbworker.registry", {"dbworker.exception", "dbworker.settings"}),
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


def _shape_of(annotation) -> wire.Reply:
    """The reply shape a handler's return annotation promises (its rows become records)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    row = lambda t: isinstance(t, type) and issubclass(t, models.Base | Record)  # noqa: E731
    if row(annotation) or (origin in (typing.Union, types.UnionType) and any(map(row, args))):
        return wire.Reply.RECORD
    if origin is list and row(args[0]):
        return wire.Reply.RECORDS
    if origin is list and typing.get_origin(args[0]) is tuple and row(typing.get_args(args[0])[0]):
        return wire.Reply.RECORD_PAIRS
    if origin is dict and row(args[1]):
        return wire.Reply.RECORDS_BY_NAME
    return wire.Reply.PLAIN


def test_the_catalogues_reply_shapes_are_what_the_handlers_return():
    shapes = {name: _shape_of(typing.get_type_hints(h.fn)["return"]) for name, h in REGISTRY.items()}
    assert shapes == {name: catalogue.reply_shape(name) for name in REGISTRY}
    assert set(catalogue.REPLIES) <= set(catalogue.FUNCTIONS)


def test_a_handler_signature_starts_with_tx_and_ctx():
    for name, entry in REGISTRY.items():
        params = list(inspect.signature(entry.fn).parameters)
        assert params[:2] == ["tx", "ctx"], name
