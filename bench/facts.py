"""Machine facts for the report: cores, CPU, memory, load, software and server versions."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata

import psutil
import sqlalchemy as sa

PACKAGES = (
    "dbworker",
    "oslo.messaging",
    "oslo.db",
    "SQLAlchemy",
    "kombu",
    "amqp",
    "psycopg",
    "psycopg-binary",
    "psycopg2-binary",
    "PyMySQL",
    "celery",
    "py-spy",
)


def load_text(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def machine(
    database_urls: dict[str, str],
    transport: object | None = None,
    load: tuple[float, float, float] | None = None,
) -> dict[str, str]:
    """Return ordered facts: date, CPU, cores, memory, the load average when the run started
    (``load``, read before anything ran; else now), OS, Python, packages, servers."""
    facts = {
        "date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "cores (logical)": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "load average at start (1/5/15 min)": load_text(load or os.getloadavg()),
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
    }
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            facts[name] = metadata.version(name)
    for kind, url in database_urls.items():
        facts[kind] = _server_version(url)
    if transport is not None:
        facts["RabbitMQ"] = _rabbit_version(transport)
    return facts


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _server_version(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = str(conn.execute(sa.text("SELECT version()")).scalar()).split(" on ")[0]
            if engine.dialect.name == "postgresql":  # the bench ANALYZEs itself (workloads.Data.analyze)
                version += f", autovacuum {conn.execute(sa.text('SHOW autovacuum')).scalar()}"
            return version
    except Exception as err:  # a fact we could not read is reported, not fatal
        return f"unknown ({type(err).__name__})"
    finally:
        engine.dispose()


def _rabbit_version(broker_url: object) -> str:
    import kombu

    try:
        with kombu.Connection(str(broker_url), connect_timeout=5) as conn:
            conn.connect()
            version = conn.connection.server_properties.get("version", "?")
            return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as err:
        return f"unknown ({type(err).__name__})"
