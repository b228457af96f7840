"""Timing primitives: sequential latency, throughput with N client threads, a worker's RSS."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil

#: A workload: ``call(thread_index, call_index)`` makes one call (or one unit, e.g. reserve+commit).
Call = Callable[[int, int], object]


def latency(call: Call, calls: int, warmup: int = 50) -> dict[str, float]:
    """Make ``calls`` sequential calls (after ``warmup``); return p50/p99/mean in milliseconds."""
    for i in range(warmup):
        call(0, i)
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        call(0, warmup + i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "calls": calls,
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def client_threads(threads: int) -> ThreadPoolExecutor:
    """The run's pool of ``threads`` client threads, the same threads for every row.

    Like a service's threads, they live as long as the process: Celery's client keeps a result
    consumer per thread, on a reply queue named after the thread's id, so a row run by fresh threads
    (which reuse the ids of dead ones) would share reply queues with the consumers of the dead
    threads and lose replies to them.
    """
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"client{threads}")
        return _POOLS[threads]


def throughput(
    call: Call,
    threads: int,
    seconds: float,
    max_calls: int | None = None,
    stop: threading.Event | None = None,
) -> dict[str, float]:
    """Run ``call`` from ``threads`` client threads for ``seconds`` (or until ``max_calls`` in all,
    or until ``stop`` is set); return calls per second and the number of calls that raised."""
    done = [0] * threads
    errors = [0] * threads
    stop = stop or threading.Event()
    budget = max_calls or 1 << 62
    start = time.perf_counter()
    deadline = start + seconds

    def loop(index: int) -> None:
        i = 0
        while not stop.is_set() and time.perf_counter() < deadline and sum(done) < budget:
            try:
                call(index, i)
                done[index] += 1
            except Exception:
                errors[index] += 1
                if errors[index] > 100:
                    stop.set()
                    raise
            i += 1

    pool = client_threads(threads)
    futures = [pool.submit(loop, index) for index in range(threads)]
    try:
        for future in futures:
            future.result()
    except BaseException:  # Ctrl-C, SIGTERM, a thread's error: end the other threads' loops now
        stop.set()
        raise
    elapsed = time.perf_counter() - start
    return {
        "threads": threads,
        "seconds": round(elapsed, 2),
        "calls": sum(done),
        "errors": sum(errors),
        "calls_per_s": round(sum(done) / elapsed, 1),
    }


def calls_until(call: Call, threads: int, total: int, timeout: float) -> int:
    """Make ``total`` calls from ``threads`` threads (bounded by ``timeout``); return how many ran."""
    return throughput(call, threads, timeout, max_calls=total)["calls"]


def counted(calls: dict[str, Call], counter: Counter) -> dict[str, Call]:
    """Wrap each call so that ``counter`` counts the calls answered (not those that raised)."""

    def wrap(call: Call) -> Call:
        def run(t: int, i: int) -> object:
            result = call(t, i)
            counter.add()
            return result

        return run

    return {op: wrap(call) for op, call in calls.items()}


class Counter:
    """A thread-safe count of calls sent."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


def worker_pids(master_pid: int) -> list[int]:
    """Return the pids of a daemon's worker processes (the master's children), or the master's."""
    children = psutil.Process(master_pid).children(recursive=True)
    return [child.pid for child in children] or [master_pid]


def rss_mb(pid: int) -> float:
    """Return the resident set size of process ``pid`` in MiB."""
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
