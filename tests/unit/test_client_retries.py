"""``dbworker.client`` gives each call exactly one outcome: every attempt carries its deadline and,
for a write, the one idempotency key of the call; an attempt that gets no reply (``MessagingTimeout``)
or ``DBUnavailable`` is sent again after a growing, jittered pause, a bounded number of times and
never past the call's overall deadline; any other error is the outcome at once.

Most tests run the client on a fake RPC client and a fake clock (time moves only when an attempt
waits out its timeout or the client pauses), so the timings they assert are exact; the last ones
send real calls over ``kombu+memory:////`` to a server that fails as scripted.
"""

from __future__ import annotations

import inspect
import string
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import oslo_messaging
import pytest
from oslo_config import cfg

from dbworker import client, exception, options
from dbworker.protocol.calls import DEADLINE_KEY, IDEMPOTENCY_KEY

CTX = {"user_id": "u1", "project_id": "p1", "is_admin": False}
#: A script step: the attempt gets no reply and waits its whole timeout (then MessagingTimeout).
TIMEOUT = "no reply"


class FakeClock:
    """``dbworker.client``'s ``time`` module: a monotonic and a wall clock, apart by far, that move
    only when an attempt waits (:meth:`advance`) or the client sleeps (recorded in ``sleeps``)."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.wall_step = 0.0  # what the wall clock was set by (e.g. an NTP step)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 5_000.0 + self.elapsed

    def time(self) -> float:
        return 1_700_000_000.0 + self.elapsed + self.wall_step

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.elapsed += seconds


@dataclass
class Attempt:
    """One attempt as the fake RPC client got it."""

    method: str
    ctxt: dict[str, Any]
    kwargs: dict[str, Any]
    timeout: float
    sent_at: float  # the fake clock's elapsed seconds
    wall: float  # the wall clock when it was sent


class FakeRPC:
    """Stands for the client's ``oslo_messaging.RPCClient``: records every attempt (its context,
    arguments and timeout) and answers each with the next step of ``script``: ``TIMEOUT``, an
    exception to raise, or a reply. After the script's end, every attempt gets ``TIMEOUT``."""

    def __init__(self, clock: FakeClock, script: list[Any], on_send: Any = None) -> None:
        self.clock, self.script, self.on_send = clock, list(script), on_send
        self.attempts: list[Attempt] = []

    def prepare(self, *, timeout: float) -> Any:
        rpc = self

        class Prepared:
            def call(self, ctxt: dict[str, Any], method: str, **kwargs: Any) -> Any:
                return rpc.send(ctxt, method, kwargs, timeout)

        return Prepared()

    def send(self, ctxt: dict[str, Any], method: str, kwargs: dict[str, Any], timeout: float) -> Any:
        self.attempts.append(Attempt(method, ctxt, kwargs, timeout, self.clock.elapsed, self.clock.time()))
        if self.on_send is not None:
            self.on_send(len(self.attempts))
        step = self.script.pop(0) if self.script else TIMEOUT
        if step == TIMEOUT:
            self.clock.advance(timeout)
            raise oslo_messaging.MessagingTimeout(f"no reply in {timeout}s")
        if isinstance(step, BaseException):
            raise step
        return step


@pytest.fixture(scope="module")
def transport(rpc_conf):
    """A transport the clients are built on; their ``_rpc`` is then replaced by a :class:`FakeRPC`."""
    transport = client.get_transport(rpc_conf, url="fake:/")
    yield transport
    transport.cleanup()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(client, "time", fake)
    return fake


@pytest.fixture
def make(transport, clock):
    """``make(script, on_send=None, **Client options)`` -> ``(client, fake RPC)``."""

    def make(script: list[Any], on_send: Any = None, **kwargs: Any) -> tuple[client.Client, FakeRPC]:
        api = client.Client(transport, **{"timeout": 60, **kwargs})
        api._rpc = rpc = FakeRPC(clock, script, on_send)
        return api, rpc

    return make


def keys(rpc: FakeRPC) -> list[Any]:
    return [attempt.ctxt.get(IDEMPOTENCY_KEY) for attempt in rpc.attempts]


# --- what each attempt carries -----------------------------------------------------------------
def test_a_write_carries_one_key_on_every_attempt_and_gets_the_reply(make):
    api, rpc = make([TIMEOUT, exception.DBUnavailable(), {"id": "v1", "size": 1}])
    assert api.volume_create(CTX, {"size": 1}) == {"id": "v1", "size": 1}
    key = keys(rpc)[0]
    assert keys(rpc) == [key] * 3
    assert 1 <= len(key) <= 64 and set(key) <= set(string.printable) - set(string.whitespace)
    assert [a.kwargs for a in rpc.attempts] == [{"values": {"size": 1}}] * 3


def test_two_calls_of_a_write_carry_different_keys(make):
    api, rpc = make([None, None])
    api.volume_destroy(CTX, "v1")
    api.volume_destroy(CTX, "v1")
    first, second = keys(rpc)
    assert first and second and first != second


def test_a_read_carries_no_key_and_is_retried_too(make):
    api, rpc = make([TIMEOUT, exception.DBUnavailable(), {"id": "v1"}])
    assert api.volume_get(CTX, "v1") == {"id": "v1"}
    assert len(rpc.attempts) == 3
    assert all(IDEMPOTENCY_KEY not in attempt.ctxt for attempt in rpc.attempts)


def test_each_attempt_carries_its_deadline_on_the_wall_clock(make, clock):
    # Given an attempt timeout of 60 s and a call deadline that cuts the third attempt to 30 s
    api, rpc = make([TIMEOUT, TIMEOUT, TIMEOUT], retries=5, retry_backoff=0, call_deadline=150)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_get(CTX, "v1")
    # Then each attempt waited its own timeout, and told the worker when that ends, in wall time
    assert [a.timeout for a in rpc.attempts] == [60, 60, 30]
    assert [a.ctxt[DEADLINE_KEY] for a in rpc.attempts] == [a.wall + a.timeout for a in rpc.attempts]
    assert all(isinstance(a.ctxt[DEADLINE_KEY], float) for a in rpc.attempts)


def test_the_callers_context_is_copied_for_each_attempt_never_changed(make):
    api, rpc = make([TIMEOUT, {"id": "v1"}])
    ctxt = dict(CTX)
    api._invoke("volume_update", ctxt, {"volume_id": "v1", "values": {"size": 2}})
    assert ctxt == CTX
    first, second = (attempt.ctxt for attempt in rpc.attempts)
    assert first is not second and ctxt not in (first, second)
    assert {k: v for k, v in first.items() if k not in (DEADLINE_KEY, IDEMPOTENCY_KEY)} == CTX


def test_the_reads_of_use_slave_for_carry_use_slave_and_nothing_else_does(make):
    api, rpc = make([None, None, {"id": "v1"}], use_slave_for=["volume_get_all", "volume_get"])
    api.volume_get(CTX, "v1")
    api.volume_get_all(CTX)
    api.volume_create(CTX, {"size": 1})
    assert [attempt.ctxt.get("use_slave") for attempt in rpc.attempts] == [True, True, None]
    assert "use_slave" not in CTX


def test_a_callers_own_use_slave_is_sent_as_it_is(make):
    api, rpc = make([None])
    api.volume_get({**CTX, "use_slave": True}, "v1")
    assert rpc.attempts[0].ctxt["use_slave"] is True


@pytest.mark.parametrize(("name", "why"), [("volume_create", "writes"), ("volume_gett", "is no function")])
def test_use_slave_for_refuses_a_write_or_no_function(transport, name, why):
    with pytest.raises(ValueError, match=f"use_slave_for: {name} {why}"):
        client.Client(transport, use_slave_for=[name])


# --- when a call is sent again -------------------------------------------------------------------
@pytest.mark.parametrize("failure", [TIMEOUT, exception.DBUnavailable()], ids=["timeout", "db-unavailable"])
def test_retries_stop_after_the_configured_number_and_the_last_error_is_raised(make, failure):
    api, rpc = make([failure] * 5, retries=2)
    expected = oslo_messaging.MessagingTimeout if failure == TIMEOUT else exception.DBUnavailable
    with pytest.raises(expected) as raised:
        api.volume_create(CTX, {"size": 1})
    assert type(raised.value) is expected
    assert len(rpc.attempts) == 3


def test_zero_retries_means_one_attempt(make):
    api, rpc = make([TIMEOUT, {"id": "v1"}], retries=0)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_create(CTX, {"size": 1})
    assert len(rpc.attempts) == 1


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (exception.VolumeNotFound(volume_id="v1"), exception.VolumeNotFound),
        (exception.DBBusy(attempts=6), exception.DBBusy),
        (oslo_messaging.RemoteError("NoSuchMethod", "volume_get"), oslo_messaging.NoSuchMethod),
        (oslo_messaging.RemoteError("ValueError", "boom"), oslo_messaging.RemoteError),
        (oslo_messaging.MessageDeliveryFailure("no broker"), oslo_messaging.MessageDeliveryFailure),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_other_errors_are_the_outcome_at_once(make, failure, expected):
    api, rpc = make([failure, {"id": "v1"}])
    with pytest.raises(expected):
        api.volume_get(CTX, "v1")
    assert len(rpc.attempts) == 1


def test_health_is_sent_once(make):
    api, rpc = make([TIMEOUT, {"status": "ok"}])
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.health(None)
    assert len(rpc.attempts) == 1
    assert DEADLINE_KEY in rpc.attempts[0].ctxt and IDEMPOTENCY_KEY not in rpc.attempts[0].ctxt


# --- how long a call may take --------------------------------------------------------------------
def test_the_overall_deadline_bounds_the_whole_call(make, clock):
    api, rpc = make([TIMEOUT] * 20, retries=10, call_deadline=150)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_create(CTX, {"size": 1})
    assert clock.elapsed == pytest.approx(150)
    assert len(rpc.attempts) == 3
    last = rpc.attempts[-1]
    assert last.timeout < 60 and last.sent_at + last.timeout == pytest.approx(150)


def test_no_retry_starts_when_too_little_of_the_deadline_is_left(make, clock):
    # Given 0.6 s left after the second attempt: less than a second, so no third attempt (nor pause)
    api, rpc = make([TIMEOUT] * 5, retries=5, retry_backoff=0, call_deadline=120.6)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_get(CTX, "v1")
    assert len(rpc.attempts) == 2 and clock.sleeps == [0]
    assert clock.elapsed == pytest.approx(120)


def test_a_short_attempt_timeout_lowers_the_time_a_retry_needs(make, clock):
    # Given 0.2 s attempts: a retry needs 0.2 s left, not a second
    api, rpc = make([TIMEOUT] * 5, timeout=0.2, retries=5, retry_backoff=0, call_deadline=0.5)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_get(CTX, "v1")
    assert [a.timeout for a in rpc.attempts] == [0.2, 0.2]
    assert clock.elapsed == pytest.approx(0.4)


def test_a_wall_clock_step_does_not_stretch_the_call(make, clock):
    # Given the wall clock set back an hour during the first attempt
    def step_back(attempt: int) -> None:
        clock.wall_step = -3600.0 if attempt == 1 else clock.wall_step

    api, rpc = make([TIMEOUT] * 5, on_send=step_back, retries=5, retry_backoff=0, call_deadline=100)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        api.volume_get(CTX, "v1")
    # Then the call still ends 100 s after it began; the deadline sent follows the wall clock
    assert clock.elapsed == pytest.approx(100)
    second = rpc.attempts[1]
    assert second.ctxt[DEADLINE_KEY] == pytest.approx(second.wall + 40)


def test_the_pauses_grow_and_are_jittered_within_their_bounds(make, clock):
    api, rpc = make([exception.DBUnavailable()] * 6, retries=5, retry_backoff=0.5)
    with pytest.raises(exception.DBUnavailable):
        api.reservation_commit(CTX, ["r1"])
    assert len(clock.sleeps) == 5
    for n, pause in enumerate(clock.sleeps):
        assert 0.25 * 2**n <= pause <= 0.5 * 2**n
    assert clock.sleeps == sorted(clock.sleeps)
    assert [a.sent_at for a in rpc.attempts[1:]] == pytest.approx(
        [sum(clock.sleeps[: n + 1]) for n in range(5)]
    )


def test_callers_that_failed_together_pause_for_different_times(make, clock):
    for _ in range(10):
        api, _rpc = make([exception.DBUnavailable(), None], retry_backoff=1)
        api.volume_destroy(CTX, "v1")
    assert len(set(clock.sleeps)) == 10


def test_a_pause_doubles_per_retry_up_to_its_cap_between_half_and_all_of_it():
    assert client.retry_pause(0.5, 1, 0.0) == 0.25 and client.retry_pause(0.5, 1, 1.0) == 0.5
    assert client.retry_pause(0.5, 3, 1.0) == 2.0 and client.retry_pause(0.5, 3, 0.5) == 1.5
    assert client.retry_pause(20, 2, 1.0) == client.MAX_RETRY_PAUSE == 30
    assert client.retry_pause(0.5, 10_000, 0.0) == 15  # no overflow however many retries
    assert client.retry_pause(0, 4, 1.0) == 0


# --- options -------------------------------------------------------------------------------------
def test_the_clients_keywords_default_to_the_options_defaults():
    defaults = {opt.name: opt.default for opt in options.CLIENT_OPTS}
    params = inspect.signature(client.Client).parameters
    assert (
        {
            "topic": params["topic"].default,
            "rpc_timeout": params["timeout"].default,
            "rpc_retries": params["retries"].default,
            "rpc_retry_backoff": params["retry_backoff"].default,
            "rpc_call_deadline": params["call_deadline"].default,
            "use_slave_for": list(params["use_slave_for"].default),
        }
        == defaults
        == {
            "topic": "dbworker",
            "rpc_timeout": 60,
            "rpc_retries": 3,
            "rpc_retry_backoff": 0.5,
            "rpc_call_deadline": 180,
            "use_slave_for": [],
        }
    )


def test_configure_builds_the_client_from_the_options(transport, clock, monkeypatch):
    monkeypatch.setattr(client, "_default", None)
    conf = cfg.ConfigOpts()
    options.register_client_opts(conf)
    conf([])
    overrides = {"rpc_timeout": 5, "rpc_retries": 1, "rpc_retry_backoff": 0.25, "rpc_call_deadline": 30}
    for name, value in overrides.items():
        conf.set_override(name, value, group="dbworker")
    api = client.configure(conf, transport=transport)
    api._rpc = rpc = FakeRPC(clock, [TIMEOUT] * 5)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client.volume_get(CTX, "v1")
    assert [a.timeout for a in rpc.attempts] == [5, 5]
    assert len(clock.sleeps) == 1 and 0.125 <= clock.sleeps[0] <= 0.25


@pytest.mark.parametrize(
    "bad", [{"timeout": 0}, {"call_deadline": 0}, {"retries": -1}, {"retry_backoff": -0.1}]
)
def test_a_client_refuses_values_that_leave_no_call(transport, bad):
    with pytest.raises(ValueError, match="must be positive"):
        client.Client(transport, **bad)


# --- over a real transport -----------------------------------------------------------------------
class Flaky:
    """An endpoint whose first call of each function fails: ``volume_create`` raises
    ``DBUnavailable``; ``volume_get`` never answers in time (it waits for ``release``)."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()

    @oslo_messaging.expected_exceptions(exception.CinderException)
    def volume_create(self, ctxt: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(("volume_create", dict(ctxt)))
        if len(self.seen) == 1:
            raise exception.DBUnavailable()
        return {"id": "v1", **values}

    def volume_get(self, ctxt: dict[str, Any], volume_id: str) -> dict[str, Any]:
        self.seen.append(("volume_get", dict(ctxt)))
        if len(self.seen) == 1:
            self.release.wait(timeout=30)
        return {"id": volume_id}


@pytest.fixture(scope="module")
def flaky_server(rpc_conf):
    """A started server with a :class:`Flaky` endpoint; yields ``(endpoint, client)``."""
    topic = f"dbworker-retries-{uuid.uuid4().hex[:8]}"
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    endpoint = Flaky()
    server = oslo_messaging.get_rpc_server(
        transport,
        oslo_messaging.Target(topic=topic, server="flaky"),
        [endpoint],
        access_policy=oslo_messaging.DefaultRPCAccessPolicy,
    )
    server.start()
    yield endpoint, client.Client(transport, topic=topic, timeout=0.5, retry_backoff=0.05, call_deadline=10)
    server.stop()
    server.wait()
    transport.cleanup()


@pytest.fixture
def flaky(flaky_server):
    """The server's endpoint, as new (nothing seen, a new ``release``), and its client."""
    endpoint, api = flaky_server
    endpoint.seen, endpoint.release = [], threading.Event()
    yield endpoint, api
    endpoint.release.set()


def test_a_write_the_worker_could_not_commit_is_sent_again_with_its_key(flaky):
    endpoint, api = flaky
    before = time.time()
    assert api.volume_create(CTX, {"size": 1}) == {"id": "v1", "size": 1}
    (_, first), (_, second) = endpoint.seen
    assert first[IDEMPOTENCY_KEY] == second[IDEMPOTENCY_KEY]
    assert before + 0.5 <= first[DEADLINE_KEY] <= time.time() + 0.5
    assert {k: first[k] for k in CTX} == CTX


def test_a_read_with_no_reply_in_time_is_sent_again_and_answered(flaky):
    endpoint, api = flaky
    started = time.monotonic()
    assert api.volume_get(CTX, "v1") == {"id": "v1"}
    assert 0.5 <= time.monotonic() - started < 5
    assert [name for name, _ in endpoint.seen] == ["volume_get", "volume_get"]
    assert all(IDEMPOTENCY_KEY not in ctxt for _, ctxt in endpoint.seen)
