"""The private oslo.messaging and kombu names ``dbworker.edge.flow_control`` relies on still exist, with
the shape it relies on, in the installed libraries.

The list is the one in ``flow_control``'s module docstring (one bullet per name; see its notation).
Methods are checked on their class with ``inspect.signature``; attributes on the real objects of
one RPC server over ``kombu+memory:////`` that received one cast. A failure names the broken name
and where dbworker uses it: read that library's release notes before raising its version pin.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import kombu
import oslo_messaging
import pytest

from dbworker.edge import flow_control


class PrivateName(NamedTuple):
    """One bullet of the list: ``owner`` and ``type`` are ``"module:Qualname"``."""

    line: str
    owner: str
    name: str  # "" for a subclassed class
    params: tuple[str, ...] | None  # a method's parameters
    type: str | None  # an attribute's type
    assigned: bool  # dbworker sets it on the instance
    use: str


_BULLET = re.compile(
    r"^\* ``(?P<path>[\w.]+:[\w.]+?)(?:\((?P<params>[\w, ]*)\)|: (?P<type>[\w.:]+))?``"
    r"(?P<assigned> \(assigned\))?: (?P<use>.+)$"
)


def _full(name: str) -> str:
    """``module:Qualname`` with the docstring's short forms spelled out."""
    module, _, qualname = name.rpartition(":")
    if not module:
        return f"builtins:{qualname}"
    return f"{module if '.' in module else 'oslo_messaging._drivers.' + module}:{qualname}"


def parse(doc: str) -> list[PrivateName]:
    """The bullets of ``doc``'s list, each with its continuation lines."""
    bullets: list[str] = []
    for line in doc.splitlines():
        if line.startswith("* "):
            bullets.append(line)
        elif bullets and line.startswith("  ") and line.strip():
            bullets[-1] += " " + line.strip()
    names = []
    for bullet in bullets:
        match = _BULLET.match(bullet)
        assert match is not None, f"flow_control's docstring: unreadable private-name line {bullet!r}"
        path, params, type_ = match["path"], match["params"], match["type"]
        owner, _, name = (path, "", "") if params is None and type_ is None else path.rpartition(".")
        names.append(
            PrivateName(
                line=bullet[2:],
                owner=_full(owner),
                name=name,
                params=None if params is None else tuple(p.strip() for p in params.split(",") if p.strip()),
                type=None if type_ is None else _full(type_),
                assigned=match["assigned"] is not None,
                use=match["use"],
            )
        )
    return names


NAMES = parse(flow_control.__doc__ or "")


def resolve(path: str, entry: PrivateName) -> Any:
    module_name, _, qualname = path.partition(":")
    where = f"{entry.line}\n(dbworker relies on it in dbworker/edge/flow_control.py: {entry.use})"
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError:
        pytest.fail(f"module {module_name} is gone: {where}")
    for part in qualname.split("."):
        if not hasattr(found, part):
            pytest.fail(f"{module_name}:{qualname} is gone ({part!r} missing): {where}")
        found = getattr(found, part)
    return found


@pytest.fixture(scope="module")
def real_objects(rpc_conf) -> Iterator[dict[str, Any]]:
    """A plain oslo.messaging RPC server over kombu+memory, started, that received one cast: its
    driver objects by ``module:Qualname`` of the class each is checked against."""
    transport = oslo_messaging.get_rpc_transport(rpc_conf, url="kombu+memory:////")
    topic = f"dbworker-private-names-{uuid.uuid4().hex[:8]}"
    server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="n"), [])
    received = threading.Event()
    incoming: list[Any] = []

    def on_incoming(batch: list[Any]) -> None:  # in place of the server's, before start
        incoming.extend(batch)
        received.set()

    server._on_incoming = on_incoming
    server.start()
    try:
        adapter = server.listener
        poller = adapter._poll_style_listener
        connection = poller.conn.connection
        consumer = next(iter(connection._consumers))
        raw: list[Any] = []
        for each in connection._consumers:  # the consumers' callback, as flow control swaps it

            def spy(message: Any, listener: Any = each.callback) -> None:
                raw.append(message)
                listener(message)

            each.callback = spy
        poller.incoming = counting = flow_control._CountingList(poller.incoming)
        oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic)).cast({}, "anything")
        assert received.wait(timeout=10), "the cast never reached the listener's callback"
        for each in connection._consumers:
            each.callback = poller
        server.stop()  # no more polling: the checks below may assign attributes
        yield {
            "appended": counting.appended,
            "oslo_messaging.server:MessageHandlingServer": server,
            "oslo_messaging.rpc.server:RPCServer": server,
            "oslo_messaging._drivers.base:Listener": adapter,
            "oslo_messaging._drivers.base:PollStyleListenerAdapter": adapter,
            "oslo_messaging._drivers.amqpdriver:RpcAMQPListener": poller,
            "oslo_messaging._drivers.common:ConnectionContext": poller.conn,
            "oslo_messaging._drivers.impl_rabbit:Connection": connection,
            "oslo_messaging._drivers.impl_rabbit:Consumer": consumer,
            "oslo_messaging._drivers.impl_rabbit:RabbitMessage": raw[0],
            "kombu.message:Message": raw[0]._raw_message,
            "kombu.connection:Connection": connection.connection,
            "oslo_messaging._drivers.amqpdriver:AMQPIncomingMessage": incoming[0],
        }
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


def test_the_docstring_lists_the_names_flow_control_is_known_to_use():
    listed = {(entry.owner.rpartition(":")[2], entry.name) for entry in NAMES}
    assert {
        ("RPCServer", "_process_incoming"),
        ("RPCServer", "_work_executor"),
        ("PollStyleListenerAdapter", "_poll_style_listener"),
        ("Connection", "_consumers"),
        ("Connection", "_connection_lock"),
        ("Consumer", "callback"),
        ("RabbitMessage", "_raw_message"),
        ("AMQPIncomingMessage", "reply"),
    } <= listed


@pytest.mark.parametrize("entry", NAMES, ids=lambda entry: entry.line.split("``")[1])
def test_each_private_name_still_has_the_shape_flow_control_relies_on(entry, real_objects):
    where = f"{entry.line}\n(dbworker relies on it in dbworker/edge/flow_control.py: {entry.use})"
    owner = resolve(entry.owner, entry)
    if not entry.name:
        assert inspect.isclass(owner), f"not a class any more: {where}"
        return
    real = real_objects.get(entry.owner)
    if real is not None:
        assert isinstance(real, owner), f"the real object is a {type(real)}, not a {entry.owner}: {where}"
    if entry.params is not None:
        method = getattr(owner, entry.name, None)
        assert callable(method), f"{entry.owner}.{entry.name} is gone or not a method: {where}"
        params = inspect.signature(method).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [
            name
            for name in entry.params
            if not takes_any
            and (name not in params or params[name].kind is inspect.Parameter.POSITIONAL_ONLY)
        ]
        assert not missing, f"{entry.owner}.{entry.name}{inspect.signature(method)} lacks {missing}: {where}"
    holder = owner if real is None else real
    if entry.type is not None:
        assert hasattr(holder, entry.name), f"{entry.owner}.{entry.name} is gone: {where}"
        expected = resolve(entry.type, entry)
        value = getattr(holder, entry.name)
        assert isinstance(value, expected), f"{entry.owner}.{entry.name} is a {type(value)}: {where}"
    if entry.assigned:
        assert real is not None, f"no real object to assign {entry.name} on: {where}"
        before, marker = getattr(real, entry.name), object()
        setattr(real, entry.name, marker)
        try:
            assert getattr(real, entry.name) is marker, f"{entry.name} cannot be assigned: {where}"
        finally:
            setattr(real, entry.name, before)


def test_the_listener_queues_a_delivery_by_appending_to_the_list_it_polls(real_objects):
    """_GatedDelivery swaps the listener's ``incoming`` for a _CountingList and counts appends to
    see whether oslo queued a delivery; the cast above went through the swapped list."""
    assert real_objects["appended"] == 1, (
        "RpcAMQPListener.__call__ no longer appends a delivery to its incoming list, or poll no "
        "longer takes it from there (dbworker/edge/flow_control.py: _GatedDelivery._accept)"
    )


def test_an_idle_kombu_connection_raises_timeout_error_from_drain_events():
    """BoundedListener._cancel_consumers drains until TimeoutError (nothing more pushed)."""
    with kombu.Connection("memory://") as connection, pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.01)


def test_every_underscore_name_flow_control_reaches_into_is_listed():
    """A ``_name`` read or set in flow_control.py that the module does not define itself (an
    attribute, or a ``getattr`` string) belongs to oslo.messaging or kombu: it must be listed."""
    tree = ast.parse(Path(flow_control.__file__).read_text())
    own = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    own |= {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    reached = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    reached |= {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "getattr"
        and isinstance(node.args[1], ast.Constant)
    }
    private = {name for name in reached - own if name.startswith("_") and not name.startswith("__")}
    unlisted = sorted(private - {entry.name for entry in NAMES})
    assert unlisted == [], f"dbworker/edge/flow_control.py uses {unlisted}, not in its docstring's list"
