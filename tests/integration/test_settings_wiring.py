"""Folsom's ``[dbworker]`` settings reach the handlers through the real configuration path: a
``python -m dbworker`` daemon reads them from its ``--config-file`` (every one set to a value other
than its default) and a bare oslo.messaging client observes each one's effect (contract §3.2, §8;
reference §2.1, §3.1, §3.9). An option that is not passed through, and so falls back to its
default, fails the test of that option.

One daemon serves the module, on the local RabbitMQ and a private PostgreSQL database (as the other
daemon tests); each test works on hosts and projects of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from daemons import ADMIN, Daemon, PlainOsloAPI, rpc, wait_until_answering

from dbworker.models import QuotaUsage, utcnow
from dbworker.options import DBWORKER_OPTS

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgresql, pytest.mark.slow, pytest.mark.timeout(120)]

#: ``[dbworker]`` values of the daemon under test: none is its option's default.
WIRED = {
    "enable_new_services": False,
    "volume_topic": "wired-volume",
    "volume_name_template": "vol-%s-wired",
    "snapshot_name_template": "snap-%s-wired",
    "reservation_expire": 4321,
    "until_refresh": 2,
    "max_age": 600,
}
RESOURCES = ["volumes", "gigabytes"]
QUOTAS = {"volumes": 100, "gigabytes": 1000}
#: How far the worker's clock reading for ``expire`` may be from the test's (same host).
SLACK = timedelta(seconds=3)


@pytest.fixture(scope="module")
def api(tmp_path_factory, rabbit_url, database_url, transport) -> Iterator[PlainOsloAPI]:
    options = {f"dbworker__{name}": value for name, value in WIRED.items()}
    worker = Daemon(tmp_path_factory.mktemp("settings-wiring"), rabbit_url, database_url, **options)
    assert "enable_new_services = False\n" in worker.conf_path.read_text()
    worker.start()
    try:
        client = rpc(transport, worker.topic, timeout=30)
        wait_until_answering(worker, client)
        yield PlainOsloAPI(client)
    finally:
        worker.kill()


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def _user(project_id: str) -> dict[str, str]:
    return {"user_id": "wiring", "project_id": project_id}


def _set_usage(engine: sa.Engine, project_id: str, **values: object) -> None:
    """Change the project's ``volumes`` usage row behind the worker's back (drift, age)."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(QuotaUsage)
            .where(QuotaUsage.project_id == project_id, QuotaUsage.resource == "volumes")
            .values(**values)
        )


def test_every_wired_value_differs_from_its_options_default() -> None:
    defaults = {opt.name: opt.default for opt in DBWORKER_OPTS if opt.name in WIRED}
    assert defaults.keys() == WIRED.keys()
    assert all(defaults[name] != value for name, value in WIRED.items()), defaults


def test_enable_new_services_false_makes_created_services_disabled(api) -> None:
    created = api.service_create(ADMIN, {"host": "wiring-ens", "topic": "t", "disabled": False})
    assert created["disabled"] is True
    assert api.service_get(ADMIN, created["id"])["disabled"] is True


def test_service_get_all_volume_sorted_lists_the_services_of_volume_topic(api) -> None:
    wired = api.service_create(ADMIN, {"host": "wiring-vt-1", "topic": "wired-volume"})
    folsom = api.service_create(ADMIN, {"host": "wiring-vt-2", "topic": "cinder-volume"})
    for service in (wired, folsom):  # created disabled (enable_new_services = false)
        api.service_update(ADMIN, service["id"], {"disabled": False})
    api.volume_create(ADMIN, {"host": "wiring-vt-1", "size": 3})
    api.volume_create(ADMIN, {"host": "wiring-vt-2", "size": 5})
    listed = api.service_get_all_volume_sorted(ADMIN)
    assert [(service["host"], gigabytes) for service, gigabytes in listed] == [("wiring-vt-1", 3)]


def test_volume_and_snapshot_names_use_the_templates(api) -> None:
    volume = api.volume_create(ADMIN, {"project_id": "wiring-names", "size": 1})
    assert volume["name"] == f"vol-{volume['id']}-wired"
    assert api.volume_get(ADMIN, volume["id"])["name"] == f"vol-{volume['id']}-wired"
    snapshot = api.snapshot_create(ADMIN, {"volume_id": volume["id"], "project_id": "wiring-names"})
    read = api.snapshot_get(ADMIN, snapshot["id"])
    for record in (snapshot, read):
        assert record["name"] == f"snap-{snapshot['id']}-wired"
        assert record["volume_name"] == f"vol-{volume['id']}-wired"


def test_quota_reserve_without_expire_expires_after_reservation_expire_seconds(api) -> None:
    user = _user("wiring-expire")
    before = utcnow()
    (uuid,) = api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 1})
    after = utcnow()
    expire = api.reservation_get(user, uuid)["expire"]
    assert isinstance(expire, datetime)
    period = timedelta(seconds=WIRED["reservation_expire"])
    assert before + period - SLACK <= expire <= after + period + SLACK


def test_quota_reserve_with_null_until_refresh_counts_down_from_until_refresh(api, engine) -> None:
    user, project = _user("wiring-until-refresh"), "wiring-until-refresh"
    # A new usage row is refreshed and set to count down from until_refresh (Folsom: 0 -> NULL).
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 1}, until_refresh=None, max_age=0)
    usage = api.quota_usage_get(ADMIN, project, "volumes")
    assert (usage["in_use"], usage["reserved"], usage["until_refresh"]) == (0, 1, 2)
    # Its in_use drifts from the project's volumes (none): one reservation later it is kept ...
    _set_usage(engine, project, in_use=5)
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 0}, until_refresh=None, max_age=0)
    usage = api.quota_usage_get(ADMIN, project, "volumes")
    assert (usage["in_use"], usage["until_refresh"]) == (5, 1)
    # ... and the next one re-syncs it and starts the count again.
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 0}, until_refresh=None, max_age=0)
    usage = api.quota_usage_get(ADMIN, project, "volumes")
    assert (usage["in_use"], usage["until_refresh"]) == (0, 2)


def test_quota_reserve_with_null_max_age_resyncs_usages_older_than_max_age(api, engine) -> None:
    user, project = _user("wiring-max-age"), "wiring-max-age"
    # until_refresh=0 (no count down): the age test decides (Folsom's elif chain, reference §3.1).
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 1}, until_refresh=0, max_age=None)
    usage = api.quota_usage_get(ADMIN, project, "volumes")
    assert (usage["in_use"], usage["until_refresh"]) == (0, None)
    # A drifted usage younger than max_age (600 s) is kept ...
    _set_usage(engine, project, in_use=5, updated_at=utcnow() - timedelta(seconds=60))
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 0}, until_refresh=0, max_age=None)
    assert api.quota_usage_get(ADMIN, project, "volumes")["in_use"] == 5
    # ... and one older than max_age is re-synced from the project's volumes (none).
    _set_usage(engine, project, updated_at=utcnow() - timedelta(seconds=3600))
    api.quota_reserve(user, RESOURCES, QUOTAS, {"volumes": 0}, until_refresh=0, max_age=None)
    assert api.quota_usage_get(ADMIN, project, "volumes")["in_use"] == 0
