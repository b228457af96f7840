"""The daemon's Prometheus metrics, scraped over HTTP from a real daemon with two workers: one
target per host (the master serves what every worker counted), exactly the calls made."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import oslo_messaging
import pytest
from daemons import ADMIN, rpc, wait_for, wait_until_answering
from prometheus_client.parser import text_string_to_metric_families

from dbworker import exception
from dbworker.tools.testing import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:<port>/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_pid(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """A ``liveall`` gauge's value per worker process."""
    wanted = set(labels.items())
    return {
        dict(key)["pid"]: value for (n, key), value in samples.items() if n == name and wanted <= set(key)
    }


def test_a_scrape_shows_exactly_the_calls_each_function_had(daemon, transport):
    port = free_port()
    worker = daemon(dbworker__workers=2, dbworker__metrics_port=port)
    client = rpc(transport, worker.topic)
    wait_until_answering(worker, client)
    worker.wait_for_log("consuming topic", count=2)
    values = {"project_id": "p-metrics", "size": 1}

    ids = [client.call(ADMIN, "volume_create", values=values)["id"] for _ in range(3)]
    for volume_id in ids[:2]:
        client.call(ADMIN, "volume_get", volume_id=volume_id)
    for _ in range(2):
        with pytest.raises(exception.VolumeNotFound):
            client.call(ADMIN, "volume_get", volume_id=str(uuid.uuid4()))
    keyed = {**ADMIN, "idempotency_key": uuid.uuid4().hex}
    first = client.call(keyed, "volume_create", values=values)
    assert client.call(keyed, "volume_create", values=values) == first  # answered from its record
    with pytest.raises(oslo_messaging.MessagingTimeout):  # its caller gave up a minute ago
        client.prepare(timeout=2).call(
            {**ADMIN, "deadline": time.time() - 60}, "volume_create", values=values
        )

    wait_for(lambda: sample(scrape(port), "dbworker_calls_expired_total") == 1, 15)
    samples = scrape(port)
    calls = {
        (dict(key)["function"], dict(key)["outcome"]): value
        for (name, key), value in samples.items()
        if name == "dbworker_calls_total" and dict(key)["function"] != "health"
    }
    assert calls == {
        ("volume_create", "ok"): 4,
        ("volume_create", "KeyTaken"): 1,
        ("volume_create", "DeadlinePassed"): 1,
        ("volume_get", "ok"): 2,
        ("volume_get", "VolumeNotFound"): 2,
    }
    assert sample(samples, "dbworker_call_duration_seconds_count", function="volume_get") == 4
    assert sample(samples, "dbworker_call_duration_seconds_count", function="volume_create") == 6
    assert sample(samples, "dbworker_calls_in_flight", function="volume_create") == 0
    assert sample(samples, "dbworker_calls_answered_from_record_total") == 1
    assert sample(samples, "dbworker_redeliveries_dropped_total") == 0
    assert sample(samples, "dbworker_db_retries_total") == 0

    pids = {str(pid) for pid in worker.workers()}
    busy = by_pid(samples, "dbworker_executor_threads", state="busy")
    free = by_pid(samples, "dbworker_executor_threads", state="free")
    assert set(busy) == set(free) == pids  # one series per live worker process
    assert all(busy[pid] + free[pid] == 2 for pid in pids)  # executor_thread_pool_size
    assert set(by_pid(samples, "dbworker_deliveries_held")) == pids
    assert set(by_pid(samples, "dbworker_db_pool_connections", state="checked_out")) == pids

    # The operator's view of the same, without Prometheus: dbworker-manage metrics.
    manage = [sys.executable, "-m", "dbworker.tools.manage", "--config-file", str(worker.conf_path)]
    done = subprocess.run([*manage, "metrics"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["volume_get"][1:5] == ["4", "2", "VolumeNotFound", "2"]
    assert rows["volume_create"][1:3] == ["6", "4"]
    assert sorted(line.split()[1].rstrip(":") for line in lines if line.startswith("worker ")) == sorted(pids)


def test_the_metrics_files_go_with_the_master_and_a_taken_port_stops_the_start(daemon, transport):
    port = free_port()
    worker = daemon(dbworker__metrics_port=port)
    wait_until_answering(worker, rpc(transport, worker.topic))
    files = Path(re.search(r"worker files in (\S+)\)", worker.log).group(1))
    assert any(files.iterdir())  # the worker's own files

    second = daemon(dbworker__metrics_port=port)  # the same port, taken by the first
    assert second.wait(timeout=30) == 1
    assert f"Not starting: cannot serve metrics on 127.0.0.1:{port}" in second.log

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert not files.exists()


def test_a_worker_replaced_by_sighup_keeps_its_counts_and_its_gauges_leave_with_it(daemon, transport):
    port = free_port()
    worker = daemon(dbworker__metrics_port=port)
    client = rpc(transport, worker.topic)
    wait_until_answering(worker, client)
    values = {"project_id": "p-metrics", "size": 1}
    client.call(ADMIN, "volume_create", values=values)
    (old,) = worker.workers()

    worker.signal(signal.SIGHUP)  # the master replaces the worker process
    wait_for(lambda: worker.workers() not in ([], [old]), 60, what=lambda: worker.log)
    worker.wait_for_log("consuming topic", count=2)
    client.call(ADMIN, "volume_create", values=values)

    (new,) = worker.workers()

    def gauges_of_the_new_worker_only() -> bool:
        return set(by_pid(scrape(port), "dbworker_executor_threads", state="free")) == {str(new)}

    wait_for(gauges_of_the_new_worker_only, 15, what=lambda: str(scrape(port)))
    assert sample(scrape(port), "dbworker_calls_total", function="volume_create", outcome="ok") == 2
