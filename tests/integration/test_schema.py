"""The schema Alembic builds is the schema the models declare, on every database, and
``dbworker-manage db sync`` / ``db version`` drive it from a config file."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from schema_checks import differences, mysql_table_options
from testenv import DATABASES

from dbworker import models, schema
from dbworker.session import make_engine
from dbworker.tools.purge import purge


@pytest.fixture(params=DATABASES)
def empty_engine(request: pytest.FixtureRequest, private_database_url):
    engine = make_engine(private_database_url(request.param))
    yield engine
    engine.dispose()


def test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema(empty_engine):
    assert schema.current(empty_engine) is None
    assert not schema.is_current(empty_engine)

    schema.upgrade(empty_engine)

    assert schema.current(empty_engine) == schema.head() == "0003"
    assert schema.is_current(empty_engine)
    assert differences(empty_engine) == []


def test_mysql_tables_are_innodb_utf8mb4_with_microsecond_datetimes(private_database_url):
    engine = make_engine(private_database_url("mysql"))
    schema.upgrade(engine)
    tables, precisions = mysql_table_options(engine)
    engine.dispose()
    assert set(tables) == set(models.Base.metadata.tables)
    assert set(tables.values()) == {("InnoDB", "utf8mb4")}
    assert precisions == {6}


def test_upgrading_twice_changes_nothing(empty_engine):
    schema.upgrade(empty_engine)
    schema.upgrade(empty_engine)
    assert schema.current(empty_engine) == schema.head()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("migrate_version", "is at version 1; dbworker adopts only Folsom's Cinder schema, version 2"),
        ("create_all", "no alembic_version table"),
    ],
)
def test_a_schema_alembic_did_not_create_is_refused_with_what_to_do(private_database_url, setup, expected):
    """A Folsom schema (migrate_version 2) is adopted (test_folsom_adoption.py); any other
    sqlalchemy-migrate version, or tables without a version, are refused."""
    engine = make_engine(private_database_url("sqlite"))
    models.Base.metadata.create_all(engine)
    if setup == "migrate_version":
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE migrate_version (version INTEGER)"))
            conn.execute(sa.text("INSERT INTO migrate_version VALUES (1)"))

    with pytest.raises(schema.SchemaError, match=expected) as raised:
        schema.upgrade(engine)

    assert "dbworker-manage db" in str(raised.value)
    assert schema.current(engine) is None
    assert ("migrate_version" in sa.inspect(engine).get_table_names()) == (setup == "migrate_version")


# --- dbworker-manage ----------------------------------------------------------------------------
def _manage(config_file, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dbworker.tools.manage", "--config-file", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config_file(tmp_path, url: str):
    path = tmp_path / "dbworker.conf"
    path.write_text(f"[database]\nconnection = {url}\n")
    return path


@pytest.mark.parametrize("kind", DATABASES)
def test_db_sync_creates_the_schema_and_db_version_prints_it(tmp_path, private_database_url, kind):
    url = private_database_url(kind)
    config_file = _config_file(tmp_path, url)

    before = _manage(config_file, "db", "version")
    sync = _manage(config_file, "db", "sync")
    again = _manage(config_file, "db", "sync")
    after = _manage(config_file, "db", "version")

    assert (before.returncode, before.stdout) == (0, "none\n")
    assert sync.returncode == 0, sync.stderr
    assert f"upgraded from none to {schema.head()}" in sync.stdout
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (after.returncode, after.stdout) == (0, f"{schema.head()}\n")
    engine = make_engine(url)
    assert differences(engine) == []
    engine.dispose()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("missing", "Failed to find some config files"),
        ("[database]\nconnection = postgresql+psycopg2://u@127.0.0.1:9/x\n", "database error"),
        ("[database]\nconnection = not a url\n", "Could not parse SQLAlchemy URL"),
    ],
    ids=["missing-config-file", "unreachable-database", "bad-url"],
)
def test_expected_failures_exit_1_with_one_line_on_stderr_and_no_traceback(tmp_path, config, message):
    config_file = tmp_path / "dbworker.conf"
    if config != "missing":
        config_file.write_text(config)

    result = _manage(config_file, "db", "sync")

    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dbworker-manage: error: ")


@pytest.mark.parametrize("kind", DATABASES)
def test_db_purge_hard_deletes_old_soft_deleted_rows_children_first(tmp_path, private_database_url, kind):
    url = private_database_url(kind)
    engine = make_engine(url)
    schema.upgrade(engine)
    now = models.utcnow()
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    with sa.orm.Session(engine) as session, session.begin():
        session.add_all(
            [
                models.Volume(id="v-old", deleted=True, deleted_at=old),
                models.Volume(id="v-held", deleted=True, deleted_at=old),
                models.Volume(id="v-recent", deleted=True, deleted_at=recent),
                models.Volume(id="v-live"),
            ]
        )
        session.flush()  # parents first: only relationships order a flush
        session.add_all(
            [
                # v-old's old deleted metadata goes with it
                models.VolumeMetadata(volume_id="v-old", key="k", deleted=True, deleted_at=old),
                # a live iSCSI target still references v-held: v-held stays
                models.IscsiTarget(target_num=1, host="h", volume_id="v-held"),
                models.Service(host="h", deleted=True, deleted_at=old),
            ]
        )

    result = _manage(_config_file(tmp_path, url), "db", "purge", "--age-in-days", "30")

    assert result.returncode == 0, result.stderr
    counts = dict(line.split(": ") for line in result.stdout.splitlines())
    assert set(counts) == set(models.Base.metadata.tables)
    assert {name: int(n) for name, n in counts.items() if n != "0"} == {
        "volumes": 1,
        "volume_metadata": 1,
        "services": 1,
    }
    order = list(counts)
    assert order.index("volume_metadata") < order.index("volumes")
    with engine.connect() as conn:
        remaining = set(conn.execute(sa.select(models.Volume.id)).scalars())
    assert remaining == {"v-held", "v-recent", "v-live"}
    assert purge(engine, timedelta(days=30)) == dict.fromkeys(counts, 0)
    engine.dispose()


def test_db_purge_refuses_a_database_without_the_schema(tmp_path, private_database_url):
    result = _manage(
        _config_file(tmp_path, private_database_url("sqlite")), "db", "purge", "--age-in-days", "1"
    )
    assert result.returncode == 1
    assert "run `dbworker-manage db sync`" in result.stderr


def test_db_stamp_records_the_revision_of_a_schema_brought_there_by_hand(tmp_path, private_database_url):
    url = private_database_url("sqlite")
    engine = make_engine(url)
    models.Base.metadata.create_all(engine)

    result = _manage(_config_file(tmp_path, url), "db", "stamp", schema.head())

    assert result.returncode == 0, result.stderr
    assert schema.current(engine) == schema.head()
    schema.upgrade(engine)  # nothing left to run, and no collision
    assert schema.is_current(engine)
    engine.dispose()
