"""The catalogue is the handlers' own signatures: the committed description is what the handlers
declare today, every Cinder function keeps Cinder's signature (names, order, defaults, kinds),
the deliberate differences are named here, each reply is decoded by the shape the handler's
return annotation declares, and a caller knows which functions write as their handlers declare it."""

from __future__ import annotations

import types
from datetime import datetime
from typing import Any

import pytest
from seed_catalogue import SEED_SIGNATURES, parse

from dbworker import models
from dbworker.core.registry import Registry
from dbworker.handlers import build_registry
from dbworker.protocol import catalogue, wire
from dbworker.protocol.calls import CatalogueAPI
from dbworker.protocol.wire import Record
from dbworker.tools import describe

REGISTRY = build_registry()
#: The catalogue as the handlers declare it now (not read from the committed description).
LIVE = catalogue.functions(describe.blocks(REGISTRY))

#: Where dbworker's signature differs from Cinder's on purpose: ``quota_reserve`` takes optional
#: arguments (its last three had to be given; ``project_id`` names another project, admin only),
#: and ``quota_usage_update`` calls Folsom's misnamed ``class_name`` by what it is, ``project_id``.
DELIBERATE = parse(
    """
    quota_reserve(resources, quotas, deltas, expire=None, until_refresh=None, max_age=None, project_id=None)
    quota_usage_update(project_id, resource, in_use, reserved, until_refresh)
    """
)


def test_the_committed_description_is_what_the_handlers_declare():
    assert describe.render(REGISTRY) == describe.TARGET.read_text(), (
        "dbworker/protocol/signatures.py is stale: run `python -m dbworker.tools.describe`"
    )
    assert catalogue.FUNCTIONS == LIVE


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_function_writes_for_its_caller_exactly_when_its_handler_declares_it(name):
    assert catalogue.writes(name) is REGISTRY[name].writes


def test_the_write_functions_are_catalogue_functions_and_only_handlers_write():
    assert describe.writes(REGISTRY) == catalogue.WRITES
    assert catalogue.WRITES.issubset(catalogue.FUNCTIONS)
    assert {"volume_create", "quota_reserve", "reservation_commit"} <= catalogue.WRITES
    assert not catalogue.writes("volume_get") and not catalogue.writes("volume_data_get_for_project")
    assert not catalogue.writes("health") and not catalogue.writes("no_such_function")


@pytest.mark.parametrize("name", sorted(SEED_SIGNATURES))
def test_every_cinder_function_is_served_with_cinders_signature(name):
    assert name in LIVE, f"{name} has no handler"
    assert LIVE[name].signature == DELIBERATE.get(name, SEED_SIGNATURES[name])


def test_the_deliberate_differences_are_the_only_ones():
    differ = {name for name, seed in SEED_SIGNATURES.items() if LIVE[name].signature != seed}
    assert differ == set(DELIBERATE)
    assert catalogue.ALIASES == {"quota_usage_update": {"class_name": "project_id"}}
    assert catalogue.CALLER_ONLY == {"volume_data_get_for_project": {"session": None}}


def test_functions_beyond_cinders_are_dbworkers_own():
    assert sorted(set(LIVE) - set(SEED_SIGNATURES)) == [
        "volume_admin_metadata_delete",
        "volume_admin_metadata_get",
        "volume_admin_metadata_update",
    ]


def test_a_handler_serves_an_aliased_parameter_under_both_names():
    args = {arg.name: arg for arg in REGISTRY["quota_usage_update"].args}
    assert args["project_id"].default is None and args["class_name"].default is None


class Recorder(CatalogueAPI):
    """Records what a method sends instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        self.sent.append((name, kwargs))
        return None


def test_an_aliased_parameter_goes_on_the_wire_under_its_new_name():
    api = Recorder()
    api.quota_usage_update(None, "p1", "volumes", 1, 0, None)
    api.quota_usage_update(None, class_name="p2", resource="volumes", in_use=1, reserved=0, until_refresh=3)
    assert [kwargs["project_id"] for _, kwargs in api.sent] == ["p1", "p2"]
    assert all("class_name" not in kwargs for _, kwargs in api.sent)


def test_a_caller_only_parameter_never_goes_on_the_wire():
    api = Recorder()
    api.volume_data_get_for_project(None, "p1", session=object())
    api.volume_data_get_for_project(None, "p1")
    assert api.sent == [("volume_data_get_for_project", {"project_id": "p1"})] * 2


def test_a_method_binds_its_arguments_like_cinders_function():
    api = Recorder()
    with pytest.raises(TypeError):
        api.volume_get(None)
    with pytest.raises(TypeError):
        api.volume_get(None, "v1", "v2")
    api.service_get_all(None, True)
    assert api.sent == [("service_get_all", {"disabled": True})]


def test_keyword_only_wire_parameters_stay_keyword_only_for_callers():
    wire_signature = catalogue.parse_signature("volume_id, *, force=False")
    assert str(catalogue.caller_signature("x", wire_signature)) == "(volume_id, *, force=False)"


def test_a_signature_that_cannot_travel_is_refused():
    with pytest.raises(ValueError, match="only plain and keyword-only"):
        catalogue.parse_signature("*values")
    with pytest.raises(ValueError, match="not a parameter list"):
        catalogue.parse_signature("volume_id, volume_id=")
    with pytest.raises(ValueError, match="not a signature"):
        catalogue.functions({"plain": "volume_get"})


def _registry(source: str) -> Registry:
    """The registry of a module made of ``source`` (handlers marked with ``@handler``)."""
    module = types.ModuleType("made")
    exec(f"from dbworker.core.registry import handler\n{source}", module.__dict__)
    return Registry.from_modules([module])


def test_a_handler_describes_its_keyword_only_parameters_and_literal_defaults():
    registry = _registry("@handler\ndef thing_get(tx, ctx, a, b=1, *, c=None, d) -> int:\n    return 0\n")
    assert describe.describe(registry) == {"thing_get": ("a, b=1, *, c=None, d", wire.Reply.PLAIN)}


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def thing_get(tx, ctx, a=frozenset()) -> int:", "not a literal"),
        ("def thing_get(tx, ctx, a=object()) -> int:", "not a literal"),
        ("def thing_get(tx, ctx):", "no return annotation"),
    ],
)
def test_a_handler_a_caller_could_not_be_told_about_is_refused(source, match):
    registry = _registry(f"@handler\n{source}\n    return 0\n")
    with pytest.raises(ValueError, match=match):
        describe.describe(registry)


# --- reply shapes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotation", "shape"),
    [
        (models.Volume, wire.Reply.RECORD),
        (Record, wire.Reply.RECORD),
        (models.Service | None, wire.Reply.RECORD),
        (list[Record], wire.Reply.RECORDS),
        (dict[str, models.VolumeType], wire.Reply.RECORDS_BY_NAME),
        (list[tuple[models.Service, int]], wire.Reply.RECORD_PAIRS),
        (dict[str, Any], wire.Reply.PLAIN),
        (tuple[int, int], wire.Reply.PLAIN),
        (int | None, wire.Reply.PLAIN),
        (None, wire.Reply.PLAIN),
    ],
)
def test_a_return_annotation_declares_the_reply_shape(annotation, shape):
    assert describe.reply_shape(annotation) is shape


@pytest.mark.parametrize("annotation", [tuple[models.Volume, models.Volume], dict[str, list[Record]]])
def test_an_annotation_with_rows_no_shape_decodes_is_refused(annotation):
    with pytest.raises(ValueError, match="no reply shape"):
        describe.reply_shape(annotation)


def test_the_special_reply_shapes_are_the_functions_that_return_them():
    special = {name: f.reply for name, f in catalogue.FUNCTIONS.items() if f.reply is not wire.Reply.PLAIN}
    assert special["volume_type_get_all"] is wire.Reply.RECORDS_BY_NAME
    assert special["service_get_all_volume_sorted"] is wire.Reply.RECORD_PAIRS
    assert special["volume_get"] is wire.Reply.RECORD and special["volume_get_all"] is wire.Reply.RECORDS
    for plain in ("volume_metadata_get", "quota_get_all_by_project", "reservation_commit", "health"):
        assert catalogue.reply_shape(plain) is wire.Reply.PLAIN


def test_a_reply_is_decoded_by_its_functions_shape():
    class Replying(CatalogueAPI):
        def _invoke(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> Any:
            return {"created_at": "2020-01-02T03:04:05.000006"}

    api = Replying()
    assert isinstance(api.volume_get(None, "v1")["created_at"], datetime)
    assert api.volume_metadata_get(None, "v1") == {"created_at": "2020-01-02T03:04:05.000006"}
