"""Turn one run's results (a JSON-safe dict, with ``targets`` from :mod:`bench.targets`) into RESULTS.md.

``bench/analysis.md`` (hand-written: why a target is missed, what was fixed, what remains) is
copied into the report when it exists, so a re-run keeps the explanation next to new numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).with_name("analysis.md")
#: CPU groups shown per throughput row (bench.cpu), in this order.
CPU_GROUPS = ("server", "worker", "broker", "database", "replica", "client", "total")


def markdown(r: dict[str, Any]) -> str:
    """Return RESULTS.md for results ``r`` (which already hold ``r["targets"]``)."""
    meta, settings = r["meta"], r["settings"]
    lines = [f"# dbworker benchmark results ({'QUICK run' if settings['quick'] else 'full run'})", ""]
    if meta.get("forced"):
        lines += [
            f"> **RUN FORCED ON A BUSY MACHINE (--force): {meta['forced']}.** Ratios may be skewed.",
            "",
        ]
    if settings["quick"] or meta.get("loaded"):
        lines += [
            f"> **{meta.get('label', 'Quick run')}.** Fewer calls than the full run; ratios are "
            "indicative only. Run `python -m bench.run` on a quiet machine for the numbers that count.",
            "",
        ]
    lines += ["## Machine", "", _table(["fact", "value"], list(meta["facts"].items())), ""]
    lines += ["## Settings", "", _table(["setting", "value"], list(settings.items())), ""]
    lines += _check_section(r)
    lines += [
        "## Targets",
        "",
        "Throughput targets compare medians of the repeated rows; *spread* is the ratio's range over "
        "the repeats (min against max, max against min).",
        "",
        _table(
            ["target", "measured", "limit", "ratio", "spread", "verdict"],
            [
                [
                    t["target"],
                    _unit(t["measured"], t["unit"]),
                    _unit(t["limit"], t["unit"]),
                    t["ratio"],
                    t.get("spread", ""),
                    t["verdict"],
                ]
                for t in r["targets"]
            ],
        ),
        "",
        "## Sequential latency (one client thread, ms)",
        "",
        _table(
            ["system", "operation", "calls", "p50", "p99", "mean"],
            [
                [s, o, v["calls"], v["p50_ms"], v["p99_ms"], v["mean_ms"]]
                for s, ops in r["latency"].items()
                for o, v in ops.items()
            ],
        ),
    ]
    lines += _throughput_section(r, settings)
    lines += _other_sections(r)
    profiles = r.get("profiles") or {"volume_get": r.get("profile")}
    for op, profile in profiles.items():
        lines += _profile_section(op, profile)
    if ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().strip()]
    lines += ["", f"Raw numbers: `{Path(settings['json']).name}` beside this file.", ""]
    return "\n".join(lines)


def _check_section(r: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("check", "PostgreSQL"), ("check_mariadb", "MariaDB")):
        c = r.get(key)
        if c:
            lines += [
                f"## Reply check ({title}): the peers do dbworker's work",
                "",
                f"For volume `{c['volume_id']}` ({c['reply_bytes']} bytes of JSON), the `volume_get` reply "
                f"of {', '.join(c['same_volume_get'])} equals dbworker's, as JSON, key for key. Processes "
                f"with no dbworker module imported: {', '.join(c['no_dbworker_module']) or '-'}. "
                f"`volume_create` replies of the same shape: {', '.join(c['same_create_shape'])}.",
                "",
            ]
    return lines


def _throughput_section(r: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    echo = r["throughput"].get("echo", {}).get("echo", {}).get("calls_per_s")
    repeats = settings.get("repeats", 1)
    lines = [
        "",
        f"## Throughput ({settings['threads']} client threads, 1 server process; median of {repeats} "
        f"interleaved repeats of {settings['throughput_s']} s)",
        "",
        "CPU columns: milliseconds of CPU per call (utime + stime from /proc, median over the repeats) "
        "of the server's process tree, dbworker's worker process(es) alone, RabbitMQ (beam.smp), the "
        "database server (postmaster and all its children, or mariadbd), and the client process; "
        "*total* adds server, broker, database and client. Rows without a server ran in the client.",
        "",
        _throughput_table(r["throughput"], echo),
    ]
    vg = r["throughput"].get("dbworker-1", {}).get("volume_get", {}).get("calls_per_s")
    if vg:
        peers = [
            (name, r["throughput"].get(system, {}).get(op, {}).get("calls_per_s"))
            for name, system, op in (
                ("echo", "echo", "echo"),
                ("Celery, same read", "celery", "volume_get"),
                ("bare oslo.messaging server, same read", "oslo-peer", "volume_get"),
                ("Celery, one row", "celery", "volume_row"),
                ("bare oslo.messaging server, one row", "oslo-peer", "volume_row"),
                ("direct, same read (no broker)", "direct", "volume_get"),
            )
        ]
        lines += ["", "dbworker-1 `volume_get` (median) against:", ""]
        lines.append(
            _table(
                ["peer", "peer calls/s", "dbworker / peer"], [[n, v, _ratio(vg, v)] for n, v in peers if v]
            )
        )
    for name, table in r.get("pairs", {}).items():
        lines += [
            "",
            f"### Paired rounds: {name} (alternating order; each round's ratio is one measurement)",
            "",
        ]
        lines.append(_throughput_table(table, None))
        lines += ["", _pair_rounds(table)]
    scans = r.get("table_scans")
    if scans:
        lines += ["", "### Table scans on PostgreSQL after the throughput rounds (`pg_stat_user_tables`)", ""]
        columns = list(next(iter(scans.values())))
        lines.append(
            _table(["table", *columns], [[t, *(v.get(c, "") for c in columns)] for t, v in scans.items()])
        )
    plan = r.get("listing_plan")
    if plan:
        lines += ["", "The project listing's plan at that moment (`EXPLAIN (ANALYZE, BUFFERS)`):", "", "```"]
        lines += [*plan, "```"]
    scale = r.get("scaleout")
    if scale:
        lines += ["", "### Scale-out: `volume_get` on 2 worker processes against 1 (interleaved pair)", ""]
        lines.append(_throughput_table(scale, None))
    return lines


def _pair_rounds(table: dict[str, Any]) -> str:
    """Each round's calls/s of every row of a paired table, one column per round."""
    rows = [
        [system, op] + [run["calls_per_s"] for run in v["runs"]]
        for system, ops in table.items()
        for op, v in ops.items()
    ]
    rounds = max((len(row) - 2 for row in rows), default=0)
    return _table(["system", "operation"] + [f"round {n + 1}" for n in range(rounds)], rows)


def _throughput_table(table: dict[str, Any], echo: float | None) -> str:
    rows = []
    for system, ops in table.items():
        for op, v in ops.items():
            cpu = v.get("cpu_ms_per_call", {})
            spread = f"{v['min']}..{v['max']}" if "min" in v else ""
            rows.append(
                [system, op, v["calls_per_s"], spread, _ratio(v["calls_per_s"], echo) if echo else ""]
                + [cpu.get(g, "") for g in CPU_GROUPS]
                + [v["errors"]]
            )
    header = ["system", "operation", "calls/s", "min..max", "x echo"]
    return _table(header + [f"CPU {g}" for g in CPU_GROUPS] + ["errors"], rows)


def _other_sections(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Start-up: seconds from process start to the first answered call",
        "",
        _table(["server", "seconds"], list(r.get("startup", {}).items())),
    ]
    milestones = r.get("startup_milestones")
    if milestones:
        lines += ["", "dbworker-1, seconds from process start to:", ""]
        lines.append(_table(["milestone", "seconds"], list(milestones.items())))
    rss = r.get("rss", {})
    if rss:
        lines += ["", "## Worker memory (RSS of the one worker process, volume_get calls)", ""]
        lines.append(_table(["after calls", "RSS MB"], [[v["calls"], v["rss_mb"]] for v in rss.values()]))
    rows = r.get("rows", {})
    if rows:
        lines += ["", "## volume_get against the size of `volumes`", ""]
        lines.append(
            _table(
                ["rows", "calls", "p50 ms", "p99 ms"],
                [[v["rows"], v["calls"], v["p50_ms"], v["p99_ms"]] for v in rows.values()],
            )
        )
    trips = r.get("roundtrips", {})
    if trips:
        lines += ["", "## Database round trips per call (counted in-process; independent of load)", ""]
        lines.append(
            _table(
                ["operation", "statements", "pool pings", "commits"],
                [[op, v["statements"], v["pings"], v["commits"]] for op, v in trips.items()],
            )
        )
    return lines


def _profile_section(op: str, p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    if "error" in p:
        return ["", f"## Profile of `{op}`: not available ({p['error']})"]
    if "samples" not in p:  # results of the earlier yappi profile
        return []
    return [
        "",
        f"## Profile: the dbworker-1 worker process under `{op}` load (py-spy, {p['seconds']} s at "
        f"{p['rate']} Hz{', GIL-holding samples only' if p.get('gil') else ''})",
        "",
        f"{p['samples']} samples over {p['calls']} calls ({p['calls_per_s']} calls/s while recording): "
        f"{p['ms_per_call_sampled']} ms of sampled (running) time per call; the worker's CPU from /proc "
        f"over the same time: {p['cpu_ms_per_call_proc']} ms per call. Times below are ms per call; "
        "py-spy samples running threads only, so they are close to CPU time.",
        "",
        "### Steps of a call (inclusive)",
        "",
        _table(["step", "ms/call"], [[_indented(x["phase"]), x["ms_per_call"]] for x in p["phases"]]),
        "",
        "### Own time by package",
        "",
        _table(["package", "ms/call"], [[x["package"], x["ms_per_call"]] for x in p["packages"][:12]]),
        "",
        "### Frames with the most own time",
        "",
        _table(
            ["function", "own ms/call", "total ms/call"],
            [[f"`{x['function']}`", x["own_ms_per_call"], x["total_ms_per_call"]] for x in p["functions"]],
        ),
        "",
        "### Frames with the most total (inclusive) time",
        "",
        _table(
            ["function", "total ms/call"],
            [[f"`{x['function']}`", x["total_ms_per_call"]] for x in p["inclusive"]],
        ),
    ]


def _ratio(a: float | None, b: float | None) -> float | str:
    return round(a / b, 3) if a is not None and b else ""


def _unit(value: Any, unit: str) -> str:
    return "" if value is None else f"{value} {unit}".strip()


def _indented(phase: str) -> str:
    text = phase.lstrip()
    return "&nbsp;" * 2 * (len(phase) - len(text)) + text


def _table(header: list[str], rows: list[Any]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
