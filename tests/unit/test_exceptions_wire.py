"""Every error class survives the wire: a real oslo.messaging server over ``kombu+memory:////``
raises it, the caller gets the same class, message and kwargs back."""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any

import oslo_messaging
import pytest

from dbworker import client, exception

#: Every error class dbworker.exception defines, base first.
CLASSES = [
    obj
    for obj in vars(exception).values()
    if isinstance(obj, type) and issubclass(obj, exception.CinderException)
]

#: Template fields whose plausible value is not a string (Cinder passes lists and dicts).
SAMPLES: dict[str, Any] = {
    "overs": ["gigabytes", "volumes"],
    "unders": ["snapshots"],
    "unknown": ["bogus"],
    "extra_specs": {"qos": "high"},
    "attempts": 6,
    "volume_id": "9c1e6a1e-6b0e-4a8e-8f0e-2a7f9a5e0b11",
    "service_id": 7,
}


def plausible_kwargs(cls: type[exception.CinderException]) -> dict[str, Any]:
    """Keyword arguments for every ``%(name)s`` field of the class's template (``code`` aside:
    each class fills in its own)."""
    fields = re.findall(r"%\((\w+)\)([sd])", cls.message)
    return {
        name: 3 if kind == "d" else SAMPLES.get(name, f"{name}-1") for name, kind in fields if name != "code"
    }


class Raiser:
    """An endpoint that raises the named dbworker error with the given kwargs."""

    target = oslo_messaging.Target(version="1.0")

    @oslo_messaging.expected_exceptions(exception.CinderException)
    def raise_error(self, ctxt: dict, error: str, kwargs: dict) -> None:
        raise getattr(exception, error)(**kwargs)

    @oslo_messaging.expected_exceptions(exception.CinderException)
    def raise_with_a_uuid(self, ctxt: dict) -> None:
        raise exception.VolumeNotFound(volume_id=uuid.UUID(int=1))


@pytest.fixture(scope="module")
def topic(rpc_conf):
    """A started RPC server with the ``Raiser`` endpoint; yields its topic."""
    topic = f"dbworker-errors-{uuid.uuid4().hex[:8]}"
    transport = oslo_messaging.get_rpc_transport(rpc_conf, url="kombu+memory:////")
    server = oslo_messaging.get_rpc_server(
        transport,
        oslo_messaging.Target(topic=topic, server="errors"),
        [Raiser()],
        access_policy=oslo_messaging.DefaultRPCAccessPolicy,
    )
    server.start()
    yield topic
    server.stop()
    server.wait()
    transport.cleanup()


@pytest.fixture(scope="module")
def dbworker_client(rpc_conf, topic):
    transport = client.get_transport(rpc_conf, url="kombu+memory:////")
    yield client.Client(transport, topic=topic, timeout=10, retries=0)  # retries: test_client_retries.py
    transport.cleanup()


@pytest.fixture(scope="module")
def raw_client(rpc_conf, topic):
    """An oslo.messaging client whose transport does NOT allow ``dbworker.exception``."""
    transport = oslo_messaging.get_rpc_transport(rpc_conf, url="kombu+memory:////")
    yield oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=10)
    transport.cleanup()


def test_every_error_class_has_a_formattable_template():
    assert len(CLASSES) >= 75
    for cls in CLASSES:
        error = cls(**plausible_kwargs(cls))
        assert "%(" not in str(error), cls.__name__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_client_gets_the_same_class_message_and_kwargs(dbworker_client, cls):
    kwargs = plausible_kwargs(cls)
    sent = cls(**kwargs)

    with pytest.raises(exception.CinderException) as caught:
        dbworker_client.call({}, "raise_error", error=cls.__name__, kwargs=kwargs)

    received = caught.value
    assert type(received) is cls
    assert str(received) == str(sent)
    assert received.kwargs == sent.kwargs == {**kwargs, "code": cls.code}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_args_and_kwargs_rebuild_the_same_error(cls):
    error = cls(**plausible_kwargs(cls))
    rebuilt = type(error)(*error.args, **error.kwargs)
    assert type(rebuilt) is cls
    assert (str(rebuilt), rebuilt.args, rebuilt.kwargs) == (str(error), error.args, error.kwargs)


@pytest.mark.parametrize(
    "cls",
    [exception.VolumeNotFound, exception.OverQuota, exception.NoMoreTargets, exception.DBBusy],
    ids=lambda c: c.__name__,
)
def test_a_raw_client_without_our_exmods_gets_remote_error_named_like_the_class(raw_client, cls):
    kwargs = plausible_kwargs(cls)

    with pytest.raises(oslo_messaging.RemoteError) as caught:
        raw_client.call({}, "raise_error", error=cls.__name__, kwargs=kwargs)

    assert caught.value.exc_type == cls.__name__
    assert caught.value.value.startswith(str(cls(**kwargs)))


#: Cinder's exception classes at Folsom (reference §5.2, plus ``CinderException`` and ``DBError``
#: of §5.1 and ``cinder.db.api.NoMoreTargets``), and the contract's two additions (§5).
_CINDER = """
    CinderException DBError NoMoreTargets
    NotAuthorized AdminRequired PolicyNotAuthorized
    Invalid InvalidUUID InvalidInput InvalidVolumeType InvalidVolume InvalidSnapshot VolumeAttached
    InvalidReservationExpiration InvalidQuotaValue InvalidUnicodeParameter InvalidParameterValue
    InvalidRequest InvalidResults InvalidPortRange InvalidContentType ServiceUnavailable
    ImageUnacceptable InvalidImageRef
    NotFound VolumeNotFound VolumeNotFoundForInstance VolumeMetadataNotFound VolumeTypeNotFound
    VolumeTypeNotFoundByName VolumeTypeExtraSpecsNotFound SnapshotNotFound
    ISCSITargetNotFoundForVolume ServiceNotFound HostNotFound HostBinaryNotFound MigrationNotFound
    MigrationNotFoundByStatus QuotaNotFound QuotaResourceUnknown ProjectQuotaNotFound
    QuotaClassNotFound QuotaUsageNotFound ReservationNotFound ImageNotFound DiskNotFound
    FileNotFound ClassNotFound ConfigNotFound PasteAppNotFound InstanceNotFound
    PersistentVolumeFileNotFound
    Duplicate VolumeTypeExists KeyPairExists DuplicateSfVolumeNames OverQuota
    QuotaError VolumeSizeExceedsAvailableQuota VolumeSizeExceedsQuota VolumeLimitExceeded
    VolumeTypeCreateFailed NoValidHost WillNotSchedule VolumeIsBusy SnapshotIsBusy
    ISCSITargetCreateFailed ISCSITargetRemoveFailed MigrationError NotAllowed MalformedRequestBody
    VolumeBackendAPIException DeprecatedConfig GlanceConnectionFailed ImageNotAuthorized
"""
CINDER_NAMES = _CINDER.split()
#: ``VolumeAdminMetadataNotFound`` is modern Cinder's, for the admin metadata family the contract
#: adds with modern Cinder's signatures (§3).
CONTRACT_ADDITIONS = ["DBUnavailable", "DBBusy", "VolumeAdminMetadataNotFound", "IdempotencyKeyReused"]


def test_every_error_a_caller_can_see_has_a_cinder_class_name_or_is_the_contracts():
    # A raw caller compares RemoteError.exc_type with Cinder's names: an invented class (such as
    # an SMVolumeNotFound Cinder never had) is a name no caller checks for.
    names = [cls.__name__ for cls in CLASSES]
    assert sorted(set(names) - set(CINDER_NAMES) - set(CONTRACT_ADDITIONS)) == []


def test_the_handlers_raise_only_classes_of_the_exception_module():
    # Every `raise exception.X` in the worker names a class the module defines (so one of the
    # names above); any other exception class raised by a handler would reach a caller untyped.
    import pathlib

    root = pathlib.Path(exception.__file__).parent
    raised = set()
    for path in root.rglob("*.py"):
        raised |= set(re.findall(r"raise exception\.(\w+)", path.read_text()))
    assert raised and raised <= {cls.__name__ for cls in CLASSES}


# --- kwargs are JSON data -------------------------------------------------------------------------
def test_over_quota_keeps_its_overs_quotas_and_usages_as_json_data():
    # What quota_reserve raises: resource names, the caller's limits, the project's usages.
    usages = {"gigabytes": {"in_use": 10, "reserved": 2}, "volumes": {"in_use": 1, "reserved": 0}}
    error = exception.OverQuota(overs=["gigabytes"], quotas={"gigabytes": 10, "volumes": None}, usages=usages)

    assert error.kwargs == {
        "overs": ["gigabytes"],
        "quotas": {"gigabytes": 10, "volumes": None},
        "usages": usages,
        "code": 500,
    }
    assert str(error) == "Quota exceeded for resources: ['gigabytes']"
    assert json.loads(json.dumps(error.kwargs)) == error.kwargs


def test_error_kwargs_are_converted_by_the_wire_rules():
    error = exception.InvalidReservationExpiration(expire=datetime(2012, 9, 26, 1, 2, 3), extra=("a", "b"))
    assert error.kwargs == {"expire": "2012-09-26T01:02:03.000000", "extra": ["a", "b"], "code": 400}
    assert str(error) == "Invalid reservation expiration 2012-09-26T01:02:03.000000."


@pytest.mark.parametrize(
    "value", [uuid.UUID(int=1), frozenset({"gigabytes"}), ValueError("boom"), {1: "x"}], ids=repr
)
def test_a_kwarg_that_is_not_json_is_left_out_and_logged_and_the_error_keeps_its_class(caplog, value):
    with caplog.at_level(logging.ERROR, logger="dbworker.exception"):
        error = exception.VolumeNotFound(volume_id=value, host="h")

    assert type(error) is exception.VolumeNotFound
    assert error.kwargs == {"host": "h", "code": 404}
    assert str(error) == f"Volume {value} could not be found."  # the message still names it
    (logged,) = [r for r in caplog.records if r.name == "dbworker.exception"]
    assert logged.levelno == logging.ERROR
    assert "VolumeNotFound: keyword volume_id left out" in logged.getMessage()
    rebuilt = type(error)(*error.args, **error.kwargs)
    assert (type(rebuilt), str(rebuilt), rebuilt.kwargs) == (type(error), str(error), error.kwargs)


def test_a_kwarg_that_is_not_json_still_reaches_the_caller_as_the_typed_error(dbworker_client):
    with pytest.raises(exception.VolumeNotFound) as caught:
        dbworker_client.call({}, "raise_with_a_uuid")

    assert str(caught.value) == f"Volume {uuid.UUID(int=1)} could not be found."
    assert caught.value.kwargs == {"code": 404}
