"""``dbworker-manage metrics``: a running host's metrics read without Prometheus.

:func:`fetch` reads ``http://<metrics_host>:<metrics_port>/metrics`` (the daemon's, see
``dbworker.daemon.metrics``) and :func:`summary` turns it into a table per function (calls, their
outcomes, mean latency, and the 50th and 99th percentiles as the histogram bucket they fall in)
and a line per worker process.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def fetch(host: str, port: int, timeout: float = 10.0) -> str:
    """Return the metrics text the host's daemon serves.

    Raises:
        OSError: nothing answers there (``urllib.error.URLError`` is one), or not with 200.
    """
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def summary(text: str) -> str:
    """Return the metrics ``text`` as a table per function, a line per worker, and the totals.

    Raises:
        ValueError: ``text`` is not Prometheus' text format.
    """
    calls: dict[str, dict[str, float]] = defaultdict(dict)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    seconds: dict[str, float] = {}
    in_flight: dict[str, float] = {}
    workers: dict[str, dict[str, float]] = defaultdict(dict)
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels: dict[str, Any] = s.labels
            if s.name == "dbworker_calls_total":
                calls[labels["function"]][labels["outcome"]] = s.value
            elif s.name == "dbworker_call_duration_seconds_bucket":
                buckets[labels["function"]].append((float(labels["le"]), s.value))
            elif s.name == "dbworker_call_duration_seconds_sum":
                seconds[labels["function"]] = s.value
            elif s.name == "dbworker_calls_in_flight":
                in_flight[labels["function"]] = s.value
            elif "pid" in labels:
                key = s.name.removeprefix("dbworker_") + ("_" + labels["state"] if "state" in labels else "")
                workers[labels["pid"]][key] = s.value
            elif s.name.startswith("dbworker_") and s.name.endswith("_total"):
                totals[s.name.removeprefix("dbworker_").removesuffix("_total")] = s.value
    rows = [["function", "calls", "ok", "other outcomes", "mean ms", "p50 ms", "p99 ms", "in flight"]]
    for function in sorted(set(calls) | set(in_flight)):
        outcomes = calls.get(function, {})
        count = sum(outcomes.values())
        others = ", ".join(f"{name} {int(n)}" for name, n in sorted(outcomes.items()) if name != "ok" and n)
        mean = f"{seconds.get(function, 0.0) / count * 1000:.1f}" if count else "-"
        rows.append(
            [
                function,
                str(int(count)),
                str(int(outcomes.get("ok", 0))),
                others or "-",
                mean,
                _quantile(buckets.get(function, []), 0.5),
                _quantile(buckets.get(function, []), 0.99),
                str(int(in_flight.get(function, 0))),
            ]
        )
    lines = _table(rows)
    for pid, values in sorted(workers.items()):
        lines.append(
            f"worker {pid}: threads busy {int(values.get('executor_threads_busy', 0))} / "
            f"free {int(values.get('executor_threads_free', 0))}, "
            f"deliveries held {int(values.get('deliveries_held', 0))}, database connections checked out "
            f"{int(values.get('db_pool_connections_checked_out', 0))}, "
            f"overflow {int(values.get('db_pool_connections_overflow', 0))}"
        )
    if totals:
        lines.append(", ".join(f"{name.replace('_', ' ')} {int(n)}" for name, n in sorted(totals.items())))
    return "\n".join(lines)


def _quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """The upper bound (ms) of the first bucket holding the ``q`` quantile: ``<=5.0``; ``-``
    without calls; ``>10000.0`` past the last finite bucket."""
    ordered = sorted(buckets)
    if not ordered or not ordered[-1][1]:
        return "-"
    wanted = q * ordered[-1][1]
    for bound, cumulative in ordered:
        if cumulative >= wanted:
            if math.isinf(bound):
                return f">{ordered[-2][0] * 1000:g}" if len(ordered) > 1 else "-"
            return f"<={bound * 1000:g}"
    return "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
