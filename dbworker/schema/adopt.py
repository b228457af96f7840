"""Adopt a Folsom-era Cinder database: bring its schema to revision 0001 and stamp it.

Folsom's Cinder (2012.2) built its schema with sqlalchemy-migrate, which records version 2 in
``migrate_version``. Its tables and columns are dbworker's (Folsom's, with the fixes
``dbworker.models`` lists); what revision 0001 has and Folsom lacks is added here, in this order:

* no foreign key from ``migrations`` to the absent ``instances`` table (Folsom's model declared one);
* 0001's indexes;
* on MySQL/MariaDB: InnoDB, the ``DYNAMIC`` row format, ``utf8mb4`` and ``DATETIME(6)``, one
  ``ALTER TABLE`` per table (the keys to ``volumes.id`` are dropped around the charset change, which
  MariaDB refuses on either end of a key, and added back);
* the ``volume_admin_metadata`` table, built by revision 0001's own code;
* 0001's unique keys: ``(target_num, host)`` on ``iscsi_targets``, and ``quota_usages.live`` (1 for
  a row that is not deleted, NULL for one that is) with ``(project_id, resource, live)``;
* then revision 0001 is stamped and ``migrate_version`` dropped.

Nullability, defaults and the other types already match 0001. ``snapshots.scheduled_at`` is kept:
0001 and the models have it too. On SQLite, Folsom's unnamed ``CHECK (deleted IN (0, 1))`` goes with
the two tables rebuilt for their unique keys and stays on the others (it holds for every row dbworker
writes).

Everything that can refuse is checked first, changing nothing: ``migrate_version`` must say 2, every
Folsom table and column must be there (and no other column), and the data must fit the new unique
keys. The caller runs this in its transaction, so on PostgreSQL and SQLite a failure half-way
changes nothing either. MySQL/MariaDB commit each DDL statement, so there each step is skipped when
already done, a key to be re-added is checked against the data first, and the stamp is committed
by the same statement that drops ``migrate_version``: ``db sync`` resumes an interrupted adoption.
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

#: The table sqlalchemy-migrate (Folsom's Cinder) keeps its version in.
LEGACY_VERSION_TABLE = "migrate_version"
#: The sqlalchemy-migrate version of Folsom's Cinder schema (migrations 001 and 002).
FOLSOM_VERSION = 2
#: The Alembic revision an adopted database is stamped with.
REVISION = "0001"


class AdoptionRefused(Exception):
    """The database cannot be adopted as it is; the message says why and what to do."""


def _columns(spec: str) -> dict[str, bool]:
    """``"a b! c"`` -> ``{"a": True, "b": False, "c": True}`` (name -> nullable), CinderBase's too."""
    names = [*spec.split(), "created_at", "updated_at", "deleted_at", "deleted"]
    return {name.rstrip("!"): not name.endswith("!") for name in names}


#: Folsom's tables and columns (migrations 001 and 002); ``!`` marks NOT NULL.
FOLSOM_TABLES = {
    "services": _columns("id! host binary topic report_count! disabled availability_zone"),
    "volumes": _columns(
        "id! ec2_id user_id project_id host size availability_zone instance_uuid mountpoint attach_time "
        "status attach_status scheduled_at launched_at terminated_at display_name display_description "
        "provider_location provider_auth snapshot_id volume_type_id"
    ),
    "volume_metadata": _columns("id! volume_id! key value"),
    "volume_types": _columns("id! name"),
    "volume_type_extra_specs": _columns("id! volume_type_id! key value"),
    "snapshots": _columns(
        "id! volume_id! user_id project_id status progress volume_size scheduled_at display_name "
        "display_description"
    ),
    "iscsi_targets": _columns("id! target_num host volume_id"),
    "migrations": _columns(
        "id! source_compute dest_compute dest_host status instance_uuid old_instance_type_id "
        "new_instance_type_id"
    ),
    "quotas": _columns("id! project_id resource! hard_limit"),
    "quota_classes": _columns("id! class_name resource hard_limit"),
    "quota_usages": _columns("id! project_id resource in_use! reserved! until_refresh"),
    "reservations": _columns("id! uuid! usage_id! project_id resource delta! expire"),
    "sm_flavors": _columns("id! label description"),
    "sm_backend_config": _columns("id! flavor_id! sr_uuid sr_type config_params"),
    "sm_volume": _columns("id! backend_id! vdi_uuid"),
}
#: What revision 0001 adds to those (an interrupted adoption on MySQL/MariaDB may have added it).
ADDED_TABLE = "volume_admin_metadata"
ADDED_COLUMNS = {"quota_usages": {"live"}}

#: Revision 0001's non-unique indexes: (table, name, columns).
INDEXES = (
    ("volumes", "volumes_host_idx", ["host"]),
    ("volumes", "volumes_project_id_idx", ["project_id"]),
    ("volume_metadata", "volume_metadata_volume_id_idx", ["volume_id"]),
    ("volume_type_extra_specs", "volume_type_extra_specs_volume_type_id_idx", ["volume_type_id"]),
    ("snapshots", "snapshots_project_id_idx", ["project_id"]),
    ("snapshots", "snapshots_volume_id_idx", ["volume_id"]),
    ("iscsi_targets", "iscsi_targets_host_idx", ["host"]),
    ("iscsi_targets", "iscsi_targets_volume_id_idx", ["volume_id"]),
    ("quotas", "quotas_project_id_idx", ["project_id"]),
    ("quota_classes", "ix_quota_classes_class_name", ["class_name"]),
    ("quota_usages", "ix_quota_usages_project_id", ["project_id"]),
    ("reservations", "ix_reservations_project_id", ["project_id"]),
    ("reservations", "reservations_uuid_idx", ["uuid"]),
)
#: Revision 0001's foreign keys between Folsom tables, as Folsom has them: (table, column, parent),
#: each to ``parent.id``.
FOREIGN_KEYS = (
    ("volume_metadata", "volume_id", "volumes"),
    ("volume_type_extra_specs", "volume_type_id", "volume_types"),
    ("iscsi_targets", "volume_id", "volumes"),
    ("reservations", "usage_id", "quota_usages"),
    ("sm_backend_config", "flavor_id", "sm_flavors"),
    ("sm_volume", "backend_id", "sm_backend_config"),
    ("sm_volume", "id", "volumes"),
)
ISCSI_UNIQUE = "uniq_iscsi_targets0target_num0host"
USAGE_UNIQUE = "uniq_quota_usages0live"

_iscsi = sa.table("iscsi_targets", *(sa.column(c) for c in ("id", "target_num", "host", "volume_id")))
_usages = sa.table(
    "quota_usages",
    *(sa.column(c) for c in ("id", "project_id", "resource", "in_use", "reserved")),
    sa.column("deleted", sa.Boolean()),
    sa.column("live", sa.Integer()),
)


def adopt(conn: sa.Connection, script: ScriptDirectory) -> None:
    """Bring the Folsom schema on ``conn`` to revision 0001 (of ``script``), stamp it, drop
    ``migrate_version``. Runs in the caller's transaction and does not commit.

    Raises:
        AdoptionRefused: before any change, when the version, the tables or the data do not fit.
    """
    check(conn)
    op = Operations(MigrationContext.configure(conn))
    _drop_foreign_keys_to_instances(conn, op)
    inspector = sa.inspect(conn)
    for table, name, columns in INDEXES:  # before MySQL drops keys: they replace its implicit key indexes
        if name not in {ix["name"] for ix in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)
    if conn.dialect.name in ("mysql", "mariadb"):
        _mysql_table_options(conn, op)
    if conn.dialect.name != "sqlite":
        for table, column, parent in _missing_foreign_keys(conn):
            op.create_foreign_key(None, table, parent, [column], ["id"])
    if ADDED_TABLE not in inspector.get_table_names():
        with Operations.context(op.migration_context):
            script.get_revision(REVISION).module._key_value_table(ADDED_TABLE, "volumes", sa.String(36))
    if not _has_unique(conn, "iscsi_targets", ISCSI_UNIQUE):
        _add_unique(op, "iscsi_targets", ISCSI_UNIQUE, ["target_num", "host"])
    if not _has_unique(conn, "quota_usages", USAGE_UNIQUE):
        if "live" not in {c["name"] for c in inspector.get_columns("quota_usages")}:
            op.add_column("quota_usages", sa.Column("live", sa.Integer(), nullable=True))
        conn.execute(
            _usages.update().values(live=sa.case((_usages.c.deleted == sa.false(), 1), else_=sa.null()))
        )
        _add_unique(op, "quota_usages", USAGE_UNIQUE, ["project_id", "resource", "live"])
    op.migration_context.stamp(script, REVISION)
    op.drop_table(LEGACY_VERSION_TABLE)


def check(conn: sa.Connection) -> None:
    """Refuse (:class:`AdoptionRefused`) unless the database is a Folsom schema whose data fits
    revision 0001; read only."""
    versions = conn.execute(sa.text(f"SELECT version FROM {LEGACY_VERSION_TABLE}")).scalars().all()
    if versions != [FOLSOM_VERSION]:
        raise AdoptionRefused(
            f"This database was created by sqlalchemy-migrate (table {LEGACY_VERSION_TABLE!r}) and "
            f"is at version {', '.join(map(str, versions)) or 'none'}; dbworker adopts only Folsom's "
            f"Cinder schema, version {FOLSOM_VERSION}. Bring an older Cinder database to version "
            f"{FOLSOM_VERSION} with Folsom's `cinder-manage db sync`, then run `dbworker-manage db "
            "sync` again; a later Cinder's schema is not dbworker's. Nothing was changed."
        )
    _check_tables(sa.inspect(conn))
    problems = [*_duplicate_iscsi_targets(conn), *_duplicate_live_usages(conn), *_orphans(conn)]
    if problems:
        raise AdoptionRefused(
            "This Folsom database cannot be adopted: its data breaks a key dbworker adds. "
            "Nothing was changed. Fix these rows, then run `dbworker-manage db sync` again:\n"
            + "\n".join(problems)
        )


def _check_tables(inspector: sa.Inspector) -> None:
    present = set(inspector.get_table_names())
    missing = sorted(set(FOLSOM_TABLES) - present)
    wrong = [f"table {name} is missing" for name in missing]
    for table in sorted(set(FOLSOM_TABLES) & present):
        expected = FOLSOM_TABLES[table]
        found = {c["name"]: c["nullable"] for c in inspector.get_columns(table)}
        extra = sorted(set(found) - set(expected) - ADDED_COLUMNS.get(table, set()))
        wrong += [f"{table}.{name} is missing" for name in sorted(set(expected) - set(found))]
        wrong += [f"{table}.{name} is not Folsom's" for name in extra]
        wrong += [
            f"{table}.{name} is {'' if found[name] else 'NOT '}NULL, Folsom's is {'' if null else 'NOT '}NULL"
            for name, null in expected.items()
            if name in found and found[name] != null
        ]
    if wrong:
        raise AdoptionRefused(
            f"This database says it is Folsom's Cinder schema (version {FOLSOM_VERSION} in "
            f"{LEGACY_VERSION_TABLE!r}), but its tables differ from Folsom's: {'; '.join(wrong)}. "
            "dbworker adopts only an unmodified Folsom schema. Nothing was changed."
        )


def _duplicate_iscsi_targets(conn: sa.Connection) -> list[str]:
    t = _iscsi.c
    pairs = (
        sa.select(t.target_num, t.host)
        .where(t.target_num.is_not(None), t.host.is_not(None))
        .group_by(t.target_num, t.host)
        .having(sa.func.count() > 1)
        .subquery()
    )
    rows = conn.execute(
        sa.select(t.target_num, t.host, t.id, t.volume_id)
        .join(pairs, sa.and_(t.target_num == pairs.c.target_num, t.host == pairs.c.host))
        .order_by(t.host, t.target_num, t.id)
    ).all()
    if not rows:
        return []
    lines = [
        "* iscsi_targets holds one (target_num, host) pair more than once (Folsom's "
        "iscsi_target_create_safe did not prevent it). Keep one row per pair, the one whose volume_id "
        "is set, and delete the others (DELETE FROM iscsi_targets WHERE id IN (...)); if two rows of "
        "a pair have a volume_id, those volumes share a target: detach and re-export one first."
    ]
    lines += [
        f"  iscsi_targets id={r.id}: target_num={r.target_num} host={r.host!r} volume_id={r.volume_id!r}"
        for r in rows
    ]
    return lines


def _duplicate_live_usages(conn: sa.Connection) -> list[str]:
    u = _usages.c
    live = sa.and_(u.deleted == sa.false(), u.project_id.is_not(None), u.resource.is_not(None))
    pairs = (
        (sa.select(u.project_id, u.resource).where(live).group_by(u.project_id, u.resource))
        .having(sa.func.count() > 1)
        .subquery()
    )
    rows = conn.execute(
        sa.select(u.project_id, u.resource, u.id, u.in_use, u.reserved)
        .join(pairs, sa.and_(u.project_id == pairs.c.project_id, u.resource == pairs.c.resource))
        .where(live)
        .order_by(u.project_id, u.resource, u.id)
    ).all()
    if not rows:
        return []
    lines = [
        "* quota_usages holds more than one live (not deleted) row for one (project_id, resource) "
        "(Folsom's quota_reserve could create two). Keep one row per pair with the right in_use and "
        "reserved, move the others' reservations to it (UPDATE reservations SET usage_id = <kept id> "
        "WHERE usage_id IN (...)) and mark the others deleted (UPDATE quota_usages SET deleted = "
        "true, deleted_at = <now> WHERE id IN (...))."
    ]
    lines += [
        f"  quota_usages id={r.id}: project_id={r.project_id!r} resource={r.resource!r} "
        f"in_use={r.in_use} reserved={r.reserved}"
        for r in rows
    ]
    return lines


def _mysql_table_options(conn: sa.Connection, op: Operations) -> None:
    """One ``ALTER TABLE`` per Folsom table: InnoDB, DYNAMIC rows (room for 4-byte keys), utf8mb4,
    DATETIME(6). MariaDB will not change the charset of either end of a foreign key, so the keys to
    ``volumes.id`` are dropped first (and added back by :func:`adopt`)."""
    options = conn.execute(
        sa.text(
            "SELECT table_name, engine, row_format, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        )
    ).all()
    inspector = sa.inspect(conn)
    alters = {}
    for name, engine, row_format, collation in options:
        if name not in FOLSOM_TABLES:
            continue
        changes = [] if engine == "InnoDB" else ["ENGINE=InnoDB"]
        if row_format in ("Compact", "Redundant"):
            changes.append("ROW_FORMAT=DYNAMIC")
        if not collation.startswith("utf8mb4_"):
            changes.append("CONVERT TO CHARACTER SET utf8mb4")
        changes += [
            f"MODIFY `{c['name']}` DATETIME(6) {'NULL' if c['nullable'] else 'NOT NULL'}"
            for c in inspector.get_columns(name)
            if isinstance(c["type"], sa.DateTime) and getattr(c["type"], "fsp", None) != 6
        ]
        if changes:
            alters[name] = changes
    if any("CONVERT TO CHARACTER SET utf8mb4" in changes for changes in alters.values()):
        for table, column, parent in FOREIGN_KEYS:
            for key in inspector.get_foreign_keys(table):
                if parent == "volumes" and key["constrained_columns"] == [column]:
                    op.drop_constraint(key["name"], table, type_="foreignkey")
    for name, changes in alters.items():
        conn.execute(sa.text(f"ALTER TABLE `{name}` {', '.join(changes)}"))


def _missing_foreign_keys(conn: sa.Connection) -> list[tuple[str, str, str]]:
    """Return revision 0001's foreign keys (between Folsom tables) the database lacks."""
    inspector = sa.inspect(conn)
    return [
        (table, column, parent)
        for table, column, parent in FOREIGN_KEYS
        if not any(
            key["constrained_columns"] == [column] and key["referred_table"] == parent
            for key in inspector.get_foreign_keys(table)
        )
    ]


def _orphans(conn: sa.Connection) -> list[str]:
    """Rows a foreign key that :func:`adopt` will add would reject (only after an interrupted
    adoption on MySQL/MariaDB, which drops and re-adds the keys to ``volumes``)."""
    lines = []
    for table, column, parent in _missing_foreign_keys(conn) if conn.dialect.name != "sqlite" else []:
        child, ref = sa.table(table, sa.column("id"), sa.column(column)), sa.table(parent, sa.column("id"))
        ids = conn.execute(
            sa.select(child.c.id)
            .outerjoin(ref, child.c[column] == ref.c.id)
            .where(child.c[column].is_not(None), ref.c.id.is_(None))
            .order_by(child.c.id)
        ).scalars()
        lines += [f"* {table} id={id_}: its {column} names no row of {parent}; delete it" for id_ in ids]
    return lines


def _drop_foreign_keys_to_instances(conn: sa.Connection, op: Operations) -> None:
    """Drop a foreign key from ``migrations`` to nova's ``instances`` (Folsom's model declared one)."""
    keys = [
        fk for fk in sa.inspect(conn).get_foreign_keys("migrations") if fk["referred_table"] == "instances"
    ]
    if not keys:
        return
    if conn.dialect.name != "sqlite":
        for key in keys:
            op.drop_constraint(key["name"], "migrations", type_="foreignkey")
        return
    # SQLite's keys are unnamed: rebuild the table from its columns alone (it has no other key).
    reflected = sa.Table("migrations", sa.MetaData(), autoload_with=conn, resolve_fks=False)
    bare = sa.Table(
        "migrations",
        sa.MetaData(),
        *(sa.Column(c.name, c.type, nullable=c.nullable, primary_key=c.primary_key) for c in reflected.c),
    )
    with op.batch_alter_table("migrations", copy_from=bare, recreate="always"):
        pass


def _has_unique(conn: sa.Connection, table: str, name: str) -> bool:
    inspector = sa.inspect(conn)
    names = {uc["name"] for uc in inspector.get_unique_constraints(table)}
    return name in names | {ix["name"] for ix in inspector.get_indexes(table) if ix["unique"]}


def _add_unique(op: Operations, table: str, name: str, columns: list[str]) -> None:
    """Add a unique key; SQLite rebuilds the table (and drops its unnamed CHECKs, as 0001 has none)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unnamed CHECK constraint", UserWarning)
        with op.batch_alter_table(table) as batch:
            batch.create_unique_constraint(name, columns)
