"""The issue's targets, judged from one run's results (medians of the repeated throughput rows).

Each target has its measured value, its limit, the ratio the limit is about and a verdict; the
throughput targets also carry the ratio's spread over the repeats (the worst and best pairing of
min and max), so a verdict that a quieter repeat would flip shows as such.
"""

from __future__ import annotations

from typing import Any

from bench import rounds
from bench.workloads import CREATE_WITHOUT_TERMS, NO_METRICS, ON_PRIMARY, ON_REPLICA

#: "Not slower than the reference": a pair's median ratio at or above this. Paired rounds of one
#: code against itself differ by a few percent here (2 cores shared by client, broker, database and
#: server); a smaller floor could not be told from the machine.
REFERENCE_FLOOR = 0.95


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _get(table: dict[str, Any], system: str, op: str) -> dict[str, Any]:
    return table.get(system, {}).get(op, {})


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target of the issue with its measured value, limit, ratio and verdict."""
    lat, thr = r["latency"], r["throughput"]
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        value: float | None,
        limit: float | None,
        ratio: float | None,
        ok: bool | None,
        unit: str = "",
        spread: str = "",
    ) -> None:
        verdict = "info" if ok is None else ("pass" if ok else "MISS")
        out.append(
            {
                "target": name,
                "measured": value,
                "limit": limit,
                "ratio": ratio,
                "spread": spread,
                "verdict": verdict,
                "unit": unit,
            }
        )

    vg, echo, direct = (
        _get(lat, s, o).get("p50_ms")
        for s, o in (("dbworker-1", "volume_get"), ("echo", "echo"), ("direct", "volume_get"))
    )
    if None not in (vg, echo, direct):
        bound = round(echo + direct + 0.5, 3)
        add(
            "volume_get p50 <= echo p50 + direct read p50 + 0.5 ms",
            vg,
            bound,
            _ratio(vg, bound),
            vg <= bound,
            "ms",
        )

    def throughput(name: str, row: dict[str, Any], base: dict[str, Any], factor: float | None) -> None:
        value, ref = row.get("calls_per_s"), base.get("calls_per_s")
        if value is None or not ref:
            return
        low, high = _ratio(row.get("min"), base.get("max")), _ratio(row.get("max"), base.get("min"))
        spread = f"{low}..{high}" if low is not None and high is not None else ""
        limit = None if factor is None else round(ref * factor, 1)
        ok = None if factor is None else value >= ref * factor
        add(name, value, limit, _ratio(value, ref), ok, "calls/s", spread)

    vg_row, echo_row = _get(thr, "dbworker-1", "volume_get"), _get(thr, "echo", "echo")
    throughput(
        "volume_get throughput, 1 worker >= 1.0 x Celery's same read",
        vg_row,
        _get(thr, "celery", "volume_get"),
        1.0,
    )
    throughput("volume_get throughput, 1 worker >= 0.75 x echo", vg_row, echo_row, 0.75)
    throughput(
        "volume_create throughput, 1 worker >= 0.6 x echo",
        _get(thr, "dbworker-1", "volume_create"),
        echo_row,
        0.6,
    )
    pairs = r.get("pairs", {})

    def paired(name: str, table: str, a: tuple[str, str], b: tuple[str, str], factor: float | None) -> None:
        ratio = rounds.paired(_get(pairs.get(table, {}), *a), _get(pairs.get(table, {}), *b))
        if ratio is not None:
            spread = f"{ratio['min']}..{ratio['max']}"
            ok = None if factor is None else ratio["median"] >= factor
            add(name, ratio["median"], factor, ratio["median"], ok, "x", spread)

    terms = ("dbworker-1", "volume_create"), ("dbworker-1", CREATE_WITHOUT_TERMS)
    paired(
        "volume_create with an idempotency key and a deadline >= 0.9 x without them (paired rounds)",
        "terms",
        *terms,
        0.9,
    )
    paired(
        "volume_get with metrics >= 0.95 x without them (paired rounds)",
        "metrics",
        ("dbworker-1", "volume_get"),
        (NO_METRICS, "volume_get"),
        0.95,
    )
    paired(
        "volume_get from the read replica, against from its primary (paired rounds)",
        "replica",
        (ON_REPLICA, "volume_get"),
        (ON_PRIMARY, "volume_get"),
        None,
    )
    throughput(
        "volume_create with an idempotency key and a deadline, against without (mixed rounds)",
        _get(thr, *terms[0]),
        _get(thr, *terms[1]),
        None,
    )
    commit = r.get("meta", {}).get("reference", "")[:7]
    for op, this_op in (("volume_get", "volume_get"), ("volume_create", CREATE_WITHOUT_TERMS)):
        paired(
            f"{op}: this code >= {REFERENCE_FLOOR} x the reference ({commit}), paired rounds",
            "reference",
            ("dbworker-1", this_op),
            ("reference", op),
            REFERENCE_FLOOR,
        )
    throughput(
        "volume_get throughput, 1 worker, against the bare oslo.messaging server's same read",
        vg_row,
        _get(thr, "oslo-peer", "volume_get"),
        None,
    )
    worker_cpu = vg_row.get("cpu_ms_per_call", {}).get("worker")
    echo_cpu = echo_row.get("cpu_ms_per_call", {}).get("server")
    if worker_cpu is not None and echo_cpu is not None:
        bound = round(echo_cpu + 1.0, 3)
        add(
            "worker CPU per volume_get <= echo server's CPU per call + 1.0 ms",
            worker_cpu,
            bound,
            _ratio(worker_cpu, bound),
            worker_cpu <= bound,
            "ms",
        )
    scale = r.get("scaleout", {})
    throughput(
        "volume_get throughput, 2 workers >= 1.5 x 1 worker (interleaved pair)",
        _get(scale, "dbworker-2", "volume_get"),
        _get(scale, "dbworker-1", "volume_get"),
        1.5,
    )
    _resources(r, add)
    return out


def _resources(r: dict[str, Any], add: Any) -> None:
    """The memory, start-up and table-size targets."""
    rss = r.get("rss", {})
    low, high = rss.get("low"), rss.get("high")
    if high:
        mb = high["rss_mb"]
        add(f"worker RSS <= 120 MB after {high['calls']} calls", mb, 120, _ratio(mb, 120), mb <= 120, "MB")
    if low and high:
        growth = round(high["rss_mb"] - low["rss_mb"], 1)
        add(
            f"RSS growth <= 5 MB from {low['calls']} to {high['calls']} calls",
            growth,
            5,
            _ratio(growth, 5),
            growth <= 5,
            "MB",
        )
    first = r.get("startup", {}).get("dbworker-1")
    if first is not None:
        add("first answered call <= 3 s after start (1 worker)", first, 3, _ratio(first, 3), first <= 3, "s")
    rows = r.get("rows", {})
    if rows.get("small") and rows.get("large"):
        small, large = rows["small"]["p50_ms"], rows["large"]["p50_ms"]
        add(
            f"volume_get p50 at {rows['large']['rows']} rows within 10% of {rows['small']['rows']} rows",
            large,
            round(small * 1.1, 3),
            _ratio(large, small),
            large <= small * 1.1,
            "ms",
        )
