"""Throughput rows repeated in rounds, interleaved with their peers, with CPU per call per process.

One round runs every row once, in order (echo, Celery, the bare oslo server, dbworker...); the run
makes ``repeats`` rounds, so a slow spell of the machine hits every system alike instead of one row.
With ``alternate``, every other round runs the rows in reverse order (A B, B A, A B...), so a row
never always follows the same one: the rounds of a pair of rows are then paired measurements, whose
ratios :func:`paired` gives.
Each row's result holds every repeat (calls/s, errors, CPU ms per call per process group, see
:mod:`bench.cpu`), and the summary over them: the median calls/s and its spread (min..max), and
the median of each group's CPU ms per call.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import cpu, measure
from bench.measure import Call


@dataclass
class Row:
    """One throughput row: ``call`` on ``system`` served by process ``server_pid`` (None: in this
    process) on the ``database`` kind; ``workers`` reads dbworker's worker processes apart;
    ``database_pids`` names the database servers read apart (see :func:`bench.cpu.groups`)."""

    system: str
    op: str
    call: Call
    server_pid: int | None
    database: str = "postgresql"
    workers: bool = False
    database_pids: dict[str, int] | None = None


def measure_row(row: Row, threads: int, seconds: float) -> dict[str, Any]:
    """Run ``row`` for ``seconds`` with ``threads`` client threads; return calls/s and CPU per call."""
    readers = cpu.groups(row.server_pid, row.database, row.workers, row.database_pids)
    before = cpu.snapshot(readers)
    result = measure.throughput(row.call, threads, seconds)
    after = cpu.snapshot(readers)
    return {**result, "cpu_ms_per_call": cpu.per_call(before, after, result["calls"])}


def run(
    rows: list[Row],
    repeats: int,
    threads: int,
    seconds: float,
    log: Callable[[str], None],
    *,
    alternate: bool = False,
    before_round: Callable[[], None] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Run ``repeats`` rounds of ``rows`` (every other one reversed if ``alternate``), calling
    ``before_round()`` before each (the database's ANALYZE); return ``{system: {op: summary}}``
    (see :func:`summary`)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(r.system, r.op): [] for r in rows}
    for n in range(repeats):
        log(f"  round {n + 1} of {repeats}")
        if before_round is not None:
            before_round()
        for row in reversed(rows) if alternate and n % 2 else rows:
            result = measure_row(row, threads, seconds)
            runs[row.system, row.op].append(result)
            c = result["cpu_ms_per_call"]
            cpus = " ".join(f"{k} {v:.2f}" for k, v in c.items())
            log(
                f"    {row.system:<14} {row.op:<26} {result['calls_per_s']:8.1f} calls/s "
                f"({result['errors']} errors); CPU ms/call: {cpus}"
            )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (system, op), results in runs.items():
        out.setdefault(system, {})[op] = summary(results, threads)
    return out


def summary(results: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The median calls/s, its min and max, the errors and calls in all, the median CPU ms per call
    of each process group, and every repeat as measured (``runs``)."""
    rates = [r["calls_per_s"] for r in results]
    measured = [r["cpu_ms_per_call"] for r in results if r["cpu_ms_per_call"]]  # none for 0 calls
    groups = dict.fromkeys(g for cpu in measured for g in cpu)
    return {
        "threads": threads,
        "repeats": len(results),
        "calls_per_s": round(statistics.median(rates), 1),
        "min": min(rates),
        "max": max(rates),
        "calls": sum(r["calls"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "cpu_ms_per_call": {
            g: round(statistics.median(cpu.get(g, 0.0) for cpu in measured), 3) for g in groups
        },
        "runs": results,
    }


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The ratios of row ``a``'s calls/s to row ``b``'s, round by round (two summaries of one
    :func:`run`): ``{"ratios", "median", "min", "max"}``; None if either row is missing or a
    round of ``b`` made no calls."""
    if not a or not b:
        return None
    pairs = list(zip(a["runs"], b["runs"], strict=True))
    if any(not rb["calls_per_s"] for _ra, rb in pairs):
        return None
    ratios = [round(ra["calls_per_s"] / rb["calls_per_s"], 3) for ra, rb in pairs]
    return {
        "ratios": ratios,
        "median": round(statistics.median(ratios), 3),
        "min": min(ratios),
        "max": max(ratios),
    }
