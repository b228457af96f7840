"""``python -m bench.run [--quick | --check] [--out bench/RESULTS.md]``: run the benchmarks, write the report.

It creates private databases on the local PostgreSQL and MariaDB, starts (and stops, by pid) the
dbworker daemon, a bare oslo.messaging echo server, a bare oslo.messaging server and a Celery worker
doing dbworker's ``volume_get`` read in plain SQLAlchemy, checks that those peers reply exactly as
dbworker does, prints progress, and writes ``RESULTS.md`` plus the raw numbers as JSON. A full run
refuses to start on a busy machine (1-minute load average above ``--max-load``) unless ``--force``.
``--quick`` makes fewer calls (about 3-4 minutes on 2 cores) for development; the targets are
judged on a full run on a quiet machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import (
    config,
    facts,
    measure,
    reference,
    report,
    rounds,
    roundtrips,
    sections,
    servers,
    targets,
    workloads,
)
from bench.config import Settings
from bench.measure import Call
from bench.rounds import Row
from bench.services import Resources, service_url
from dbworker.api import LocalAPI

_T0 = time.monotonic()
#: The operations whose worker is profiled under load (the read and the write of the targets).
PROFILED = ("volume_get", "volume_create")


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class Bench:
    """One run: its settings, the results so far, and the measuring helpers that record them."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        #: Called before each round of throughput rows: the seeded databases' ANALYZE.
        self.before_round: Callable[[], None] | None = None
        self.results: dict[str, Any] = {
            "settings": asdict(cfg),
            "latency": {},
            "throughput": {},
            "startup": {},
            "rss": {},
            "rows": {},
        }

    def latency(self, system: str, op: str, call: Call) -> dict[str, float]:
        """Sequential latency of ``call`` (one client thread): p50, p99, mean in ms."""
        result = measure.latency(call, self.cfg.latency_calls, self.cfg.warmup)
        self.results["latency"].setdefault(system, {})[op] = result
        log(f"  {system:<14} {op:<26} p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms")
        return result

    def latencies(self, systems: dict[str, dict[str, Call]]) -> None:
        for system, calls in systems.items():
            for op, call in calls.items():
                self.latency(system, op, call)

    def rounds(self, rows: list[Row], key: str = "throughput") -> None:
        """Throughput of ``rows`` in ``repeats`` interleaved rounds, with CPU per call (rounds.run)."""
        measured = rounds.run(
            rows,
            self.cfg.repeats,
            self.cfg.threads,
            self.cfg.throughput_s,
            log,
            before_round=self.before_round,
        )
        for system, ops in measured.items():
            self.results.setdefault(key, {}).setdefault(system, {}).update(ops)

    def paired_rounds(self, name: str, rows: list[Row]) -> None:
        """Throughput of ``rows`` in ``pair_repeats`` rounds of alternating order, kept under
        ``results["pairs"][name]``: their rounds are paired measurements (rounds.paired)."""
        log(f"paired rounds '{name}': {self.cfg.pair_repeats} rounds, alternating order")
        measured = rounds.run(
            rows,
            self.cfg.pair_repeats,
            self.cfg.threads,
            self.cfg.throughput_s,
            log,
            alternate=True,
            before_round=self.before_round,
        )
        self.results.setdefault("pairs", {})[name] = measured


def run(cfg: Settings, workdir: Path, load: tuple[float, float, float]) -> dict[str, Any]:
    """The full or quick run: every section in order; returns the results."""
    bench = Bench(cfg)
    rabbit = service_url("rabbitmq")
    with Resources(workdir) as res:
        log("creating a private PostgreSQL database and seeding it")
        data, rpc, pg_url = sections.setup(res, rabbit, cfg.rows_small)
        bench.before_round = data.analyze
        broker = servers.celery_broker_url(rabbit)
        bench.results["meta"] = {"facts": facts.machine({"PostgreSQL": pg_url}, broker, load)}

        log("dbworker, 1 worker process: start")
        one, client = servers.start_daemon(res, rpc, rabbit, pg_url, 1, "dbworker-1")
        bench.results["startup"]["dbworker-1"] = round(one.first_answer_s, 2)
        bench.results["startup_milestones"] = one.milestones
        log(f"  first answer after {one.first_answer_s:.2f}s; log milestones {one.milestones}")

        log("peers: echo server, bare oslo.messaging server, Celery worker (threads pool)")
        peers = sections.start_peers(res, rpc, rabbit, pg_url, data)
        bench.results["startup"].update(
            {name: round(s.first_answer_s, 2) for name, s in peers.servers.items()}
        )
        log("check: every peer's volume_get reply equals dbworker's")
        bench.results["check"] = sections.check_replies(data, rpc, one.topic, peers)
        log(f"  {bench.results['check']}")

        sent = measure.Counter()
        calls = workloads.dbworker_calls(client, data)
        calls[workloads.CREATE_WITHOUT_TERMS] = workloads.create_without_terms(rpc, one.topic, data)
        ops = measure.counted(calls, sent)
        _rows(bench, "small", data, ops["volume_get"])
        log(f"filling volumes to {cfg.rows_large} rows")
        data.fill(cfg.rows_large)
        _rows(bench, "large", data, ops["volume_get"])
        _memory(bench, one, ops["volume_get"], sent)

        log("database round trips per call (in-process)")
        bench.results["roundtrips"] = roundtrips.count(data)
        for op, counts in bench.results["roundtrips"].items():
            log(f"  {op:<26} {counts}")

        direct = workloads.direct_calls(data)
        local = workloads.dbworker_calls(LocalAPI.from_engine(data.engine), data)
        in_process = {op: local[op] for op in ("volume_get", "volume_create")}
        log("sequential latency")
        bench.latencies(
            {
                "echo": peers.calls["echo"],
                "celery": peers.calls["celery"],
                "oslo-peer": peers.calls["oslo-peer"],
                "dbworker-1": ops,
                "direct": direct,
                "in-process": in_process,
            }
        )
        log(
            f"throughput: {cfg.repeats} interleaved rounds, {cfg.threads} client threads, "
            f"{cfg.throughput_s}s per row"
        )
        rows = [
            Row(s, op, call, peers.servers[s].process.pid)
            for s in peers.servers
            for op, call in peers.calls[s].items()
        ]
        rows += [Row("dbworker-1", op, call, one.process.pid, workers=True) for op, call in ops.items()]
        rows += [Row("direct", op, call, None) for op, call in direct.items()]
        rows += [Row("in-process", op, call, None) for op, call in in_process.items()]
        bench.rounds(rows)
        bench.results["table_scans"] = sections.table_scans(data)
        log(f"  table scans since the database was created: {bench.results['table_scans']}")
        bench.results["listing_plan"] = sections.listing_plan(data)

        for op in PROFILED:
            log(f"profile: py-spy on the dbworker-1 worker under {op} load, {cfg.profile_s}s")
            profile = sections.profile(cfg, one, op, ops[op], workdir, log)
            bench.results.setdefault("profiles", {})[op] = profile
        with ThreadPoolExecutor() as stopping:  # Celery's warm shutdown alone takes seconds
            list(stopping.map(lambda server: server.process.stop(), peers.servers.values()))

        def mine(op: str) -> Row:
            return Row("dbworker-1", op, ops[op], one.process.pid, workers=True)

        bench.paired_rounds("terms", [mine("volume_create"), mine(workloads.CREATE_WITHOUT_TERMS)])
        log("metrics: the same daemon without them ([dbworker] metrics_port = 0)")
        bare, bare_client = servers.start_daemon(
            res, rpc, rabbit, pg_url, 1, "dbworker-1-bare", metrics=False
        )
        bench.paired_rounds(
            "metrics",
            [
                mine("volume_get"),
                Row(
                    workloads.NO_METRICS,
                    "volume_get",
                    workloads.dbworker_calls(bare_client, data)["volume_get"],
                    bare.process.pid,
                    workers=True,
                ),
            ],
        )
        bare.process.stop()
        if cfg.reference:
            log(f"reference: dbworker at {cfg.reference}, its own database of {cfg.rows_large} volumes")
            ref = reference.start(res, rpc, rabbit, cfg.reference, cfg.rows_large)
            bench.results["meta"]["reference"] = ref.commit

            def theirs(op: str) -> Row:
                return Row("reference", op, ref.calls[op], ref.server.process.pid, workers=True)

            def analyze_both() -> None:  # its creates grow its database as ours grow ours
                data.analyze()
                ref.data.analyze()

            bench.before_round = analyze_both

            bench.paired_rounds(
                "reference",
                [
                    mine("volume_get"),
                    theirs("volume_get"),
                    mine(workloads.CREATE_WITHOUT_TERMS),
                    theirs("volume_create"),
                ],
            )
            ref.server.process.stop()
            bench.before_round = data.analyze

        sections.replica(bench, res, rpc, rabbit, log)
        log("scale-out: dbworker with 2 worker processes against 1, volume_get, interleaved")
        two, client2 = servers.start_daemon(res, rpc, rabbit, pg_url, 2, "dbworker-2")
        bench.results["startup"]["dbworker-2"] = round(two.first_answer_s, 2)
        pair = [
            mine("volume_get"),
            Row(
                "dbworker-2",
                "volume_get",
                workloads.dbworker_calls(client2, data)["volume_get"],
                two.process.pid,
                workers=True,
            ),
        ]
        bench.rounds(pair, key="scaleout")
        two.process.stop()
        one.process.stop()

        if cfg.mariadb:
            sections.mariadb(bench, res, rpc, rabbit, log)
    bench.results["meta"]["facts"]["load average at end (1/5/15 min)"] = facts.load_text(os.getloadavg())
    return bench.results


def check_only(workdir: Path) -> dict[str, Any]:
    """``--check``: seed a database, start dbworker and the peers, compare their replies, stop."""
    rabbit = service_url("rabbitmq")
    with Resources(workdir) as res:
        data, rpc, pg_url = sections.setup(res, rabbit, 0)
        log("dbworker, 1 worker process, and the peers: start")
        one, _client = servers.start_daemon(res, rpc, rabbit, pg_url, 1, "dbworker-1")
        peers = sections.start_peers(res, rpc, rabbit, pg_url, data)
        return sections.check_replies(data, rpc, one.topic, peers)


def _rows(bench: Bench, key: str, data: workloads.Data, call: Call) -> None:
    """volume_get latency against the number of rows in ``volumes``."""
    log(f"volume_get with {data.rows} rows in volumes")
    result = bench.latency("dbworker-1", f"volume_get@{data.rows}rows", call)
    bench.results["rows"][key] = {"rows": data.rows, **result}
    del bench.results["latency"]["dbworker-1"][f"volume_get@{data.rows}rows"]


def _memory(bench: Bench, server: servers.Server, call: Call, sent: measure.Counter) -> None:
    """The worker process's RSS after the configured numbers of volume_get calls."""
    (pid,) = measure.worker_pids(server.process.pid)
    bench.results["rss"]["start"] = {"calls": sent.value, "rss_mb": measure.rss_mb(pid)}
    for key, total in (("low", bench.cfg.rss_low), ("high", bench.cfg.rss_high)):
        missing = max(0, total - sent.value)
        log(f"memory: {missing} volume_get calls to reach {total}")
        measure.calls_until(call, bench.cfg.threads, missing, timeout=900)
        bench.results["rss"][key] = {"calls": sent.value, "rss_mb": measure.rss_mb(pid)}
        log(f"  worker RSS after {sent.value} calls: {bench.results['rss'][key]['rss_mb']} MB")


def _interrupted(signo: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signo}")


def busy(args: Any, load1: float) -> str | None:
    """Why a full run must not start now (None: it may)."""
    if args.quick or args.check or load1 <= args.max_load:
        return None
    return (
        f"the 1-minute load average is {load1:.2f}, above {args.max_load} ({os.cpu_count()} cores): "
        "another job is using the machine and would skew every ratio. Wait for a quiet machine, "
        "or pass --force (the report then says it ran on a busy machine)"
    )


def main(argv: list[str] | None = None) -> int:
    args = config.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    if args.from_json:
        args.out.write_text(report.markdown(json.loads(args.from_json.read_text())))
        log(f"wrote {args.out} from {args.from_json}")
        return 0
    load = os.getloadavg()
    why = busy(args, load[0])
    if why and not args.force:
        print(f"bench.run: refusing a full run: {why}", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, _interrupted)  # unwind: stop the servers, drop the databases
    workdir = Path(tempfile.mkdtemp(prefix="dbworker-bench-"))
    if args.check:
        log(f"dbworker benchmark: reply check only; server logs in {workdir} (kept on failure)")
        log(f"check passed: {check_only(workdir)}")
        shutil.rmtree(workdir)
        return 0
    args.json = args.json or args.out.with_name("results.json")
    for path in (args.out, args.json):  # now, not after a 35-minute run
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = config.settings(args)
    log(
        f"dbworker benchmark ({'quick' if cfg.quick else 'full'}); server logs in {workdir} (kept on failure)"
    )
    if why:
        log(f"WARNING --force: {why}")
    if not cfg.quick and cfg.repeats < 3:
        log(f"WARNING: {cfg.repeats} repeat(s) per throughput row; the targets are judged on 3 or more")
    results = run(cfg, workdir, load)
    shutil.rmtree(workdir)
    if why:
        results["meta"]["forced"] = why
    if args.label:
        results["meta"]["label"], results["meta"]["loaded"] = args.label, True
    results["targets"] = targets.targets(results)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.out.write_text(report.markdown(results))
    for t in results["targets"]:
        log(f"{t['verdict']:>4}  {t['target']}: {t['measured']} {t['unit']} (ratio {t['ratio']})")
    log(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
