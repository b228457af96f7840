"""``python -m bench.run [--quick] [--out bench/RESULTS.md]``: run every benchmark, write the report.

It creates private databases on the local PostgreSQL and MariaDB, starts (and stops, by pid) the
dbworker daemon, a bare oslo.messaging echo server and a Celery worker on private topics/queues of
the local RabbitMQ, prints progress, and writes ``RESULTS.md`` plus the raw numbers as JSON.
``--quick`` makes fewer calls (under 3 minutes in all on 2 cores) for development; the targets are judged on a
full run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import facts, measure, profiling, report, roundtrips, servers, workloads
from bench.measure import Call
from bench.services import ROOT, Resources, service_url
from dbworker.api import LocalAPI

_T0 = time.monotonic()


@dataclass(frozen=True)
class Settings:
    quick: bool
    latency_calls: int
    warmup: int
    throughput_s: float
    threads: int
    rows_small: int
    rows_large: int
    rss_low: int
    rss_high: int
    profile_calls: int
    mariadb: bool
    json: str


def settings(args: argparse.Namespace) -> Settings:
    """Return the sizes of a full or ``--quick`` run, with the command line's overrides."""
    sizes = (200, 20, 2.0, 1_000, 4_000, 200) if args.quick else (2_000, 100, 15.0, 20_000, 100_000, 2_000)
    latency_calls, warmup, seconds, rss_low, rss_high, profile_calls = sizes
    if args.rss_calls:
        rss_low, rss_high = (int(x) for x in args.rss_calls.split(","))
    return Settings(
        quick=args.quick,
        latency_calls=args.latency_calls or latency_calls,
        warmup=min(warmup, args.latency_calls or warmup),
        throughput_s=args.seconds or seconds,
        threads=servers.THREADS,
        rows_small=1_000,
        rows_large=args.rows or 100_000,
        rss_low=rss_low,
        rss_high=rss_high,
        profile_calls=args.profile_calls or profile_calls,
        mariadb=not args.no_mariadb,
        json=str(args.json),
    )


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class Bench:
    """One run: its settings, the results so far, and the measuring helpers that record them."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.results: dict[str, Any] = {
            "settings": asdict(cfg),
            "latency": {},
            "throughput": {},
            "startup": {},
            "rss": {},
            "rows": {},
        }

    def latency(self, system: str, op: str, call: Call) -> dict[str, float]:
        result = measure.latency(call, self.cfg.latency_calls, self.cfg.warmup)
        self.results["latency"].setdefault(system, {})[op] = result
        log(f"  {system:<12} {op:<26} p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms")
        return result

    def throughput(self, system: str, op: str, call: Call) -> dict[str, float]:
        result = measure.throughput(call, self.cfg.threads, self.cfg.throughput_s)
        self.results["throughput"].setdefault(system, {})[op] = result
        log(f"  {system:<12} {op:<26} {result['calls_per_s']:8.1f} calls/s ({result['errors']} errors)")
        return result

    def both(self, system: str, calls: dict[str, Call]) -> None:
        for op, call in calls.items():
            self.latency(system, op, call)
        for op, call in calls.items():
            self.throughput(system, op, call)


def counted(calls: dict[str, Call], counter: measure.Counter) -> dict[str, Call]:
    """Wrap each call so that ``counter`` counts the calls sent."""

    def wrap(call: Call) -> Call:
        def run(t: int, i: int) -> object:
            counter.add()
            return call(t, i)

        return run

    return {op: wrap(call) for op, call in calls.items()}


def run(cfg: Settings, workdir: Path) -> dict[str, Any]:
    bench = Bench(cfg)
    rabbit = service_url("rabbitmq")
    with Resources(workdir) as res:
        log("creating a private PostgreSQL database and seeding it")
        pg_url = res.database("postgresql")
        data = workloads.Data(pg_url)
        res.callback(data.dispose)
        data.fill(cfg.rows_small)
        rpc = workloads.transport(rabbit)
        res.callback(rpc.cleanup)
        bench.results["meta"] = {
            "facts": facts.machine({"PostgreSQL": pg_url}, servers.celery_broker_url(rabbit))
        }

        log("dbworker, 1 worker process: start")
        one, client = servers.start_daemon(res, rpc, rabbit, pg_url, 1, "dbworker-1")
        bench.results["startup"]["dbworker-1"] = round(one.first_answer_s, 2)
        bench.results["startup_milestones"] = one.milestones
        log(f"  first answer after {one.first_answer_s:.2f}s; log milestones {one.milestones}")
        sent = measure.Counter()
        ops = counted(workloads.dbworker_calls(client, data), sent)
        _rows(bench, "small", data, ops["volume_get"])
        log(f"filling volumes to {cfg.rows_large} rows")
        data.fill(cfg.rows_large)
        _rows(bench, "large", data, ops["volume_get"])
        _memory(bench, one, ops["volume_get"], sent)

        log("database round trips per call (in-process)")
        bench.results["roundtrips"] = roundtrips.count(data)
        for op, counts in bench.results["roundtrips"].items():
            log(f"  {op:<26} {counts}")
        log("direct SQLAlchemy (no broker) and in-process dbworker (LocalAPI, no broker)")
        bench.both("direct", workloads.direct_calls(data))
        local = workloads.dbworker_calls(LocalAPI.from_engine(data.engine), data)
        bench.both("in-process", {op: local[op] for op in ("volume_get", "volume_create")})

        log("dbworker, 1 worker process: the four operations")
        bench.both("dbworker-1", ops)
        one.process.stop()

        log("raw oslo.messaging echo server")
        echo = servers.start_echo(res, rabbit, lambda topic: workloads.echo_call(rpc, topic, data, 0.5)(0, 0))
        bench.results["startup"]["echo"] = round(echo.first_answer_s, 2)
        bench.both("echo", {"echo": workloads.echo_call(rpc, echo.topic, data)})
        echo.process.stop()

        log("Celery (threads pool) doing the same volume_get")
        broker = servers.celery_broker_url(rabbit)
        queue = servers.unique("bench-celery")
        call, ping = workloads.celery_call(broker, queue, pg_url, data)
        celery = servers.start_celery(res, broker, queue, pg_url, ping)
        bench.results["startup"]["celery"] = round(celery.first_answer_s, 2)
        bench.both("celery", {"volume_get": call})
        celery.process.stop()

        log("dbworker, 2 worker processes: the four operations")
        two, client2 = servers.start_daemon(res, rpc, rabbit, pg_url, 2, "dbworker-2")
        bench.results["startup"]["dbworker-2"] = round(two.first_answer_s, 2)
        bench.both("dbworker-2", workloads.dbworker_calls(client2, data))
        two.process.stop()

        log(f"profile: one worker under yappi, {cfg.profile_calls} sequential volume_get calls")
        bench.results["profile"] = _profile(res, rpc, rabbit, pg_url, data, cfg.profile_calls, workdir)

        if cfg.mariadb:
            _mariadb(bench, res, rpc, rabbit)
    bench.results["meta"]["facts"]["load average at end (1/5/15 min)"] = " / ".join(
        f"{x:.2f}" for x in os.getloadavg()
    )
    return bench.results


def _rows(bench: Bench, key: str, data: workloads.Data, call: Call) -> None:
    log(f"volume_get with {data.rows} rows in volumes")
    result = bench.latency("dbworker-1", f"volume_get@{data.rows}rows", call)
    bench.results["rows"][key] = {"rows": data.rows, **result}
    del bench.results["latency"]["dbworker-1"][f"volume_get@{data.rows}rows"]


def _memory(bench: Bench, server: servers.Server, call: Call, sent: measure.Counter) -> None:
    (pid,) = measure.worker_pids(server.process.pid)
    bench.results["rss"]["start"] = {"calls": sent.value, "rss_mb": measure.rss_mb(pid)}
    for key, total in (("low", bench.cfg.rss_low), ("high", bench.cfg.rss_high)):
        missing = max(0, total - sent.value)
        log(f"memory: {missing} volume_get calls to reach {total}")
        measure.calls_until(call, bench.cfg.threads, missing, timeout=900)
        bench.results["rss"][key] = {"calls": sent.value, "rss_mb": measure.rss_mb(pid)}
        log(f"  worker RSS after {sent.value} calls: {bench.results['rss'][key]['rss_mb']} MB")


def _profile(
    res: Resources, rpc: Any, rabbit: str, url: str, data: workloads.Data, calls: int, workdir: Path
) -> dict[str, Any]:
    out = workdir / "profile.json"
    process, client = servers.start_profiled_worker(res, rpc, rabbit, url, "cpu", out)
    call = workloads.dbworker_calls(client, data)["volume_get"]
    for i in range(calls):
        call(0, i)
    process.stop(timeout=60)
    return profiling.summarize(profiling.load(out))


def _mariadb(bench: Bench, res: Resources, rpc: Any, rabbit: str) -> None:
    log("MariaDB: direct SQLAlchemy and dbworker (1 worker) volume_get")
    url = res.database("mysql")
    data = workloads.Data(url)
    res.callback(data.dispose)
    data.fill(bench.cfg.rows_small)
    bench.results["meta"]["facts"]["MariaDB"] = facts.machine({"MariaDB": url})["MariaDB"]
    direct = workloads.direct_calls(data)
    bench.both("mariadb-direct", {"volume_get": direct["volume_get"]})
    server, client = servers.start_daemon(res, rpc, rabbit, url, 1, "dbworker-mariadb")
    bench.results["startup"]["dbworker-1 (MariaDB)"] = round(server.first_answer_s, 2)
    ops = workloads.dbworker_calls(client, data)
    bench.both("mariadb-dbw-1", {op: ops[op] for op in ("volume_get", "volume_create")})
    server.process.stop()


def _interrupted(signo: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signo}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls: under 3 minutes in all on 2 cores")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="raw results (default: results.json beside --out)")
    parser.add_argument("--label", help="a note printed at the top of the report, e.g. 'loaded machine'")
    parser.add_argument("--no-mariadb", action="store_true", help="skip the MariaDB section")
    sizes = parser.add_argument_group("sizes (override the full or --quick defaults)")
    sizes.add_argument("--latency-calls", type=int, help="sequential calls per latency row")
    sizes.add_argument("--seconds", type=float, help="seconds per throughput row")
    sizes.add_argument("--rss-calls", help="LOW,HIGH: calls before the two RSS readings")
    sizes.add_argument("--rows", type=int, help="rows in volumes for the large-table reading")
    sizes.add_argument("--profile-calls", type=int, help="volume_get calls made to the profiled worker")
    parser.add_argument("--from-json", type=Path, help="only re-render --out from these raw results")
    args = parser.parse_args(argv)
    if args.from_json:
        args.out.write_text(report.markdown(json.loads(args.from_json.read_text())))
        log(f"wrote {args.out} from {args.from_json}")
        return 0
    signal.signal(signal.SIGTERM, _interrupted)  # unwind: stop the servers, drop the databases
    args.json = args.json or args.out.with_name("results.json")
    for path in (args.out, args.json):  # now, not after a 30-minute run
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = settings(args)
    workdir = Path(tempfile.mkdtemp(prefix="dbworker-bench-"))
    log(
        f"dbworker benchmark ({'quick' if cfg.quick else 'full'}); server logs in {workdir} (kept on failure)"
    )
    results = run(cfg, workdir)
    shutil.rmtree(workdir)
    if args.label:
        results["meta"]["label"], results["meta"]["loaded"] = args.label, True
    results["targets"] = report.targets(results)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.out.write_text(report.markdown(results))
    for t in results["targets"]:
        log(f"{t['verdict']:>4}  {t['target']}: {t['measured']} {t['unit']} (ratio {t['ratio']})")
    log(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
