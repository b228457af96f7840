"""Turn one run's results (a JSON-safe dict) into the targets' verdicts and ``RESULTS.md``.

``bench/analysis.md`` (hand-written: why a target is missed, what was fixed, what remains) is
copied into the report when it exists, so a re-run keeps the explanation next to new numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).with_name("analysis.md")


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
    ) -> None:
        verdict = "n/a" if ok is None else ("pass" if ok else "MISS")
        out.append(
            {
                "target": name,
                "measured": value,
                "limit": limit,
                "ratio": ratio,
                "verdict": verdict,
                "unit": unit,
            }
        )

    def get(table: dict[str, Any], system: str, op: str, key: str) -> float | None:
        return table.get(system, {}).get(op, {}).get(key)

    vg, echo, direct = (
        get(lat, s, o, "p50_ms")
        for s, o in (("dbworker-1", "volume_get"), ("echo", "echo"), ("direct", "volume_get"))
    )
    if None not in (vg, echo, direct):
        bound = echo + direct + 0.25
        add(
            "volume_get p50 <= echo p50 + direct read p50 + 0.25 ms",
            vg,
            round(bound, 3),
            _ratio(vg, bound),
            vg <= bound,
            "ms",
        )
    vg_t, echo_t, celery_t, create_t, two_t = (
        get(thr, s, o, "calls_per_s")
        for s, o in (
            ("dbworker-1", "volume_get"),
            ("echo", "echo"),
            ("celery", "volume_get"),
            ("dbworker-1", "volume_create"),
            ("dbworker-2", "volume_get"),
        )
    )
    for name, value, base, factor in (
        ("volume_get throughput, 1 worker >= 0.85 x echo", vg_t, echo_t, 0.85),
        ("volume_get throughput, 1 worker >= 1.0 x Celery's same read", vg_t, celery_t, 1.0),
        ("volume_create throughput, 1 worker >= 0.75 x echo", create_t, echo_t, 0.75),
        ("volume_get throughput, 2 workers >= 1.25 x 1 worker", two_t, vg_t, 1.25),
    ):
        if value is not None and base:
            add(name, value, round(base * factor, 1), _ratio(value, base), value >= base * factor, "calls/s")
    rss = r.get("rss", {})
    low, high = rss.get("low"), rss.get("high")
    if high:
        add(
            f"worker RSS <= 120 MB after {high['calls']} calls",
            high["rss_mb"],
            120,
            _ratio(high["rss_mb"], 120),
            high["rss_mb"] <= 120,
            "MB",
        )
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
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def markdown(r: dict[str, Any]) -> str:
    """Return RESULTS.md for results ``r`` (which already hold ``r["targets"]``)."""
    meta, settings = r["meta"], r["settings"]
    lines = [f"# dbworker benchmark results ({'QUICK run' if settings['quick'] else 'full run'})", ""]
    if settings["quick"] or meta.get("loaded"):
        lines += [
            f"> **{meta.get('label', 'Quick run')}.** Fewer calls than the full run; ratios are "
            "indicative only. Run `python -m bench.run` on a quiet machine for the numbers that count.",
            "",
        ]
    lines += [
        "## Machine",
        "",
        _table(["fact", "value"], [[k, v] for k, v in meta["facts"].items()]),
        "",
        "## Settings",
        "",
        _table(["setting", "value"], [[k, v] for k, v in settings.items()]),
        "",
        "## Targets",
        "",
        _table(
            ["target", "measured", "limit", "ratio", "verdict"],
            [
                [
                    t["target"],
                    f"{t['measured']} {t['unit']}",
                    f"{t['limit']} {t['unit']}",
                    t["ratio"],
                    t["verdict"],
                ]
                for t in r["targets"]
            ],
        ),
        "",
        "## Sequential latency (one client thread, ms)",
        "",
    ]
    lines.append(
        _table(
            ["system", "operation", "calls", "p50", "p99", "mean"],
            [
                [s, o, v["calls"], v["p50_ms"], v["p99_ms"], v["mean_ms"]]
                for s, ops in r["latency"].items()
                for o, v in ops.items()
            ],
        )
    )
    echo_t = r["throughput"].get("echo", {}).get("echo", {}).get("calls_per_s")
    lines += [
        "",
        f"## Throughput ({settings['threads']} client threads)",
        "",
        _table(
            ["system", "operation", "calls/s", "x echo", "calls", "errors", "seconds"],
            [
                [
                    s,
                    o,
                    v["calls_per_s"],
                    _ratio(v["calls_per_s"], echo_t) if echo_t else "",
                    v["calls"],
                    v["errors"],
                    v["seconds"],
                ]
                for s, ops in r["throughput"].items()
                for o, v in ops.items()
            ],
        ),
    ]
    lines += [
        "",
        "## Start-up: seconds from process start to the first answered call",
        "",
        _table(["server", "seconds"], [[k, v] for k, v in r.get("startup", {}).items()]),
    ]
    milestones = r.get("startup_milestones")
    if milestones:
        lines += ["", "dbworker-1, seconds from process start to:", ""]
        lines.append(_table(["milestone", "seconds"], [[k, v] for k, v in milestones.items()]))
    rss = r.get("rss", {})
    if rss:
        lines += [
            "",
            "## Worker memory (RSS of the one worker process, volume_get calls)",
            "",
            _table(["after calls", "RSS MB"], [[v["calls"], v["rss_mb"]] for v in rss.values()]),
        ]
    rows = r.get("rows", {})
    if rows:
        lines += [
            "",
            "## volume_get against the size of `volumes`",
            "",
            _table(
                ["rows", "calls", "p50 ms", "p99 ms"],
                [[v["rows"], v["calls"], v["p50_ms"], v["p99_ms"]] for v in rows.values()],
            ),
        ]
    trips = r.get("roundtrips", {})
    if trips:
        lines += [
            "",
            "## Database round trips per call (counted in-process; independent of load)",
            "",
            _table(
                ["operation", "statements", "pool pings", "commits"],
                [[op, v["statements"], v["pings"], v["commits"]] for op, v in trips.items()],
            ),
        ]
    lines += _profile_section(r.get("profile"))
    if ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().strip()]
    lines += ["", f"Raw numbers: `{Path(settings['json']).name}` beside this file.", ""]
    return "\n".join(lines)


def _profile_section(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    return [
        "",
        f"## Profile: one worker process, {p['calls']} sequential volume_get calls (yappi, {p['clock']} "
        "clock, ms per call; yappi's own overhead inflates Python-heavy steps)",
        "",
        "### Steps of a call (inclusive)",
        "",
        _table(["step", "ms/call"], [[_indented(x["phase"]), x["ms_per_call"]] for x in p["phases"]]),
        "",
        "### Own time by package",
        "",
        _table(["package", "ms/call"], [[x["package"], x["ms_per_call"]] for x in p["packages"][:12]]),
        "",
        "### Functions with the most own time",
        "",
        _table(
            ["function", "own ms/call", "incl ms/call", "calls"],
            [
                [f"`{x['function']}`", x["own_ms_per_call"], x["incl_ms_per_call"], x["ncall"]]
                for x in p["functions"]
            ],
        ),
    ]


def _indented(phase: str) -> str:
    text = phase.lstrip()
    return "&nbsp;" * 2 * (len(phase) - len(text)) + text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
