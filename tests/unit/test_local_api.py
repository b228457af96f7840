"""The in-process API says "no such function" the way the RPC client does (oslo.messaging's
``NoSuchMethod``), yet serving calls in process never imports oslo.messaging."""

from __future__ import annotations

import subprocess
import sys

import oslo_messaging
import pytest

from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Registry
from dbworker.handlers import services
from dbworker.session import make_engine, make_sessionmaker


def test_a_function_the_dispatcher_does_not_serve_raises_no_such_method(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'unused.sqlite'}")
    api = LocalAPI(Dispatcher(Registry.from_modules([services]), make_sessionmaker(engine)))
    with pytest.raises(oslo_messaging.NoSuchMethod) as caught:
        api.volume_get(admin_context(), "v1")
    assert caught.value.method == "volume_get"
    with pytest.raises(oslo_messaging.NoSuchMethod) as caught:
        api.call(admin_context(), "no_such_function")
    assert caught.value.method == "no_such_function"
    engine.dispose()


PROBE = """
import sys
from dbworker import models
from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.session import make_engine

engine = make_engine("sqlite:///{path}")
models.Base.metadata.create_all(engine)
api = LocalAPI.from_engine(engine)
api.service_create(admin_context(), {{"host": "h"}})
assert [s["host"] for s in api.service_get_all(admin_context())] == ["h"]
print(sorted(m for m in sys.modules if m.split(".")[0] in ("oslo_messaging", "oslo_service", "eventlet")))
"""


def test_serving_calls_in_process_imports_no_oslo_messaging(tmp_path):
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", PROBE.format(path=tmp_path / "db.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_use_slave_that_is_not_a_boolean_is_invalid_input_as_over_rpc(tmp_path, value):
    from dbworker import exception, schema

    api = LocalAPI.from_engine(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    schema.upgrade(api.dispatcher.engine)
    with pytest.raises(exception.InvalidInput, match="use_slave must be true or false"):
        api.service_get_all({**admin_context().to_dict(), "use_slave": value})
