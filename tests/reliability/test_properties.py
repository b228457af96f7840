"""Hostile arguments, on every database (contract §3, §3.2, §5, §6).

Property: for every registered function, JSON arguments of any shape (the function's valid sample
with one argument made hostile, or all of them hostile: wrong types, unicode, NUL bytes, lone
surrogates, strings longer than their column, huge and negative numbers, unknown keys) give either
a reply of JSON data or a typed ``dbworker.exception`` error: never a raw database, SQLAlchemy or
Python error, and never ``DBError``/``DBBusy``/``DBUnavailable`` (an untranslated database
failure). A call that fails commits no INSERT, UPDATE or DELETE (watched on the engine) and leaves
every table's row and soft-deleted counts, read back from the database, as they were; the one
exception is ``OverQuota``, whose usage refreshes the contract commits first. Hypothesis runs
derandomized, so CI sees the same examples on every run.

The explicit cases pin ``InvalidInput`` for the classic hostile values, with every table's content
unchanged, and check that valid non-ASCII text is stored and read back unchanged.
"""

from __future__ import annotations

import os
import types
import typing
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import FLAVOR, INSTANCE, SAMPLES, SERVICE, VOLUME_TYPE, context, seed, table_contents
from sqlalchemy import event
from sqlalchemy.engine import Engine

from dbworker import exception, models
from dbworker.api import LocalAPI
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Arg, Handler
from dbworker.handlers import build_registry
from dbworker.protocol.wire import encode
from dbworker.session import make_sessionmaker

REGISTRY = build_registry()
#: Examples per function and database; raise it for a deeper local run (CI keeps the default).
MAX_EXAMPLES = int(os.environ.get("DBWORKER_PROPERTY_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def seeded(database):
    """The session's database of each kind, seeded once for this module and emptied after it: the
    explicit cases run first on the pristine seed, the property runs after them."""
    seed(database.engine)
    yield database
    database.wipe()


def local_api(engine: Engine) -> LocalAPI:
    """The in-process API over ``engine`` (the registry is built once per module)."""
    return LocalAPI(Dispatcher(REGISTRY, make_sessionmaker(engine)))


# --- strategies ---------------------------------------------------------------------------------
#: Names and ids the seed holds, so generated calls also reach existing rows.
KNOWN_STRINGS = [
    "p1", "p2", "p1-vol", "p1-vol-doomed", "p1-snap", "p1-res-get", "p1-res-commit", "h1", "gold",
    "gold-flavor", "c1", "volumes", "gigabytes", "cinder-volume", "sr-1", "finished", INSTANCE,
    "2000-01-01T00:00:00", "",
]  # fmt: skip
KNOWN_INTS = [SERVICE, VOLUME_TYPE, FLAVOR, 900001, 900100, 0, 1, -1]

hostile_strings = st.one_of(
    st.sampled_from(KNOWN_STRINGS),
    st.text(max_size=12),  # any code point but surrogates: NUL, controls, astral planes
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
    st.builds(lambda s, n: s * n, st.sampled_from(["x", "é", "\U0001d11e"]), st.integers(250, 300)),
)
hostile_ints = st.one_of(
    st.sampled_from(KNOWN_INTS),
    st.integers(-(2**31), 2**31),
    st.integers(-(2**70), 2**70),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    hostile_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_strings,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_strings, inner, max_size=3),
    max_leaves=6,
)
mapping_keys = st.one_of(st.sampled_from(["volumes", "gigabytes", "id", "k"]), hostile_strings)

#: The model a ``values`` dict describes, by function-name prefix (first match wins).
VALUES_MODELS = [
    ("volume_type", models.VolumeType),
    ("volume", models.Volume),
    ("snapshot", models.Snapshot),
    ("service", models.Service),
    ("iscsi_target", models.IscsiTarget),
    ("migration", models.Migration),
    ("sm_backend_conf", models.SmBackendConfig),
    ("sm_flavor", models.SmFlavor),
    ("sm_volume", models.SmVolume),
]
RELATION_KEYS = ["metadata", "admin_metadata", "extra_specs"]


def _values(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """``values`` dicts whose keys are mostly the model's columns (so calls get past the key check)."""
    model = next(m for prefix, m in VALUES_MODELS if name.startswith(prefix))
    columns = [attr.key for attr in model.__mapper__.column_attrs]
    keys = st.one_of(st.sampled_from(columns + RELATION_KEYS), hostile_strings)
    return st.dictionaries(keys, json_values, max_size=5)


def _typed(name: str, arg: Arg, annotation: Any) -> st.SearchStrategy[Any]:
    """Values of the argument's declared type, hostile within it."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_typed(name, arg, a) for a in typing.get_args(annotation)))
    if annotation is type(None):
        return st.none()
    base = origin or annotation
    if base is str:
        return hostile_strings
    if base is bool:
        return st.booleans()
    if base is int:
        return hostile_ints
    if base is list:
        return st.lists(st.one_of(hostile_strings, scalars), max_size=4)
    if base is dict and arg.name == "values":
        return _values(name)
    if base is dict:
        return st.dictionaries(mapping_keys, json_values, max_size=4)
    return json_values


def arguments(handler: Handler) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``handler``: either its valid sample (:data:`SAMPLES`, naming seeded
    rows) with one argument made hostile, so calls reach existing rows and can fail half-way
    through a write; or every argument hostile, optional ones sometimes left out. A hostile value
    is of the declared type or any JSON value; a hostile dict may extend the sample's dict."""
    sample = SAMPLES[handler.name]

    def hostile(arg: Arg) -> st.SearchStrategy[Any]:
        typed = _typed(handler.name, arg, arg.annotation)
        valid = sample.get(arg.name)
        if isinstance(valid, dict):
            return st.one_of(typed.map(lambda extra: {**valid, **extra}), typed, json_values)
        return st.one_of(typed, json_values)

    def one_hostile(name: str) -> st.SearchStrategy[dict[str, Any]]:
        arg = next(a for a in handler.args if a.name == name)
        return st.fixed_dictionaries({**{k: st.just(v) for k, v in sample.items()}, name: hostile(arg)})

    required = {a.name: hostile(a) for a in handler.args if a.required}
    optional = {a.name: hostile(a) for a in handler.args if not a.required}
    all_hostile = st.fixed_dictionaries(required, optional=optional)
    if not handler.args:
        return all_hostile
    return st.one_of(st.sampled_from([a.name for a in handler.args]).flatmap(one_hostile), all_hostile)


# --- explicit hostile values --------------------------------------------------------------------
LONG, LONGER = "x" * 256, "y" * 2048
HOSTILE = [
    ("too long", "volume_create", {"values": {"display_name": LONG}}),
    ("too long", "volume_update", {"volume_id": "p1-vol", "values": {"provider_location": "l" * 257}}),
    ("too long", "service_create", {"values": {"host": LONG}}),
    ("too long", "volume_type_create", {"values": {"name": LONG}}),
    ("too long", "volume_metadata_update", {"volume_id": "p1-vol", "metadata": {"k": LONG}, "delete": False}),
    ("too long", "quota_create", {"project_id": "p1", "resource": LONG, "limit": 1}),
    ("too long", "sm_backend_conf_create", {"values": {"flavor_id": FLAVOR, "config_params": LONGER}}),
    ("wrong type", "volume_create", {"values": {"size": "1"}}),
    ("wrong type", "volume_create", {"values": {"size": True}}),
    ("wrong type", "volume_create", {"values": {"launched_at": "yesterday"}}),
    ("wrong type", "volume_update", {"volume_id": "p1-vol", "values": {"display_name": 5}}),
    ("wrong type", "service_get", {"service_id": "900001"}),
    ("wrong type", "service_update", {"service_id": SERVICE, "values": {"disabled": "yes"}}),
    ("wrong type", "quota_create", {"project_id": "p1", "resource": "r", "limit": "10"}),
    ("wrong type", "volume_metadata_update", {"volume_id": "p1-vol", "metadata": ["k"], "delete": False}),
    ("wrong type", "volume_metadata_update", {"volume_id": "p1-vol", "metadata": {"k": {}}, "delete": False}),
    ("wrong type", "snapshot_create", {"values": {"volume_id": "p1-vol", "volume_size": 1.5}}),
    ("wrong type", "reservation_commit", {"reservations": [1, 2]}),
    ("invalid unicode", "volume_create", {"values": {"display_name": "a\ud800"}}),
    ("invalid unicode", "volume_get", {"volume_id": "\udcff"}),
    ("invalid unicode", "service_get_by_args", {"host": "h\ud800", "binary": "cinder-volume"}),
    ("invalid unicode", "volume_metadata_update", {"volume_id": "p1-vol", "metadata": {"\ud800": 1},
                                                   "delete": False}),
    ("NUL byte", "volume_create", {"values": {"display_name": "a\x00b"}}),
    ("NUL byte", "volume_get", {"volume_id": "p1-vol\x00"}),
    ("NUL byte", "service_get_by_args", {"host": "h1\x00", "binary": "cinder-volume"}),
    ("NUL byte", "reservation_commit", {"reservations": ["p1-res-commit\x00"]}),
    ("NUL byte", "volume_type_extra_specs_update_or_create", {"volume_type_id": VOLUME_TYPE,
                                                             "extra_specs": {"k\x00": 1}}),
    ("negative size", "volume_create", {"values": {"size": -1}}),
    ("negative size", "volume_update", {"volume_id": "p1-vol", "values": {"size": -5}}),
    ("negative size", "snapshot_create", {"values": {"volume_id": "p1-vol", "volume_size": -1}}),
    ("out of range", "volume_create", {"values": {"size": 2**31}}),
    ("out of range", "service_get", {"service_id": 2**64}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "name", "kwargs"), HOSTILE, ids=[f"{name}-{what.replace(' ', '_')}" for what, name, _ in HOSTILE]
)
def test_hostile_values_are_invalid_input_and_write_nothing(seeded, what, name, kwargs):
    before = table_contents(seeded.engine)
    with pytest.raises(exception.InvalidInput):
        local_api(seeded.engine).call(context("admin"), name, **kwargs)
    assert table_contents(seeded.engine) == before


def test_valid_unicode_and_full_length_strings_are_stored_unchanged(seeded):
    api = local_api(seeded.engine)
    admin = context("admin")
    text = "ünïcødé ☃ 中文 \U0001d11e \U0001f600"
    full = "é" * 255
    volume = api.call(admin, "volume_create", values={"display_name": text, "display_description": full,
                                                      "metadata": {text: text}})  # fmt: skip
    stored = seeded.rows(models.Volume, models.Volume.id == volume["id"])[0]
    assert (stored.display_name, stored.display_description) == (text, full)
    assert api.call(admin, "volume_metadata_get", volume_id=volume["id"]) == {text: text}


# --- the property ---------------------------------------------------------------------------------
UNTRANSLATED = (exception.DBError, exception.DBBusy, exception.DBUnavailable)


class CommitWatch:
    """Counts the transactions on ``engine`` that committed an INSERT, UPDATE or DELETE."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.writes, self.pending = engine, 0, False

    def __enter__(self) -> CommitWatch:
        event.listen(self.engine, "before_cursor_execute", self._execute)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.pending = True

    def _commit(self, conn: Any) -> None:
        self.writes += self.pending
        self.pending = False

    def _rollback(self, conn: Any) -> None:
        self.pending = False


#: Each table's row count and soft-deleted count, in one statement (built once: cheap per example).
ROW_COUNTS = sa.union_all(
    *(
        sa.select(
            sa.literal_column(f"'{t.name}'"), sa.func.count(), sa.func.count(t.c.get("deleted_at"))
        ).select_from(t)
        for t in models.Base.metadata.sorted_tables
    )
)


def row_counts(engine: Engine) -> list[tuple[str, int, int]]:
    """Every table's ``(name, rows, soft-deleted rows)``, read straight from the database."""
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(ROW_COUNTS))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_any_arguments_give_a_reply_or_a_typed_error_and_never_a_partial_write(seeded, name):
    handler = REGISTRY[name]
    api = local_api(seeded.engine)
    state = {"counts": row_counts(seeded.engine)}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(who=st.sampled_from(["admin", "user"]), kwargs=arguments(handler))
    def check(who: str, kwargs: dict[str, Any]) -> None:
        with CommitWatch(seeded.engine) as watch:
            try:
                reply = api.call(context(who), name, **kwargs)
            except UNTRANSLATED as err:
                raise AssertionError(f"reached the database untranslated: {err}") from err
            except exception.CinderException as err:
                counts = row_counts(seeded.engine)
                if isinstance(err, exception.OverQuota):  # its usage refreshes are kept (contract §6)
                    state["counts"] = counts
                    return
                assert watch.writes == 0, f"committed a write, then failed with {type(err).__name__}"
                assert counts == state["counts"], "row counts changed by a failed call"
                return
        encode(reply)  # JSON data only
        if handler.writes:
            state["counts"] = row_counts(seeded.engine)

    check()
