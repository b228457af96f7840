"""Imports go one way: down the package's layers, never across to a sibling, never in a cycle.

The layers, bottom first (the README's architecture section draws them):

* ``protocol``: what a caller and the worker share (``dbworker/protocol/``, ``exception.py``,
  ``options.py``);
* ``database``: the tables, the engine and the call's transaction, the schema's versions
  (``models.py``, ``session.py``, ``schema/``);
* ``core``: one call in one transaction (``core/``);
* ``handlers``: the 90 functions (``handlers/``);
* the three ways in, siblings that never import each other: the broker edge (``edge/``), the
  in-process API (``api.py``) and the RPC client (``client.py``);
* ``daemon``: the worker's processes (``daemon/``, ``__main__.py``);
* ``tools``: ``dbworker-manage``, the signature describer, test helpers (``tools/``).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import dbworker

PACKAGE = Path(dbworker.__file__).parent

#: rank -> the units at that rank; a unit is a set of module prefixes. A module imports modules of
#: its own unit or of a lower rank: units that share a rank are siblings and never import each other.
LAYERS: tuple[tuple[frozenset[str], ...], ...] = (
    (frozenset({"dbworker", "dbworker.protocol", "dbworker.exception", "dbworker.options"}),),
    (frozenset({"dbworker.models", "dbworker.session", "dbworker.schema"}),),
    (frozenset({"dbworker.core"}),),
    (frozenset({"dbworker.handlers"}),),
    (frozenset({"dbworker.edge"}), frozenset({"dbworker.api"}), frozenset({"dbworker.client"})),
    (frozenset({"dbworker.daemon", "dbworker.__main__"}),),
    (frozenset({"dbworker.tools"}),),
)


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Each module of the package (a package by its name) -> the names it imports. Alembic's revision
#: scripts are loaded by Alembic, not imported.
SOURCES = {
    _module_name(path): imports_of(path)
    for path in sorted(PACKAGE.rglob("*.py"))
    if "revisions" not in path.relative_to(PACKAGE).parts
}


def _module_of(name: str) -> str:
    """The package module a dotted import name lands in (``dbworker.wire.encode`` -> ``dbworker.wire``)."""
    while name not in SOURCES:
        name = name.rpartition(".")[0]
    return name


def dbworker_modules(module: str) -> set[str]:
    """The package's modules ``module`` imports, itself and the package's version aside."""
    names = {name for name in SOURCES[module] if name.startswith("dbworker.")} - {"dbworker.__version__"}
    return {_module_of(name) for name in names} - {module}


def _place(module: str) -> tuple[int, frozenset[str]]:
    """A module's rank and unit: the unit whose longest prefix names it."""
    matches = [
        (len(prefix), rank, unit)
        for rank, units in enumerate(LAYERS)
        for unit in units
        for prefix in unit
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} belongs to no layer: add it to LAYERS and to the README's drawing"
    _, rank, unit = max(matches, key=lambda match: match[0])
    return rank, unit


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_a_module_imports_only_its_own_unit_and_the_layers_below(module):
    rank, unit = _place(module)
    against = {
        imported
        for imported in dbworker_modules(module)
        if not (_place(imported)[1] == unit or _place(imported)[0] < rank)
    }
    assert against == set(), f"{module} imports against the layers: {sorted(against)}"


def test_the_package_imports_form_no_cycle():
    graph = {module: dbworker_modules(module) for module in SOURCES}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


#: The only modules that speak oslo.messaging: the broker edge (rpc.py and its flow_control.py),
#: the daemon's wiring (worker.py), the client, what the two Python entries share (calls.py: the
#: one lazy import, for a client or a NoSuchMethod) and dbworker-manage (its `call` command). The
#: in-process API (api.py) is not one of them.
MESSAGING_MODULES = {
    "dbworker.edge.rpc",
    "dbworker.edge.flow_control",
    "dbworker.daemon.worker",
    "dbworker.daemon.startup",
    "dbworker.client",
    "dbworker.protocol.calls",
    "dbworker.tools.manage",
}


def test_only_the_broker_edge_and_the_entries_import_oslo_messaging():
    importers = {
        module
        for module, names in SOURCES.items()
        if any(name == "oslo_messaging" or name.startswith("oslo_messaging.") for name in names)
    }
    assert {"dbworker.edge.rpc", "dbworker.edge.flow_control"} <= importers
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
    assert importers == {"dbworker.edge.flow_control"}


@pytest.mark.parametrize(
    "module", ["dbworker.client", *sorted(m for m in SOURCES if m.startswith("dbworker.protocol"))]
)
def test_the_callers_modules_import_only_the_protocol_layer(module):
    """A caller's process never loads the handlers, the database layer or the call core: the
    client's signatures come from the generated description (protocol/signatures.py)."""
    assert {_place(imported)[0] for imported in dbworker_modules(module)} <= {0}


#: What a handler may use: its family's neighbours, the declaration and the query helpers of the
#: call core, the tables, the typed errors and the wire's record type. Never the session, the
#: dispatcher or the logging scope around it, never the callers' catalogue.
HANDLER_IMPORTS = {
    "dbworker.exception",
    "dbworker.models",
    "dbworker.protocol.wire",
    "dbworker.core.context",
    "dbworker.core.query",
    "dbworker.core.records",
    "dbworker.core.registry",
    "dbworker.core.settings",
}


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("dbworker.handlers.")))
def test_handlers_never_import_the_machinery_around_them(module):
    imported = {name for name in dbworker_modules(module) if not name.startswith("dbworker.handlers")}
    assert imported <= HANDLER_IMPORTS


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("dbworker.handlers.")))
def test_handlers_get_the_settings_only_from_their_declared_parameter(module):
    """Never a default of their own, never through the transaction's ``info``."""
    path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
    assert "dbworker.core.settings.DEFAULT_SETTINGS" not in SOURCES[module]
    tree = ast.parse(path.read_text())
    assert not [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "info"
        and not (isinstance(node.value, ast.Name) and node.value.id == "LOG")
    ]


def test_only_tests_import_the_describer():
    """describe.py imports every handler: it writes protocol/signatures.py and runs in tests, never
    in a worker or a caller."""
    assert [module for module, names in SOURCES.items() if "dbworker.tools.describe" in names] == []


#: A module a newcomer reads in one sitting (the README's architecture section).
MAX_LINES = 400


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE))
)
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES
