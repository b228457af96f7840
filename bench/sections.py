"""Sections of a run that :mod:`bench.run` strings together: the seeded database, the peers and the
check of their replies, the py-spy profile of the worker, and the MariaDB rows."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oslo_messaging
import sqlalchemy as sa

from bench import check, cpu, facts, measure, profiling, servers, workloads
from bench.config import Settings
from bench.measure import Call
from bench.rounds import Row
from bench.services import Resources
from dbworker import client as dbclient
from dbworker.handlers.volume_replies import _volume_read
from dbworker.tools import pg_replica

Log = Callable[[str], None]


def setup(
    res: Resources, rabbit: str, rows: int, kind: str = "postgresql"
) -> tuple[workloads.Data, Any, str]:
    """Create and seed a private database of ``kind`` (filled to ``rows`` volumes); return the
    data, an RPC transport to ``rabbit`` and the database URL. All are released with ``res``."""
    url = res.database(kind)
    data = workloads.Data(url)
    res.callback(data.dispose)
    data.fill(rows)
    rpc = workloads.transport(rabbit)
    res.callback(rpc.cleanup)
    return data, rpc, url


@dataclass
class Peers:
    """The started peer servers (echo, oslo-peer, celery), the calls to each, and for the check a
    call per peer process returning the dbworker modules it imported."""

    servers: dict[str, servers.Server]
    calls: dict[str, dict[str, Call]]
    loaded: dict[str, Callable[[], list[str]]]


def start_peers(res: Resources, rpc: Any, rabbit: str, database_url: str, data: workloads.Data) -> Peers:
    """Start the echo server, the bare oslo.messaging peer and the Celery worker; wait for each."""
    echo = servers.start_echo(res, rabbit, lambda topic: workloads.echo_call(rpc, topic, data, 0.5)(0, 0))

    def probe(topic: str, timeout: float) -> Any:
        target = oslo_messaging.Target(topic=topic, version="1.0")
        return oslo_messaging.get_rpc_client(rpc, target, timeout=timeout)

    oslo = servers.start_oslo_peer(
        res, rabbit, database_url, lambda t: probe(t, 0.5).call({}, "dbworker_loaded")
    )
    broker = servers.celery_broker_url(rabbit)
    queue = servers.unique("bench-celery")
    celery_calls = workloads.celery_calls(broker, queue, database_url, data)
    celery = servers.start_celery(res, broker, queue, database_url, workloads.celery_ping(queue))
    from bench import celery_app

    return Peers(
        servers={"echo": echo, "celery": celery, "oslo-peer": oslo},
        calls={
            "echo": {"echo": workloads.echo_call(rpc, echo.topic, data)},
            "celery": celery_calls,
            "oslo-peer": workloads.oslo_peer_calls(rpc, oslo.topic, data),
        },
        loaded={
            "celery worker": lambda: celery_app.dbworker_loaded.apply_async(queue=queue).get(timeout=30),
            "oslo peer server": lambda: probe(oslo.topic, 30).call({}, "dbworker_loaded"),
        },
    )


def check_replies(data: workloads.Data, rpc: Any, topic: str, peers: Peers) -> dict[str, Any]:
    """Check that the peers, the direct floor and dbworker's in-process dispatcher reply to
    ``volume_get`` exactly as the daemon on ``topic`` does (:mod:`bench.check`)."""
    get, create = check.in_process(data)
    direct = workloads.direct_calls(data)
    return check.run(
        data,
        check.raw_dbworker(rpc, topic),
        peers={
            "in-process (dbworker's dispatcher)": get,
            "direct": direct["volume_get"],
            "celery": peers.calls["celery"]["volume_get"],
            "oslo-peer": peers.calls["oslo-peer"]["volume_get"],
        },
        loaded=peers.loaded,
        creates={"direct": lambda: direct["volume_create"](0, 0), "in-process": create},
    )


def profile(
    cfg: Settings, server: servers.Server, op: str, call: Call, workdir: Path, log: Log
) -> dict[str, Any]:
    """py-spy on the daemon's worker process for ``cfg.profile_s`` seconds while the client threads
    call ``op``; the summary of :func:`bench.profiling.summarize` over the calls answered
    while py-spy ran, plus the worker's CPU ms per call read from /proc over the same time (or
    ``{"error": ...}`` if py-spy failed)."""
    (pid,) = measure.worker_pids(server.process.pid)
    out = workdir / f"py-spy-{op}.txt"
    seconds = max(1, round(cfg.profile_s))
    sent, stop = measure.Counter(), threading.Event()
    counted = measure.counted({op: call}, sent)[op]
    driver = threading.Thread(
        target=lambda: measure.throughput(counted, cfg.threads, seconds + 120, stop=stop), daemon=True
    )
    driver.start()
    time.sleep(0.5)  # every client thread busy before the recording starts
    worker = cpu.tree(pid)
    spy = None
    try:
        before, calls_before, start = worker(), sent.value, time.monotonic()
        spy = profiling.record(pid, seconds, out, cfg.profile_rate, cfg.profile_gil)
        spy_log, _ = spy.communicate(timeout=seconds + 60)
        after, calls, wall = worker(), sent.value - calls_before, time.monotonic() - start
    except (OSError, subprocess.TimeoutExpired) as err:
        log(f"  py-spy failed: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        stop.set()
        if spy is not None and spy.poll() is None:
            spy.kill()  # by its pid; it is our child, not in a process group of its own
            spy.wait()
        driver.join()
    text = out.read_text() if out.exists() else ""
    if spy.returncode != 0 or not text:
        message = spy_log.decode(errors="replace").strip()[-500:]
        log(f"  py-spy failed (exit {spy.returncode}): {message}")
        return {"error": f"py-spy exit {spy.returncode}: {message}"}
    summary = profiling.summarize(text, calls, cfg.profile_rate)
    summary.update(
        seconds=seconds,
        gil=cfg.profile_gil,
        calls_per_s=round(calls / wall, 1),
        cpu_ms_per_call_proc=round((after - before) * 1000 / max(1, calls), 3),
    )
    log(
        f"  {summary['samples']} samples, {calls} calls: {summary['ms_per_call_sampled']} ms/call sampled, "
        f"{summary['cpu_ms_per_call_proc']} ms/call of worker CPU (/proc)"
    )
    return summary


def mariadb(bench: Any, res: Resources, rpc: Any, rabbit: str, log: Log) -> None:
    """The direct floor and dbworker (1 worker) on MariaDB: the reply check, latency and
    interleaved throughput of volume_get and volume_create."""
    log("MariaDB: direct SQLAlchemy and dbworker (1 worker)")
    data, _, url = setup(res, rabbit, bench.cfg.rows_small, "mysql")
    bench.results["meta"]["facts"]["MariaDB"] = facts.machine({"MariaDB": url})["MariaDB"]
    server, client = servers.start_daemon(res, rpc, rabbit, url, 1, "dbworker-mariadb")
    bench.results["startup"]["dbworker-1 (MariaDB)"] = round(server.first_answer_s, 2)
    direct = workloads.direct_calls(data)
    bench.results["check_mariadb"] = check.run(
        data,
        check.raw_dbworker(rpc, server.topic),
        peers={"mariadb-direct": direct["volume_get"]},
        loaded={},
        creates={"mariadb-direct": lambda: direct["volume_create"](0, 0)},
    )
    log(f"  check: {bench.results['check_mariadb']}")
    ops = workloads.dbworker_calls(client, data)
    systems = {
        "mariadb-direct": {"volume_get": direct["volume_get"]},
        "mariadb-dbw-1": {op: ops[op] for op in ("volume_get", "volume_create")},
    }
    bench.latencies(systems)
    pids = {"mariadb-direct": None, "mariadb-dbw-1": server.process.pid}
    bench.before_round = data.analyze  # the last section: the PostgreSQL rows are done
    bench.rounds(
        [
            Row(s, op, call, pids[s], database="mysql", workers=pids[s] is not None)
            for s, calls in systems.items()
            for op, call in calls.items()
        ]
    )
    server.process.stop()


def replica(bench: Any, res: Resources, rpc: Any, rabbit: str, log: Log) -> None:
    """``volume_get`` served by a hot standby beside the same read on its primary: a private
    PostgreSQL pair (:mod:`dbworker.tools.pg_replica`), one daemon with ``slave_connection``, and
    paired rounds of its reads without and with ``use_slave``, each server's CPU read apart."""
    reason = pg_replica.available()
    if reason is not None:
        log(f"replica: skipped ({reason})")
        bench.results["replica_skipped"] = reason
        return
    log("replica: a private PostgreSQL primary and hot standby, seeded alike")
    pair = res.enter_context(pg_replica.StreamingPair())
    data = workloads.Data(pair.primary_url)
    res.callback(data.dispose)
    data.fill(bench.cfg.rows_small)
    pair.wait_caught_up()
    server, client = servers.start_daemon(
        res, rpc, rabbit, pair.primary_url, 1, "dbworker-1-replica", replica_url=pair.standby_url
    )
    ends = time.monotonic() + 30
    while (state := client.health().get("replica", {}).get("state")) != "ok":
        if time.monotonic() > ends:
            raise RuntimeError(f"the daemon's read replica stayed {state!r} for 30 s")
        time.sleep(0.2)
    on_replica = dbclient.Client(rpc, topic=server.topic, timeout=30, use_slave_for=["volume_get"])
    pids = {"database": pair.postmaster_pid("primary"), "replica": pair.postmaster_pid("standby")}
    calls = {
        workloads.ON_PRIMARY: workloads.dbworker_calls(client, data)["volume_get"],
        workloads.ON_REPLICA: workloads.dbworker_calls(on_replica, data)["volume_get"],
    }
    main_analyze, bench.before_round = bench.before_round, data.analyze
    bench.paired_rounds(
        "replica",
        [
            Row(system, "volume_get", call, server.process.pid, workers=True, database_pids=pids)
            for system, call in calls.items()
        ],
    )
    bench.before_round = main_analyze
    server.process.stop()


#: The tables a listing reads; their scan counters tell an index plan from a table scan.
SCANNED_TABLES = ("volumes", "volume_metadata", "volume_types", "volume_type_extra_specs")


def table_scans(data: workloads.Data) -> dict[str, dict[str, Any]]:
    """PostgreSQL's counters of :data:`SCANNED_TABLES` since the database was created
    (``pg_stat_user_tables``): scans (sequential, rows they read, by index), live rows, rows
    changed since the last ANALYZE and when autovacuum last analyzed the table. A listing run with
    a table scan shows as sequential scans reading every row; the statistics say what the planner
    knew."""
    columns = "seq_scan, seq_tup_read, idx_scan, n_live_tup, n_mod_since_analyze, last_autoanalyze"
    query = sa.text(
        f"SELECT relname, {columns} FROM pg_stat_user_tables WHERE relname IN :tables"
    ).bindparams(sa.bindparam("tables", expanding=True))
    with data.engine.connect() as conn:
        rows = conn.execute(query, {"tables": list(SCANNED_TABLES)}).mappings().all()
    return {
        r["relname"]: {k: (str(v) if k == "last_autoanalyze" else v) for k, v in r.items() if k != "relname"}
        for r in rows
    }


def listing_plan(data: workloads.Data) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the project listing the bench calls, as dbworker runs it
    (its statement, the lister's project), on the database as the rounds left it."""
    statement = _volume_read("no", True, ("project",), False).statement
    sql = str(statement.compile(dialect=data.engine.dialect))
    params = {
        "project_id": workloads.LISTER["project_id"],
        "caller_project_id": workloads.LISTER["project_id"],
    }
    with data.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return [row[0] for row in cursor.fetchall()]
