"""Start the real ``dbworker`` daemon in tests: a ``python -m dbworker`` process tree against the
local RabbitMQ and a private PostgreSQL database, and a plain oslo.messaging client to call it.

The fixtures that start daemons live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oslo_messaging
import sqlalchemy as sa
from oslo_config import cfg
from oslo_messaging import conffixture

from dbworker import exception, schema
from dbworker.protocol.calls import CatalogueAPI
from dbworker.tools.testing import delete_queues

ADMIN = {"is_admin": True, "roles": ["admin"]}
ROOT = Path(__file__).resolve().parents[1]


def sync_schema(url: str) -> None:
    """Bring the database at ``url`` to the migrations' head."""
    engine = sa.create_engine(url)
    schema.upgrade(engine)
    engine.dispose()


class Daemon:
    """A ``python -m dbworker`` process tree, in its own process group, logging to a file."""

    def __init__(self, tmp_path: Path, rabbit_url: str, database_url: str, **options: Any) -> None:
        self.topic = f"dbworker-daemon-{uuid.uuid4().hex[:8]}"
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {
                "transport_url": rabbit_url,
                "executor_thread_pool_size": 2,
                "graceful_shutdown_timeout": 20,
                "rpc_response_timeout": 20,
            },
            # no metrics unless a test asks (dbworker__metrics_port): daemons run side by side
            "dbworker": {"workers": 1, "topic": self.topic, "broker_connect_timeout": 5, "metrics_port": 0},
            "database": {"connection": database_url},
        }
        for key, value in options.items():
            group, _, name = key.rpartition("__")
            sections.setdefault(group or "DEFAULT", {})[name] = value
        self.conf_path = tmp_path / f"{self.topic}.conf"
        self.write_conf(sections)
        self.log_path = tmp_path / f"{self.topic}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: How the daemon is run, and its ``--config-file`` arguments (later files win).
        self.command: list[str] = [sys.executable, "-W", "ignore", "-m", "dbworker"]
        self.config_files: list[Path] = [self.conf_path]

    def write_conf(self, sections: dict[str, dict[str, Any]]) -> None:
        self.sections = sections
        text = "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in values.items())
            for group, values in sections.items()
        )
        self.conf_path.write_text(text)

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, *(arg for path in self.config_files for arg in ("--config-file", str(path)))],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            assert self.proc is not None and self.proc.poll() is None, f"daemon exited:\n{self.log}"
            assert time.monotonic() < deadline, f"no {count} x {text!r} in the log:\n{self.log}"
            time.sleep(0.1)

    def workers(self) -> list[int]:
        """Return the pids of the master's child processes (the workers)."""
        assert self.proc is not None
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                children.append(int(stat.parent.name))
        return sorted(children)

    def signal(self, signo: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signo)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process tree, then delete the daemon's topic queues from the broker (oslo
        declares them without auto-delete, so each test daemon would leave two behind)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None:  # orphaned workers of a dead master
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
            # a master killed so cannot remove its metrics directory (dbworker.daemon.metrics)
            for match in re.finditer(r"worker files in (\S+)\)", self.log):
                shutil.rmtree(match.group(1), ignore_errors=True)
        topic, host = (
            self.sections["dbworker"]["topic"],
            self.sections["DEFAULT"].get("host", socket.gethostname()),
        )
        with contextlib.suppress(OSError):  # a broker that cannot be reached (a test's wrong URL)
            delete_queues(self.sections["DEFAULT"]["transport_url"], [topic, f"{topic}.{host}"])


def rpc(transport: oslo_messaging.Transport, topic: str, timeout: float = 20) -> oslo_messaging.RPCClient:
    target = oslo_messaging.Target(topic=topic, version="1.0")
    return oslo_messaging.get_rpc_client(transport, target, timeout=timeout)


def wait_until_answering(worker: Daemon, client: oslo_messaging.RPCClient, timeout: float = 30) -> None:
    worker.wait_for_log("consuming topic", count=int(worker.sections["dbworker"]["workers"]))
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert client.prepare(timeout=2).call({}, "health")["status"] == "ok"
            return
        except oslo_messaging.MessagingTimeout:
            assert time.monotonic() < deadline, "the daemon never answered health"


def wait_for(condition: Callable[[], bool], timeout: float = 15, what: Callable[[], str] = str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds, saying ``what()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting {what()}"
        time.sleep(0.05)


class PlainOsloAPI(CatalogueAPI):
    """The catalogue's functions sent by a bare ``oslo_messaging.RPCClient`` (not ``dbworker.client``).

    Arguments go out as the contract's JSON (``wire.encode``); each reply is checked to be plain
    JSON before it is decoded for the test's comparisons. Errors arrive as oslo.messaging rebuilds
    them from ``allowed_remote_exmods``: ``<Class>_Remote`` subclasses of dbworker's classes, whose
    ``str()`` carries the worker's traceback; they are turned back into their class with the
    worker's message so the contract cases can compare them.
    """

    def __init__(self, client: oslo_messaging.RPCClient) -> None:
        self._rpc = client

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        try:
            reply = self._rpc.call(ctxt, name, **kwargs)
        except exception.CinderException as err:
            assert type(err).__name__.endswith("_Remote"), "rebuilt by oslo.messaging"
            raise type(err).__mro__[1](*err.args, **err.kwargs) from None
        except oslo_messaging.RemoteError as err:
            if err.exc_type == "NoSuchMethod":
                raise oslo_messaging.NoSuchMethod(name) from None
            raise
        assert json.loads(json.dumps(reply)) == reply, f"{name} replied with non-JSON {reply!r}"
        return reply


def broker_queue(name: str) -> dict[str, Any]:
    """Return RabbitMQ's view of the queue ``name`` (``messages_ready``, ``messages_unacknowledged``,
    ``consumers``, ``type``), read with ``rabbitmqctl`` from the local node."""
    listing = subprocess.run(
        [
            *("rabbitmqctl", "-q", "list_queues", "--formatter", "json"),
            *("name", "messages_ready", "messages_unacknowledged", "consumers", "type"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    queues = {queue["name"]: queue for queue in json.loads(listing)}
    assert name in queues, f"no queue {name!r} on the broker"
    return queues[name]


def on_broker(name: str) -> int:
    """Return how many messages the broker still owns in queue ``name`` (ready or pushed unacked)."""
    queue = broker_queue(name)
    return queue["messages_ready"] + queue["messages_unacknowledged"]


def plain_transport(url: str, **rabbit_options: Any) -> oslo_messaging.Transport:
    """Return a bare oslo.messaging RPC transport to ``url`` on a private config, rebuilding
    dbworker's typed errors; ``rabbit_options`` override ``[oslo_messaging_rabbit]``."""
    conf = cfg.ConfigOpts()
    conffixture.ConfFixture(conf)
    conf([], project="dbworker-daemon-tests")
    transport = oslo_messaging.get_rpc_transport(conf, url=url, allowed_remote_exmods=["dbworker.exception"])
    for name, value in rabbit_options.items():
        conf.set_override(name, value, group="oslo_messaging_rabbit")
    return transport
