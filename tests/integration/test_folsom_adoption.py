"""``dbworker-manage db sync`` adopts a Folsom-era Cinder database (contract §7): the schema
Folsom's migrations 001 and 002 built (reference §4, "mig") becomes exactly the models' schema, its
rows are served, and a database it cannot adopt is refused unchanged."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime

import pytest
import sqlalchemy as sa
from schema_checks import differences, mysql_table_options
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String, Table, Text
from testenv import DATABASES

from dbworker import models, schema
from dbworker.api import LocalAPI
from dbworker.core.context import RequestContext, admin_context
from dbworker.session import make_engine

#: Folsom's tables as its migrations 001 and 002 created them (reference §4, "mig"): ``name:type``
#: (default ``str``: String(255)), ``!`` NOT NULL, ``*`` primary key, ``^`` indexed (002's
#: ``index=True``), ``>table.column`` a foreign key. Every table also has CinderBase's columns.
FOLSOM_TABLES = {
    "migrations": "id:int* source_compute dest_compute dest_host status instance_uuid "
    "old_instance_type_id:int new_instance_type_id:int",
    "services": "id:int* host binary topic report_count:int! disabled:bool availability_zone",
    "sm_flavors": "id:int* label description",
    "sm_backend_config": "id:int* flavor_id:int!>sm_flavors.id sr_uuid sr_type config_params:str2047",
    "volumes": "id:str36* ec2_id user_id project_id host size:int availability_zone instance_uuid:str36 "
    "mountpoint attach_time status attach_status scheduled_at:datetime launched_at:datetime "
    "terminated_at:datetime display_name display_description provider_location:str256 "
    "provider_auth:str256 snapshot_id:str36 volume_type_id:int",
    "sm_volume": "id:str36*>volumes.id backend_id:int!>sm_backend_config.id vdi_uuid",
    "snapshots": "id:str36* volume_id:str36! user_id project_id status progress volume_size:int "
    "scheduled_at:datetime display_name display_description",
    "volume_types": "id:int* name",
    "volume_metadata": "id:int* volume_id:str36!>volumes.id key value",
    "volume_type_extra_specs": "id:int* volume_type_id:int!>volume_types.id key value",
    "quotas": "id:int* project_id resource! hard_limit:int",
    "iscsi_targets": "id:int* target_num:int host volume_id:str36>volumes.id",
    "quota_classes": "id:int* class_name^ resource hard_limit:int",
    "quota_usages": "id:int* project_id^ resource in_use:int! reserved:int! until_refresh:int",
    "reservations": "id:int* uuid:str36! usage_id:int!>quota_usages.id project_id^ resource delta:int! "
    "expire:datetime",
}
CINDER_BASE = "created_at:datetime updated_at:datetime deleted_at:datetime deleted:bool"
TYPES = {
    "int": Integer,
    "str": lambda: String(255),
    "str36": lambda: String(36),
    "str256": lambda: String(256),
    "str2047": lambda: String(2047),
    "datetime": DateTime,
    "bool": lambda: Boolean(create_constraint=True),  # SQLAlchemy 0.7: a CHECK where no BOOLEAN type
}


def _column(spec: str) -> Column:
    spec, _, target = spec.partition(">")
    name, _, type_ = spec.rstrip("!*^").partition(":")
    return Column(
        name,
        TYPES[type_ or "str"](),
        *([ForeignKey(target)] if target else []),
        primary_key="*" in spec,
        nullable="!" not in spec and "*" not in spec,
        index="^" in spec or None,
    )


def _folsom_metadata() -> sa.MetaData:
    """The Folsom schema and sqlalchemy-migrate's ``migrate_version``; utf8 InnoDB tables on MySQL."""
    meta = sa.MetaData()
    options = {"mysql_engine": "InnoDB", "mysql_charset": "utf8"}
    for name, spec in FOLSOM_TABLES.items():
        Table(name, meta, *map(_column, f"{CINDER_BASE} {spec}".split()), **options)
    Table(
        "migrate_version",
        meta,
        Column("repository_id", String(250), primary_key=True),
        Column("repository_path", Text),
        Column("version", Integer),
        **options,
    )
    return meta


T0 = datetime(2013, 1, 2, 3, 4, 5)  # Folsom's MySQL DATETIME held whole seconds
FOLSOM = _folsom_metadata()
ROWS = {
    "migrate_version": [{"repository_id": "cinder", "repository_path": "/cinder/migrate_repo", "version": 2}],
    "services": [
        {
            "id": 1,
            "host": "h1",
            "binary": "cinder-volume",
            "topic": "volume",
            "report_count": 7,
            "disabled": False,
            "availability_zone": "nova",
            "created_at": T0,
            "deleted": False,
        },
        {
            "id": 2,
            "host": "h2",
            "binary": "cinder-scheduler",
            "topic": "scheduler",
            "report_count": 3,
            "disabled": True,
            "availability_zone": "nova",
            "created_at": T0,
            "deleted": False,
        },
    ],
    "volumes": [
        {
            "id": "vol-1",
            "project_id": "p1",
            "user_id": "u1",
            "host": "h1",
            "size": 5,
            "status": "available",
            "display_name": "one",
            "provider_location": "10.0.0.1:3260,1 iqn.2010-10.org.openstack:vol-1 1",
            "created_at": T0,
            "deleted": False,
        },
        {"id": "vol-2", "project_id": "p1", "host": "h1", "size": 1, "status": "available", "deleted": False},
        {
            "id": "vol-3",
            "project_id": "p1",
            "host": "h1",
            "size": 1,
            "status": "deleted",
            "deleted": True,
            "deleted_at": T0,
        },
    ],
    "volume_metadata": [
        {"volume_id": "vol-1", "key": "a", "value": "1", "deleted": False},
        {"volume_id": "vol-1", "key": "b", "value": "2", "deleted": False},
        {"volume_id": "vol-1", "key": "gone", "value": "x", "deleted": True, "deleted_at": T0},
    ],
    "snapshots": [
        {
            "id": "snap-1",
            "volume_id": "vol-1",
            "project_id": "p1",
            "status": "available",
            "volume_size": 5,
            "scheduled_at": T0,
            "deleted": False,
        },
    ],
    "quotas": [{"project_id": "p1", "resource": "volumes", "hard_limit": 10, "deleted": False}],
    "quota_usages": [
        {"id": 1, "project_id": "p1", "resource": "volumes", "in_use": 2, "reserved": 0, "deleted": False},
        {"id": 2, "project_id": "p1", "resource": "gigabytes", "in_use": 6, "reserved": 1, "deleted": False},
        # an older, deleted row of the same pair: not live, so no conflict
        {"id": 3, "project_id": "p1", "resource": "volumes", "in_use": 9, "reserved": 0, "deleted": True},
    ],
    "reservations": [
        {
            "uuid": "r-1",
            "usage_id": 2,
            "project_id": "p1",
            "resource": "gigabytes",
            "delta": 1,
            "expire": datetime(2030, 1, 1),
            "deleted": False,
        },
    ],
    "iscsi_targets": [
        {"id": 1, "target_num": 1, "host": "h1", "volume_id": "vol-1", "deleted": False},
        {"id": 2, "target_num": 2, "host": "h1", "volume_id": None, "deleted": False},
        {"id": 3, "target_num": 1, "host": "h2", "volume_id": None, "deleted": False},
    ],
}


def _folsom_database(url: str, rows: dict[str, list[dict]] = ROWS, meta: sa.MetaData = FOLSOM) -> sa.Engine:
    engine = make_engine(url)
    with engine.begin() as conn:
        meta.create_all(conn)
        for table in meta.sorted_tables:
            for row in rows.get(table.name, []):
                conn.execute(table.insert(), row)
    return engine


def _snapshot(engine: sa.Engine) -> dict[str, object]:
    """Every table's columns, indexes and rows: to show that a refusal changed nothing."""
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        return {
            name: (
                [c["name"] for c in inspector.get_columns(name)],
                sorted(ix["name"] for ix in inspector.get_indexes(name)),
                sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {name}")).all()), key=repr),
            )
            for name in sorted(inspector.get_table_names())
        }


@pytest.mark.parametrize("kind", DATABASES)
def test_db_sync_adopts_a_folsom_database_with_exactly_the_models_schema_and_serves_its_rows(
    private_database_url, kind
):
    engine = _folsom_database(private_database_url(kind))

    schema.upgrade(engine)

    assert schema.current(engine) == schema.head()
    assert differences(engine) == []  # migrate_version gone, every index and unique key added
    if kind == "mysql":
        tables, precisions = mysql_table_options(engine)
        assert set(tables) == set(models.Base.metadata.tables)
        assert set(tables.values()) == {("InnoDB", "utf8mb4")}
        assert precisions == {6}
    with engine.connect() as conn:
        live = conn.execute(sa.text("SELECT id, live FROM quota_usages ORDER BY id")).all()
    assert [tuple(row) for row in live] == [(1, 1), (2, 1), (3, None)]

    api, admin = LocalAPI.from_engine(engine), admin_context()
    volume = api.volume_get(admin, "vol-1")
    assert (volume["project_id"], volume["size"], volume["created_at"]) == ("p1", 5, T0)
    assert {m["key"]: m["value"] for m in volume["volume_metadata"]} == {"a": "1", "b": "2"}
    assert api.volume_metadata_get(admin, "vol-1") == {"a": "1", "b": "2"}
    assert api.snapshot_get(admin, "snap-1")["volume_id"] == "vol-1"
    assert api.quota_get_all_by_project(admin, "p1") == {"project_id": "p1", "volumes": 10}
    assert api.quota_usage_get_all_by_project(admin, "p1") == {
        "project_id": "p1",
        "volumes": {"in_use": 2, "reserved": 0},
        "gigabytes": {"in_use": 6, "reserved": 1},
    }
    assert sorted((s["host"], s["disabled"]) for s in api.service_get_all(admin)) == [
        ("h1", False),
        ("h2", True),
    ]
    # the free target on h1 (2) goes to vol-2; the unique (target_num, host) now guards it
    assert api.volume_allocate_iscsi_target(admin, "vol-2", "h1") == 2
    assert api.iscsi_target_create_safe(admin, {"target_num": 1, "host": "h2"}) is None
    # the adopted live usage row is the one a reservation updates (no second row created)
    user = RequestContext(user_id="u1", project_id="p1", roles=("member",))
    uuids = api.quota_reserve(user, ["volumes"], {"volumes": 10}, {"volumes": 1})
    api.reservation_commit(user, uuids)
    assert api.quota_usage_get_all_by_project(user, "p1")["volumes"] == {"in_use": 3, "reserved": 0}
    api.volume_admin_metadata_update(admin, "vol-1", {"readonly": "True"}, False)
    assert api.volume_admin_metadata_get(admin, "vol-1") == {"readonly": "True"}
    assert api.reservation_get(admin, "r-1")["delta"] == 1
    engine.dispose()


def test_a_foreign_key_to_the_absent_instances_table_is_dropped(private_database_url):
    """Folsom's model declared it (its migration did not); only SQLite accepts a key to a missing table."""
    url = private_database_url("sqlite")
    engine = _folsom_database(url)
    ddl = str(sa.schema.CreateTable(FOLSOM.tables["migrations"]).compile(engine))
    ddl = ddl.replace(
        "instance_uuid VARCHAR(255),", "instance_uuid VARCHAR(255) REFERENCES instances (uuid),"
    )
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as folsom, folsom:  # foreign keys off
        folsom.execute("DROP TABLE migrations")
        folsom.execute(ddl)
        folsom.execute("INSERT INTO migrations (id, instance_uuid, status) VALUES (1, 'i-1', 'done')")
    assert [fk["referred_table"] for fk in sa.inspect(engine).get_foreign_keys("migrations")] == ["instances"]

    schema.upgrade(engine)

    assert sa.inspect(engine).get_foreign_keys("migrations") == []
    assert differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, instance_uuid, status FROM migrations")).all() == [
            (1, "i-1", "done")
        ]
    engine.dispose()


def _with(table: str, *extra: dict) -> dict[str, list[dict]]:
    return {**ROWS, table: [*ROWS[table], *extra]}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            {**ROWS, "migrate_version": [{**ROWS["migrate_version"][0], "version": 7}]},
            ["is at version 7", "only Folsom's Cinder schema, version 2"],
            id="other-version",
        ),
        pytest.param(
            _with("iscsi_targets", {"id": 9, "target_num": 2, "host": "h1", "volume_id": "vol-2"}),
            [
                "iscsi_targets id=2: target_num=2 host='h1' volume_id=None",
                "iscsi_targets id=9: target_num=2 host='h1' volume_id='vol-2'",
                "DELETE FROM iscsi_targets",
            ],
            id="duplicate-iscsi-target",
        ),
        pytest.param(
            _with(
                "quota_usages",
                {
                    "id": 4,
                    "project_id": "p1",
                    "resource": "gigabytes",
                    "in_use": 1,
                    "reserved": 0,
                    "deleted": False,
                },
            ),
            [
                "quota_usages id=2: project_id='p1' resource='gigabytes' in_use=6 reserved=1",
                "quota_usages id=4: project_id='p1' resource='gigabytes' in_use=1 reserved=0",
                "UPDATE reservations SET usage_id",
            ],
            id="two-live-usages",
        ),
    ],
)
@pytest.mark.parametrize("kind", DATABASES)
def test_a_folsom_database_it_cannot_adopt_is_refused_unchanged_with_what_to_do(
    private_database_url, kind, rows, expected
):
    engine = _folsom_database(private_database_url(kind), rows=rows)
    before = _snapshot(engine)

    with pytest.raises(schema.SchemaError) as raised:
        schema.upgrade(engine)

    for text in [*expected, "Nothing was changed", "dbworker-manage db sync"]:
        assert text in str(raised.value)
    assert _snapshot(engine) == before  # still migrate_version, no alembic_version, no new index
    assert schema.current(engine) is None
    engine.dispose()


def test_a_changed_folsom_schema_is_refused_naming_what_differs(private_database_url):
    meta = _folsom_metadata()
    meta.tables["volumes"].append_column(Column("owner_note", String(40), nullable=False, server_default=""))
    meta.remove(meta.tables["sm_volume"])
    engine = _folsom_database(private_database_url("sqlite"), meta=meta)
    before = _snapshot(engine)

    with pytest.raises(
        schema.SchemaError, match=r"table sm_volume is missing; volumes\.owner_note is not Folsom's"
    ):
        schema.upgrade(engine)

    assert _snapshot(engine) == before
    engine.dispose()


@pytest.mark.mysql
def test_an_adoption_interrupted_on_mariadb_resumes(private_database_url):
    """MariaDB commits each DDL statement, so a crash can stop an adoption half-way: ``db sync``
    then refuses what would break a key it re-adds, and otherwise finishes the job. A table with
    MySQL 5.5's COMPACT rows (767-byte keys) gets DYNAMIC ones, for the 4-byte characters."""
    engine = _folsom_database(private_database_url("mysql"))
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE quota_usages ROW_FORMAT=COMPACT")
        # what the adoption does first: indexes, and no keys to volumes.id (charset change)
        conn.exec_driver_sql("CREATE INDEX volumes_host_idx ON volumes (host)")
        for table in ("volume_metadata", "iscsi_targets", "sm_volume"):
            for key in inspector.get_foreign_keys(table):
                if key["referred_table"] == "volumes":
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP FOREIGN KEY {key['name']}")
        conn.exec_driver_sql("ALTER TABLE volumes CONVERT TO CHARACTER SET utf8mb4")
        conn.exec_driver_sql("ALTER TABLE quota_usages ADD COLUMN live INTEGER NULL")
        conn.exec_driver_sql("INSERT INTO volume_metadata (id, volume_id, `key`) VALUES (99, 'vol-x', 'k')")

    with pytest.raises(
        schema.SchemaError, match="volume_metadata id=99: its volume_id names no row of volumes"
    ):
        schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM volume_metadata WHERE id = 99")
    schema.upgrade(engine)

    assert schema.current(engine) == schema.head()
    assert differences(engine) == []
    tables, precisions = mysql_table_options(engine)
    assert (set(tables.values()), precisions) == ({("InnoDB", "utf8mb4")}, {6})
    with engine.connect() as conn:
        row_format = conn.execute(
            sa.text(
                "SELECT row_format FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'quota_usages'"
            )
        ).scalar()
    assert row_format == "Dynamic"
    assert LocalAPI.from_engine(engine).volume_metadata_get(admin_context(), "vol-1") == {"a": "1", "b": "2"}
    engine.dispose()
