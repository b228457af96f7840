"""The worker's metrics (``dbworker.daemon.metrics.WorkerMetrics``) in one process: what the
dispatcher tells them per call, and what the sampler reads of the threads, deliveries and pool."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.pool import QueuePool

from dbworker import exception, schema
from dbworker.api import LocalAPI
from dbworker.core.context import admin_context
from dbworker.core.replica import Replica
from dbworker.daemon.metrics import EVENTS, FALLBACKS, WorkerMetrics
from dbworker.tools.metrics_report import summary


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_dispatcher_tells_each_calls_function_outcome_and_duration(metrics):
    api = LocalAPI.from_engine(sa.create_engine("sqlite://"))
    schema.upgrade(api.dispatcher.engine)
    api.dispatcher.observer = metrics
    created = [api.volume_create(admin_context(), {"size": 1}) for _ in range(3)]
    for volume in created[:2]:
        api.volume_get(admin_context(), volume["id"])
    for _ in range(2):
        with pytest.raises(exception.VolumeNotFound):
            api.volume_get(admin_context(), "missing")

    assert value(metrics, "dbworker_calls_total", function="volume_create", outcome="ok") == 3
    assert value(metrics, "dbworker_calls_total", function="volume_get", outcome="ok") == 2
    assert value(metrics, "dbworker_calls_total", function="volume_get", outcome="VolumeNotFound") == 2
    assert value(metrics, "dbworker_call_duration_seconds_count", function="volume_get") == 4
    assert value(metrics, "dbworker_call_duration_seconds_sum", function="volume_get") > 0
    assert value(metrics, "dbworker_calls_in_flight", function="volume_get") == 0


def test_in_flight_counts_a_call_between_its_start_and_its_end(metrics):
    metrics.started("volume_get")
    metrics.started("volume_get")
    assert value(metrics, "dbworker_calls_in_flight", function="volume_get") == 2
    metrics.finished("volume_get", "ok", 0.003)
    assert value(metrics, "dbworker_calls_in_flight", function="volume_get") == 1
    assert value(metrics, "dbworker_call_duration_seconds_bucket", function="volume_get", le="0.005") == 1
    assert value(metrics, "dbworker_call_duration_seconds_bucket", function="volume_get", le="0.0025") == 0


@pytest.mark.parametrize(("key", "name"), [(k, n) for k, (n, _text) in EVENTS.items()])
def test_each_dispatcher_event_has_its_counter(metrics, key, name):
    metrics.counted(key)
    metrics.counted(key)
    metrics.counted("calls_ok")  # not an event of its own: dbworker_calls_total counts it
    assert value(metrics, f"{name}_total") == 2


def test_the_sampler_reads_threads_held_deliveries_and_the_pool(metrics):
    engine = sa.create_engine("sqlite://", poolclass=QueuePool, pool_size=1, max_overflow=2)
    with engine.connect(), engine.connect():  # one from the pool, one beyond it
        metrics.sample(lambda: (3, 5), 8, engine)
        assert value(metrics, "dbworker_executor_threads", state="busy") == 3
        assert value(metrics, "dbworker_executor_threads", state="free") == 5
        assert value(metrics, "dbworker_deliveries_held") == 5
        assert value(metrics, "dbworker_db_pool_connections", state="checked_out") == 2
        assert value(metrics, "dbworker_db_pool_connections", state="overflow") == 1
    metrics.sample(lambda: (0, 0), 8, engine)
    assert value(metrics, "dbworker_db_pool_connections", state="checked_out") == 0
    assert value(metrics, "dbworker_executor_threads", state="free") == 8


@pytest.mark.parametrize("reason", ["lagging", "down", "failed"])
def test_each_replica_fallback_is_counted_by_its_reason(metrics, reason):
    metrics.counted(f"replica_fallbacks_{reason}")
    assert value(metrics, "dbworker_replica_fallbacks_total", reason=reason) == 1
    assert sum(value(metrics, "dbworker_replica_fallbacks_total", reason=r) for r in FALLBACKS.values()) == 1


def test_the_sampler_reads_the_replicas_lag_bound_and_whether_it_is_used(metrics, monkeypatch):
    engine = sa.create_engine("sqlite://")
    replica = Replica.__new__(Replica)  # its state only: the lag bound is measured on a real standby
    monkeypatch.setattr(replica, "lag", lambda: 0.25, raising=False)
    monkeypatch.setattr(replica, "usable", lambda: True, raising=False)
    metrics.sample(lambda: (0, 0), 8, engine, replica)
    assert value(metrics, "dbworker_replica_lag_seconds") == 0.25
    assert value(metrics, "dbworker_replica_usable") == 1
    monkeypatch.setattr(replica, "lag", lambda: None, raising=False)
    monkeypatch.setattr(replica, "usable", lambda: False, raising=False)
    metrics.sample(lambda: (0, 0), 8, engine, replica)
    assert value(metrics, "dbworker_replica_lag_seconds") == float("inf")
    assert value(metrics, "dbworker_replica_usable") == 0


def test_the_operators_summary_shows_each_function_with_its_outcomes_and_latency(metrics):
    for seconds in (0.002, 0.004, 0.2):
        metrics.started("volume_get")
        metrics.finished("volume_get", "ok", seconds)
    metrics.started("volume_get")
    metrics.finished("volume_get", "VolumeNotFound", 0.002)
    metrics.started("volume_create")  # still running
    metrics.counted("calls_expired")

    lines = summary(generate_latest(metrics.registry).decode()).splitlines()

    assert lines[0].split() == [
        "function",
        "calls",
        "ok",
        "other",
        "outcomes",
        "mean",
        "ms",
        "p50",
        "ms",
        "p99",
        "ms",
        "in",
        "flight",
    ]
    assert lines[1].split() == ["volume_create", "0", "0", "-", "-", "-", "-", "1"]
    assert lines[2].split() == ["volume_get", "4", "3", "VolumeNotFound", "1", "52.0", "<=2.5", "<=250", "0"]
    assert "calls expired 1" in lines[-1]


def test_the_summary_refuses_what_is_not_metrics():
    with pytest.raises(ValueError):
        summary("this is { not metrics")
