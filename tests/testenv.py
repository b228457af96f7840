"""The test environment: which local services the tests use, and whether a missing one skips
(locally) or fails (``CI=true``). Imported by ``conftest.py`` and by test modules."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SERVICES = {
    "postgresql": ("DBWORKER_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("DBWORKER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "rabbitmq": ("DBWORKER_TEST_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/"),
}

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
#: The ``db`` fixture's databases: the three above, and PostgreSQL once more through psycopg2
#: (the contract's first driver; psycopg 3, the default, prepares statements on the server).
DB_FIXTURE_DATABASES = [
    *DATABASES,
    pytest.param("postgresql+psycopg2", id="postgresql-psycopg2", marks=pytest.mark.postgresql),
]


def database_url(kind: str) -> str:
    """Return the URL of the local database ``kind`` (``postgresql``, ``mysql``, or a dialect with
    another driver, ``postgresql+psycopg2``), or skip (fail with CI=true) if it is off or down."""
    dialect, _, driver = kind.partition("+")
    url = service_url(dialect)
    if not driver:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}").render_as_string(
        hide_password=False
    )


def service_url(kind: str) -> str:
    """Return the URL of a local service, or skip (fail with CI=true) if it is off or down."""
    variable, default = SERVICES[kind]
    url = os.environ.get(variable, default)
    if not url:
        _unavailable(f"{kind}: {variable} is empty")
    parts = urlsplit(url.replace("kombu+", ""))
    host, port = parts.hostname or "127.0.0.1", parts.port or {"rabbitmq": 5672}.get(kind)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        _unavailable(f"{kind} at {host}:{port} is unreachable: {err}")
    return url


def _unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
