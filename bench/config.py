"""The command line and sizes of a run: full, ``--quick``, or ``--check`` only."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.services import ROOT

#: Full run: refuse to start when the 1-minute load average is above this (2 cores: 1.0).
MAX_LOAD = 1.0

#: Client threads calling at once in every throughput row (the servers' executor threads are
#: bench.servers.THREADS, dbworker's default).
CLIENT_THREADS = 16


@dataclass(frozen=True)
class Settings:
    quick: bool
    latency_calls: int
    warmup: int
    throughput_s: float
    repeats: int
    pair_repeats: int
    threads: int
    rows_small: int
    rows_large: int
    rss_low: int
    rss_high: int
    profile_s: float
    profile_rate: int
    profile_gil: bool
    mariadb: bool
    json: str
    reference: str | None


def settings(args: argparse.Namespace) -> Settings:
    """Return the sizes of a full or ``--quick`` run, with the command line's overrides."""
    full = (2_000, 100, 15.0, 3, 20_000, 100_000, 20.0)
    quick = (200, 20, 1.5, 2, 1_000, 3_000, 4.0)
    latency_calls, warmup, seconds, repeats, rss_low, rss_high, profile_s = quick if args.quick else full
    if args.rss_calls:
        rss_low, rss_high = (int(x) for x in args.rss_calls.split(","))
    return Settings(
        quick=args.quick,
        latency_calls=args.latency_calls or latency_calls,
        warmup=min(warmup, args.latency_calls or warmup),
        throughput_s=args.seconds or seconds,
        repeats=args.repeats or repeats,
        pair_repeats=args.pair_repeats or (2 if args.quick else 6),
        threads=CLIENT_THREADS,
        rows_small=1_000,
        rows_large=args.rows or 100_000,
        rss_low=rss_low,
        rss_high=rss_high,
        profile_s=args.profile_seconds or profile_s,
        profile_rate=args.profile_rate,
        profile_gil=args.profile_gil,
        mariadb=not args.no_mariadb,
        json=str(args.json),
        reference=args.reference,
    )


def parser(description: str) -> argparse.ArgumentParser:
    """The command line of ``python -m bench.run``."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=description)
    p.add_argument("--quick", action="store_true", help="fewer calls: about 3-4 minutes on 2 cores")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that every peer's volume_get reply equals dbworker's, then stop",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--json", type=Path, help="raw results (default: results.json beside --out)")
    p.add_argument("--label", help="a note printed at the top of the report, e.g. 'loaded machine'")
    p.add_argument("--no-mariadb", action="store_true", help="skip the MariaDB section")
    p.add_argument(
        "--reference",
        metavar="REV",
        help="also serve this commit's dbworker in the run and measure this code against it in paired rounds",
    )
    p.add_argument(
        "--max-load",
        type=float,
        default=MAX_LOAD,
        help=f"a full run refuses to start above this 1-minute load average (default {MAX_LOAD})",
    )
    p.add_argument(
        "--force", action="store_true", help="run a full benchmark on a busy machine (the report says so)"
    )
    sizes = p.add_argument_group("sizes (override the full or --quick defaults)")
    sizes.add_argument("--latency-calls", type=int, help="sequential calls per latency row")
    sizes.add_argument("--seconds", type=float, help="seconds per throughput row and repeat")
    sizes.add_argument("--repeats", type=int, help="rounds of the throughput rows (full: 3, quick: 2)")
    sizes.add_argument(
        "--pair-repeats", type=int, help="rounds of the paired rows, in alternating order (full: 6, quick: 2)"
    )
    sizes.add_argument("--rss-calls", help="LOW,HIGH: calls before the two RSS readings")
    sizes.add_argument("--rows", type=int, help="rows in volumes for the large-table reading")
    sizes.add_argument("--profile-seconds", type=float, help="seconds py-spy records the worker")
    sizes.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    sizes.add_argument(
        "--profile-gil",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy --gil: only samples of the thread holding the GIL (default: on)",
    )
    p.add_argument("--from-json", type=Path, help="only re-render --out from these raw results")
    return p
