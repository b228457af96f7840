"""Fixtures: every contract case runs against the in-process API and the RPC client (over
``kombu+memory:////``, the real rabbit driver), on SQLite, PostgreSQL and MariaDB.

Service URLs come from ``DBWORKER_TEST_POSTGRESQL_URL``, ``DBWORKER_TEST_MYSQL_URL`` and
``DBWORKER_TEST_TRANSPORT_URL``, defaulting to this project's local services; set one to an empty
string to leave that service out. Each test session works in a database of its own, created and
dropped here. A service that cannot be reached skips its tests locally and fails them with
``CI=true``.
"""

from __future__ import annotations

from oslo_service import backend as _backend

_backend.init_backend(_backend.BackendType.THREADING)  # before anything imports oslo_messaging

import os  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from testenv import DB_FIXTURE_DATABASES, database_url, service_url  # noqa: E402

from dbworker import models, schema  # noqa: E402
from dbworker.core.context import RequestContext, admin_context  # noqa: E402
from dbworker.session import make_engine  # noqa: E402
from dbworker.tools.testing import create_database  # noqa: E402


@dataclass
class Database:
    """A private database for this test session: its kind, URL and engine."""

    kind: str
    url: str
    engine: Engine

    def rows(self, model: type[models.Base], *where: sa.ColumnElement[bool]) -> list[object]:
        """Read rows straight from the database (for asserting what was or was not written)."""
        with sa.orm.Session(self.engine) as session:
            return list(session.scalars(sa.select(model).where(*where)))

    def wipe(self) -> None:
        with self.engine.begin() as conn:
            for table in models.tables_children_first():
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def private_database_url(tmp_path_factory: pytest.TempPathFactory):
    """A factory: ``private_database_url(kind)`` returns the URL of a fresh, empty database."""
    drops = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / f"{uuid.uuid4().hex[:8]}.sqlite"
            return f"sqlite:///{path}"
        url, drop = create_database(database_url(kind), f"dbw_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        drops.append(drop)
        return url

    yield make
    for drop in drops:
        drop()


@pytest.fixture(scope="session", params=DB_FIXTURE_DATABASES)
def database(request: pytest.FixtureRequest, private_database_url) -> Iterator[Database]:
    """A database of each kind with the full schema, shared by the session's tests."""
    url = private_database_url(request.param)
    engine = make_engine(url, max_pool_size=20, max_overflow=5, sqlite_synchronous=False)
    schema.upgrade(engine)  # the schema as `dbworker-manage db sync` builds it
    yield Database(engine.dialect.name, url, engine)
    engine.dispose()


@pytest.fixture
def db(database: Database) -> Iterator[Database]:
    """The session's database, emptied after each test."""
    yield database
    database.wipe()


# --- the two entries --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rpc_conf():
    """A private oslo.config with oslo.messaging's options (incl. tracing) registered."""
    from oslo_config import cfg
    from oslo_messaging import conffixture

    conf = cfg.ConfigOpts()
    conffixture.ConfFixture(conf)
    conf([], project="dbworker-tests")
    conf.set_override("heartbeat_timeout_threshold", 0, group="oslo_messaging_rabbit")
    return conf


@pytest.fixture(scope="session")
def rpc_servers(rpc_conf):
    """Started RPC servers over kombu+memory, one per database kind, with a client each."""
    from dbworker import client as client_mod
    from dbworker.core.dispatch import Dispatcher
    from dbworker.edge import rpc
    from dbworker.handlers import build_registry
    from dbworker.session import make_sessionmaker

    running: dict[str, object] = {}
    cleanups = []

    def for_database(database: Database):
        if database.url not in running:
            topic = f"dbworker-test-{uuid.uuid4().hex[:8]}"
            transport = client_mod.get_transport(rpc_conf, url="kombu+memory:////")
            dispatcher = Dispatcher(build_registry(), make_sessionmaker(database.engine))
            server = rpc.build_server(transport, dispatcher, topic=topic, host="test", pool_size=8)
            server.start()
            running[database.url] = client_mod.Client(transport, topic=topic, timeout=30)
            cleanups.append((server, transport))
        return running[database.url]

    yield for_database
    for server, transport in cleanups:
        server.stop()
        server.wait()
        transport.cleanup()


@pytest.fixture(scope="session")
def daemon_api(rpc_conf, tmp_path_factory: pytest.TempPathFactory):
    """A factory: the API of a real ``dbworker`` daemon serving ``database``, started the way the
    README runs it (``dbworker --config-file etc/dbworker.conf``, plus a file naming the test's
    database and a topic of its own) on the local RabbitMQ, called by a bare oslo.messaging
    client. One daemon per database, stopped (by pid) at the end of the session."""
    import oslo_messaging
    from daemons import ROOT, Daemon, PlainOsloAPI

    running: dict[str, tuple[Daemon, PlainOsloAPI]] = {}
    transports = []

    def for_database(database: Database):
        if database.url not in running:
            url = service_url("rabbitmq")
            worker = Daemon(tmp_path_factory.mktemp("daemon"), url, database.url, dbworker__workers=1)
            worker.command = [str(Path(sys.executable).with_name("dbworker"))]
            worker.config_files.insert(0, ROOT / "etc" / "dbworker.conf")
            worker.start()
            transport = oslo_messaging.get_rpc_transport(
                rpc_conf, url=url, allowed_remote_exmods=["dbworker.exception"]
            )
            transports.append(transport)
            target = oslo_messaging.Target(topic=worker.topic, version="1.0")
            client = oslo_messaging.get_rpc_client(transport, target, timeout=30)
            worker.wait_for_log("consuming topic")
            running[database.url] = (worker, PlainOsloAPI(client))
        return running[database.url][1]

    yield for_database
    for worker, _ in running.values():
        worker.kill()
    for transport in transports:
        transport.cleanup()


#: Which entry a contract case runs through: in process, the RPC client over kombu+memory, and
#: (on SQLite, the README's default database) a real daemon on the local RabbitMQ.
ENTRIES = ["local", "rpc", pytest.param("daemon", marks=[pytest.mark.rabbitmq, pytest.mark.slow])]


@pytest.fixture(params=ENTRIES)
def api(request: pytest.FixtureRequest, db: Database, rpc_servers, daemon_api):
    """The API under test on ``db``: ``LocalAPI`` (in-process), ``Client`` (RPC over
    kombu+memory) or a bare oslo.messaging client of a real daemon."""
    if request.param == "local":
        from dbworker.api import LocalAPI

        return LocalAPI.from_engine(db.engine)
    if request.param == "daemon":
        return daemon_api(db)
    return rpc_servers(db)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the daemon entry on SQLite only: the other databases are covered in process and over
    RPC, and the daemon's own tests run it on PostgreSQL."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_daemon = params.get("api") == "daemon" and params.get("database", "sqlite") != "sqlite"
        (drop if on_daemon else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- contexts ---------------------------------------------------------------------------------
@pytest.fixture
def admin() -> RequestContext:
    return admin_context()


@pytest.fixture
def user() -> RequestContext:
    """A user of project ``p1``."""
    return RequestContext(user_id="u1", project_id="p1", roles=("member",))


@pytest.fixture
def other() -> RequestContext:
    """A user of another project, ``p2``."""
    return RequestContext(user_id="u2", project_id="p2", roles=("member",))


@pytest.fixture
def anon() -> RequestContext:
    """A context with no identity and no admin role."""
    return RequestContext()
