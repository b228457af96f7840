"""Fixtures for tests that run the real daemon (see ``tests/daemons.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
from daemons import Daemon, plain_transport, sync_schema
from testenv import service_url


@pytest.fixture(scope="module")
def rabbit_url() -> str:
    return service_url("rabbitmq")


@pytest.fixture(scope="module")
def database_url(private_database_url) -> str:
    url = private_database_url("postgresql")
    sync_schema(url)
    return url


@pytest.fixture(scope="module")
def transport(rabbit_url: str) -> Iterator[oslo_messaging.Transport]:
    transport = plain_transport(rabbit_url)
    yield transport
    transport.cleanup()


@pytest.fixture
def daemon(tmp_path: Path, rabbit_url: str, database_url: str) -> Iterator[Callable[..., Daemon]]:
    """A factory: ``daemon(**options)`` starts a worker with ``group__option=value`` overrides."""
    started: list[Daemon] = []

    def start(env: dict[str, str] | None = None, **options: Any) -> Daemon:
        started.append(Daemon(tmp_path, rabbit_url, database_url, **options).start(env))
        return started[-1]

    yield start
    for each in started:
        each.kill()
