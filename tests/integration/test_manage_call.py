"""``dbworker-manage call``: an operator's call to a worker on the real RabbitMQ, run as a subprocess.

The worker runs in this process (the services family on SQLite) on a topic of its own; each test
writes a config file naming the broker and the topic and runs the command as an operator would.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
from testenv import service_url

from dbworker import client, schema
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Registry
from dbworker.edge import rpc
from dbworker.handlers import services
from dbworker.protocol import wire
from dbworker.session import make_engine, make_sessionmaker
from dbworker.tools.testing import delete_queues

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

HOST = "manage-call"
ADMIN = ["--admin"]
USER = ["--project-id", "p1", "--user-id", "u1"]


@pytest.fixture(scope="module")
def rabbit_url() -> str:
    return service_url("rabbitmq")


@pytest.fixture(scope="module")
def topic(rabbit_url, private_database_url, rpc_conf):
    """The topic of a worker serving only the services family, on RabbitMQ and SQLite."""
    engine = make_engine(private_database_url("sqlite"))
    schema.upgrade(engine)
    topic = f"dbworker-manage-{uuid.uuid4().hex[:8]}"
    transport = client.get_transport(rpc_conf, url=rabbit_url)
    dispatcher = Dispatcher(Registry.from_modules([services]), make_sessionmaker(engine))
    server = rpc.build_server(transport, dispatcher, topic=topic, host=HOST, pool_size=4)
    server.start()
    yield topic
    server.stop()
    server.wait()
    transport.cleanup()
    engine.dispose()
    delete_queues(rabbit_url, [topic, f"{topic}.{HOST}"])


def manage_command(tmp_path, url: str, topic: str, *args: str) -> list[str]:
    """Return the command line of ``dbworker-manage --config-file <tmp> call *args``."""
    config = tmp_path / f"dbworker-{uuid.uuid4().hex[:6]}.conf"
    config.write_text(f"[DEFAULT]\ntransport_url = {url}\n[dbworker]\ntopic = {topic}\n")
    return [sys.executable, "-m", "dbworker.tools.manage", "--config-file", str(config), "call", *args]


def manage(tmp_path, url: str, topic: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``dbworker-manage --config-file <tmp> call *args``."""
    command = manage_command(tmp_path, url, topic, *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_call_prints_the_reply_as_sorted_json_with_wire_datetimes(tmp_path, rabbit_url, topic):
    created = manage(tmp_path, rabbit_url, topic, "service_create", '{"values": {"host": "h"}}', *ADMIN)
    assert (created.returncode, created.stderr) == (0, "")
    record = json.loads(created.stdout)
    assert record["host"] == "h" and record["deleted"] is False
    assert datetime.strptime(record["created_at"], wire.TIME_FORMAT)
    assert created.stdout == json.dumps(record, indent=2, sort_keys=True) + "\n"

    by_id = json.dumps({"service_id": record["id"]})
    read = manage(tmp_path, rabbit_url, topic, "service_get", by_id, *ADMIN)
    assert read.returncode == 0 and json.loads(read.stdout) == record


@pytest.mark.parametrize(
    ("function", "kwargs", "who", "expected", "expected_kwargs"),
    [
        (
            "service_get",
            '{"service_id": 999}',
            ADMIN,
            "ServiceNotFound: Service 999 could not be found.",
            {"service_id": 999, "code": 404},
        ),
        ("service_get_all", "{}", USER, "AdminRequired: User does not have admin privileges", {"code": 403}),
        ("service_get_all", "{}", [], "AdminRequired: User does not have admin privileges", {"code": 403}),
        (
            "service_get",
            '{"service_id": "one"}',
            ADMIN,
            "InvalidInput: Invalid input received: argument 'service_id' must be int",
            {"code": 400},
        ),
    ],
    ids=["not-found", "user-context", "no-context", "bad-argument"],
)
def test_a_typed_error_prints_its_class_message_and_kwargs_on_stderr(
    tmp_path, rabbit_url, topic, function, kwargs, who, expected, expected_kwargs
):
    result = manage(tmp_path, rabbit_url, topic, function, kwargs, *who)
    message, error_kwargs = result.stderr.splitlines()
    assert (result.returncode, result.stdout) == (1, "")
    assert message.startswith(expected)
    assert error_kwargs == json.dumps(json.loads(error_kwargs), sort_keys=True)
    assert expected_kwargs.items() <= json.loads(error_kwargs).items()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (['{"service_id": 1', *ADMIN], "the keyword arguments are not JSON"),
        (["[1]", *ADMIN], "the keyword arguments must be a JSON object, not list"),
        (["{}", "--admin", "--project-id", "p1", "--user-id", "u1"], "--admin cannot be combined"),
        (["{}", "--user-id", "u1"], "--project-id and --user-id go together"),
        (["{}", *ADMIN, "--timeout", "0"], "--timeout must be more than 0"),
    ],
    ids=["bad-json", "not-an-object", "admin-and-ids", "user-without-project", "zero-timeout"],
)
def test_bad_arguments_exit_2_with_one_line_before_anything_is_sent(tmp_path, rabbit_url, args, message):
    result = manage(tmp_path, rabbit_url, "unused", "service_get", *args)
    assert result.returncode == 2
    assert result.stderr == f"dbworker-manage: error: {result.stderr.split('error: ', 1)[1]}"
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_function_the_worker_does_not_serve_is_named_with_no_such_method(tmp_path, rabbit_url, topic):
    result = manage(tmp_path, rabbit_url, topic, "volume_get", '{"volume_id": "x"}', *ADMIN)
    assert result.returncode == 1
    assert result.stderr == "dbworker-manage: error: the worker does not serve 'volume_get' (NoSuchMethod)\n"


def test_no_worker_on_the_topic_times_out_after_the_timeout(tmp_path, rabbit_url):
    nobody = f"dbworker-nobody-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = manage(tmp_path, rabbit_url, nobody, "service_get_all", "{}", *ADMIN, "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr == (
        f"dbworker-manage: error: no worker on topic '{nobody}' answered within 2 seconds "
        "(MessagingTimeout)\n"
    )
    assert time.monotonic() - started < 20


def test_an_unreachable_broker_fails_within_the_timeout_without_printing_its_password(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"rabbit://guest:s3cret-pw@127.0.0.1:{port}/"
    result = manage(tmp_path, url, "dbworker", "service_get_all", "{}", *ADMIN, "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"error: could not send the call within 1 seconds: the message broker (127.0.0.1:{port}) "
        "is unreachable\n"
    )
    assert "s3cret-pw" not in result.stdout + result.stderr


#: Bytes a pipe holds in the broken-pipe test (the smallest Linux allows: a page), so that a reply
#: of a few kilobytes is sure to outgrow it and meet the closed read end.
PIPE_SIZE = 4096


@pytest.fixture(scope="module")
def replies(tmp_path_factory, rabbit_url, topic, rpc_conf) -> dict[str, tuple[list[str], str]]:
    """Two ``call`` command lines and their output: ``long``, a reply that outgrows the pipe, and
    ``short``, one that fits in it (and in stdout's buffer)."""
    transport = client.get_transport(rpc_conf, url=rabbit_url)
    try:
        api = client.Client(transport, topic=topic, timeout=30)
        ids = [
            api.service_create({"is_admin": True}, {"host": f"pipe-{n}-{'x' * 200}"})["id"] for n in range(20)
        ]
    finally:
        transport.cleanup()
    tmp_path = tmp_path_factory.mktemp("manage-pipe")
    calls = {"long": ("service_get_all", "{}"), "short": ("service_get", json.dumps({"service_id": ids[0]}))}
    replies = {}
    for size, args in calls.items():
        command = manage_command(tmp_path, rabbit_url, topic, *args, *ADMIN)
        full = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert (full.returncode, full.stderr) == (0, "")
        replies[size] = command, full.stdout
    assert len(replies["long"][1]) > 2 * PIPE_SIZE  # more than the pipe holds: a write meets the closed end
    assert len(replies["short"][1]) < PIPE_SIZE  # held until flushed
    return replies


@pytest.mark.parametrize(
    ("reader", "size"),
    [("head -c 10", "long"), ("closed before the reply", "long"), ("closed before the reply", "short")],
)
def test_call_into_a_pipe_whose_reader_closes_early_exits_141_with_nothing_on_stderr(replies, reader, size):
    command, output = replies[size]
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    head = None
    if reader == "head -c 10":  # reads 10 bytes and exits while the reply is being written
        head = subprocess.Popen(["head", "-c", "10"], stdin=read_end, stdout=subprocess.PIPE)
    os.close(read_end)  # now only head (or nobody) reads the pipe
    # stdout block-buffered, as for an operator (PYTHONUNBUFFERED would write each print through)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    call = subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env)
    os.close(write_end)
    _, stderr = call.communicate(timeout=60)
    if head is not None:
        assert head.communicate(timeout=10)[0] == output[:10].encode()
    assert stderr == ""
    assert call.returncode == 141  # 128 + SIGPIPE, as a shell reports a writer killed by SIGPIPE
