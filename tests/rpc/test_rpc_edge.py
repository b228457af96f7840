"""The RPC edge over kombu+memory:////: raw oslo.messaging callers, the client, the DBAPI backend."""

from __future__ import annotations

import inspect
import uuid

import oslo_messaging
import pytest
from oslo_db import api as oslo_db_api
from oslo_db import options as db_options

from dbworker import client, exception, models
from dbworker.core.context import admin_context
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Registry
from dbworker.edge import rpc
from dbworker.handlers import services
from dbworker.protocol import catalogue
from dbworker.session import make_engine, make_sessionmaker


@pytest.fixture(scope="module")
def served(private_database_url, rpc_conf):
    """A worker serving only the services family (on SQLite), its topic and its transport."""
    engine = make_engine(private_database_url("sqlite"))
    models.Base.metadata.create_all(engine)
    topic = f"dbworker-edge-{uuid.uuid4().hex[:8]}"
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    dispatcher = Dispatcher(Registry.from_modules([services]), make_sessionmaker(engine))
    server = rpc.build_server(transport, dispatcher, topic=topic, host="edge", pool_size=4)
    server.start()
    yield topic, transport
    server.stop()
    server.wait()
    transport.cleanup()
    engine.dispose()


def _raw(transport, topic, version="1.0", namespace=None):
    target = oslo_messaging.Target(topic=topic, version=version, namespace=namespace)
    return oslo_messaging.get_rpc_client(transport, target, timeout=10)


ADMIN = {"is_admin": True, "roles": ["admin"], "request_id": "req-edge"}


def test_a_raw_oslo_client_gets_plain_json_records(served):
    topic, transport = served
    raw = _raw(transport, topic)
    created = raw.call(ADMIN, "service_create", values={"host": "h", "topic": "t"})
    assert isinstance(created["created_at"], str) and created["created_at"][10] == "T"
    assert raw.call(ADMIN, "service_get", service_id=created["id"]) == created


def test_a_raw_oslo_client_with_our_exmods_gets_typed_errors(served):
    topic, transport = served
    with pytest.raises(exception.ServiceNotFound) as caught:
        _raw(transport, topic).call(ADMIN, "service_get", service_id=99)
    assert caught.value.kwargs == {"service_id": 99, "code": 404}


def test_a_raw_oslo_client_without_our_exmods_gets_remote_error_naming_the_class(served, rpc_conf):
    topic, _ = served
    transport = oslo_messaging.get_rpc_transport(rpc_conf, url="kombu+memory:////")
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        _raw(transport, topic).call({}, "service_get", service_id=99)
    assert caught.value.exc_type == "AdminRequired"
    transport.cleanup()


def test_unknown_methods_and_versions_are_refused_by_oslo(served):
    topic, transport = served
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        _raw(transport, topic).call(ADMIN, "volume_get", volume_id="x")
    assert caught.value.exc_type == "NoSuchMethod"
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        _raw(transport, topic, version="2.0").call(ADMIN, "service_get_all")
    assert caught.value.exc_type == "UnsupportedVersion"


def test_ping_and_health_answer_any_context(served):
    topic, transport = served
    assert _raw(transport, topic, namespace="baseapi").call({}, "ping", arg="x") == {
        "service": "dbworker",
        "arg": "x",
    }
    health = _raw(transport, topic).call({}, "health")
    assert health["status"] == "ok" and health["database"] == "ok" and health["host"] == "localhost"


def test_the_client_raises_no_such_method_for_a_function_the_worker_does_not_serve(served):
    topic, transport = served
    with pytest.raises(oslo_messaging.NoSuchMethod):
        client.Client(transport, topic=topic).volume_get(admin_context(), "x")


def test_the_client_has_every_catalogue_function_with_cinders_signature():
    for name, function in catalogue.FUNCTIONS.items():
        params = list(inspect.signature(getattr(client, name)).parameters)
        assert params[0] == "context"
        assert params[1:] == list(function.signature.parameters), name
    assert list(inspect.signature(client.volume_attached).parameters) == [
        "context",
        "volume_id",
        "instance_id",
        "mountpoint",
    ]


def test_the_client_binds_arguments_like_the_python_function_would(served):
    topic, transport = served
    api = client.Client(transport, topic=topic)
    with pytest.raises(TypeError):
        api.service_get(admin_context())
    with pytest.raises(TypeError):
        api.service_get(admin_context(), 1, 2)


def test_dbapi_from_config_loads_the_client_as_a_backend(served, rpc_conf):
    topic, transport = served
    db_options.set_defaults(rpc_conf)
    client.configure(rpc_conf, transport=transport)
    rpc_conf.set_override("topic", topic, group="dbworker")
    client.configure(rpc_conf, transport=transport)
    impl = oslo_db_api.DBAPI.from_config(rpc_conf, backend_mapping={"sqlalchemy": "dbworker.client"})
    created = impl.service_create(admin_context(), {"host": "via-dbapi"})
    assert impl.service_get(admin_context(), created["id"])["host"] == "via-dbapi"
    with pytest.raises(exception.ServiceNotFound):
        impl.service_get(admin_context(), created["id"] + 1)


def test_a_listener_that_stops_for_good_calls_its_owner_instead_of_leaving_a_deaf_worker(rpc_conf):
    """If the driver gives up (e.g. a channel it cannot re-open), the server's owner is told: the
    daemon ends the worker so its master starts a new one (service._end_this_worker)."""
    import threading

    died = threading.Event()
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    dispatcher = Dispatcher(Registry.from_modules([services]), make_sessionmaker(make_engine("sqlite://")))
    topic = f"dbworker-edge-{uuid.uuid4().hex[:8]}"
    server = rpc.build_server(
        transport, dispatcher, topic=topic, host="edge", pool_size=1, on_listener_death=died.set
    )
    server.start()
    try:
        assert not died.wait(timeout=1.5)  # polling normally

        def broken_poll(*args, **kwargs):
            raise oslo_messaging.MessageDeliveryFailure("the broker refused the consumer")

        server.listener._poller.poll = broken_poll
        assert died.wait(timeout=10)
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


def test_the_edge_hands_each_call_its_logging_scope(served):
    """The endpoint runs each call inside logcontext.call_scope: the dispatcher's per-call line is
    written, on the executor thread, under that call's request id."""
    import logging

    from oslo_context import context as oslo_context

    seen: list[tuple[str, str | None]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            current = oslo_context.get_current()
            seen.append((record.getMessage(), current.request_id if current else None))

    topic, transport = served
    logger, spy = logging.getLogger("dbworker.core.dispatch"), Spy()
    level = logger.level
    logger.addHandler(spy)
    logger.setLevel(logging.INFO)
    try:
        _raw(transport, topic).call({**ADMIN, "request_id": "req-scope"}, "service_get_all")
        _raw(transport, topic).call({"is_admin": True, "roles": ["admin"]}, "service_get_all")
    finally:
        logger.removeHandler(spy)
        logger.setLevel(level)
    assert [(message.split()[0], rid is not None) for message, rid in seen] == [
        ("service_get_all", True),
        ("service_get_all", True),
    ]
    assert seen[0][1] == "req-scope" and seen[1][1] not in (None, "req-scope")
