"""Every error a dbworker caller can see, with Cinder's class names, hierarchy, templates and codes.

Each class takes ``(message=None, **kwargs)`` and keeps ``kwargs`` (``code`` included) as JSON data,
so oslo.messaging rebuilds it on the caller as ``cls(*args, **kwargs)`` when this module is listed in
``allowed_remote_exmods``. A raw caller sees ``RemoteError`` whose ``exc_type`` is the class name.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from dbworker.protocol import wire

LOG = logging.getLogger(__name__)


class CinderException(Exception):
    """Base of every dbworker error (``cinder.exception.CinderException``).

    ``message`` is a ``%``-template formatted with the keyword arguments; a positional message skips
    formatting, as in Cinder. ``commit_first`` marks errors raised after the call's writes are kept
    (``OverQuota`` from ``quota_reserve``); ``expected`` errors are business outcomes, logged at
    debug level without a traceback.

    ``kwargs`` holds each keyword argument as :func:`dbworker.protocol.wire.encode` converts it, plus
    ``code``. A value it refuses is left out of ``kwargs`` and logged at ERROR (class, keyword,
    type); the error keeps its class, and its message formats that value as it was given.
    """

    message: ClassVar[str] = "An unknown exception occurred."
    code: ClassVar[int] = 500
    headers: ClassVar[dict[str, Any]] = {}
    safe: ClassVar[bool] = False
    commit_first: ClassVar[bool] = False
    expected: ClassVar[bool] = True

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs: dict[str, wire.Primitive] = {}
        refused: dict[str, Any] = {}
        for key, value in kwargs.items():
            try:
                self.kwargs[key] = wire.encode(value)
            except TypeError as err:  # a dbworker bug to fix, not a reason to lose the error's class
                LOG.error("%s: keyword %s left out of the error's kwargs: %s", type(self).__name__, key, err)
                refused[key] = value
        self.kwargs.setdefault("code", self.code)
        if not message:
            values = {**refused, **self.kwargs}
            try:
                message = self.message % values
            except (KeyError, TypeError, ValueError):
                LOG.error("Could not format %s with %s", type(self).__name__, sorted(values))
                message = self.message
        self.msg = message
        super().__init__(message)


# --- authorization --------------------------------------------------------------------------------
class NotAuthorized(CinderException):
    message = "Not authorized."
    code = 403


class AdminRequired(NotAuthorized):
    message = "User does not have admin privileges"


class PolicyNotAuthorized(NotAuthorized):
    message = "Policy doesn't allow %(action)s to be performed."


# --- invalid input --------------------------------------------------------------------------------
class Invalid(CinderException):
    message = "Unacceptable parameters."
    code = 400


class InvalidUUID(Invalid):
    message = "Expected a uuid but received %(uuid)s."


class InvalidInput(Invalid):
    message = "Invalid input received: %(reason)s"


class IdempotencyKeyReused(Invalid):
    """The key was kept for another call (function, arguments or caller): refused, not answered."""

    message = "Idempotency key %(key)s was used before for another call."
    code = 409


class InvalidVolumeType(Invalid):
    message = "Invalid volume type: %(reason)s"


class InvalidVolume(Invalid):
    message = "Invalid volume: %(reason)s"


class InvalidSnapshot(Invalid):
    message = "Invalid snapshot: %(reason)s"


class VolumeAttached(Invalid):
    message = "Volume %(volume_id)s is still attached, detach volume first."


class InvalidReservationExpiration(Invalid):
    message = "Invalid reservation expiration %(expire)s."


class InvalidQuotaValue(Invalid):
    message = "Change would make usage less than 0 for the following resources: %(unders)s"


class InvalidUnicodeParameter(Invalid):
    message = "Invalid Parameter: Unicode is not supported by the current database."


class InvalidParameterValue(Invalid):
    message = "%(err)s"


class InvalidRequest(Invalid):
    message = "The request is invalid."


class InvalidResults(Invalid):
    message = "The results are invalid."


class InvalidPortRange(Invalid):
    message = "Invalid port range %(from_port)s:%(to_port)s. %(msg)s"


class InvalidContentType(Invalid):
    message = "Invalid content type %(content_type)s."


class ServiceUnavailable(Invalid):
    message = "Service is unavailable at this time."


class ImageUnacceptable(Invalid):
    message = "Image %(image_id)s is unacceptable: %(reason)s"


class InvalidImageRef(Invalid):
    message = "Invalid image href %(image_href)s."


# --- not found ------------------------------------------------------------------------------------
class NotFound(CinderException):
    message = "Resource could not be found."
    code = 404
    safe = True


class VolumeNotFound(NotFound):
    message = "Volume %(volume_id)s could not be found."


class VolumeNotFoundForInstance(VolumeNotFound):
    message = "Volume not found for instance %(instance_id)s."


class VolumeMetadataNotFound(NotFound):
    message = "Volume %(volume_id)s has no metadata with key %(metadata_key)s."


class VolumeAdminMetadataNotFound(NotFound):
    message = "Volume %(volume_id)s has no administration metadata with key %(metadata_key)s."


class VolumeTypeNotFound(NotFound):
    message = "Volume type %(volume_type_id)s could not be found."


class VolumeTypeNotFoundByName(VolumeTypeNotFound):
    message = "Volume type with name %(volume_type_name)s could not be found."


class VolumeTypeExtraSpecsNotFound(NotFound):
    message = "Volume Type %(volume_type_id)s has no extra specs with key %(extra_specs_key)s."


class SnapshotNotFound(NotFound):
    message = "Snapshot %(snapshot_id)s could not be found."


class ISCSITargetNotFoundForVolume(NotFound):
    message = "No target id found for volume %(volume_id)s."


class ServiceNotFound(NotFound):
    message = "Service %(service_id)s could not be found."


class HostNotFound(NotFound):
    message = "Host %(host)s could not be found."


class HostBinaryNotFound(NotFound):
    message = "Could not find binary %(binary)s on host %(host)s."


class MigrationNotFound(NotFound):
    message = "Migration %(migration_id)s could not be found."


class MigrationNotFoundByStatus(MigrationNotFound):
    message = "Migration not found for instance %(instance_id)s with status %(status)s."


class QuotaNotFound(NotFound):
    message = "Quota could not be found"


class QuotaResourceUnknown(QuotaNotFound):
    message = "Unknown quota resources %(unknown)s."


class ProjectQuotaNotFound(QuotaNotFound):
    message = "Quota for project %(project_id)s could not be found."


class QuotaClassNotFound(QuotaNotFound):
    message = "Quota class %(class_name)s could not be found."


class QuotaUsageNotFound(QuotaNotFound):
    message = "Quota usage for project %(project_id)s could not be found."


class ReservationNotFound(QuotaNotFound):
    message = "Quota reservation %(uuid)s could not be found."


class ImageNotFound(NotFound):
    message = "Image %(image_id)s could not be found."


class DiskNotFound(NotFound):
    message = "No disk at %(location)s"


class FileNotFound(NotFound):
    message = "File %(file_path)s could not be found."


class ClassNotFound(NotFound):
    message = "Class %(class_name)s could not be found: %(exception)s"


class ConfigNotFound(NotFound):
    message = "Could not find config at %(path)s"


class PasteAppNotFound(NotFound):
    message = "Could not load paste app '%(name)s' from %(path)s"


class InstanceNotFound(NotFound):
    message = "Instance %(instance_id)s could not be found."


class PersistentVolumeFileNotFound(NotFound):
    message = "No file found for volume %(volume_id)s."


# --- duplicates -----------------------------------------------------------------------------------
class Duplicate(CinderException):
    message = "Resource already exists."


class VolumeTypeExists(Duplicate):
    message = "Volume Type %(name)s already exists."


class KeyPairExists(Duplicate):
    message = "Key pair %(key_name)s already exists."


class DuplicateSfVolumeNames(Duplicate):
    message = "Detected more than one volume with name %(vol_name)s"


# --- quotas ---------------------------------------------------------------------------------------
class OverQuota(CinderException):
    """Raised by ``quota_reserve`` after its usage refreshes are committed."""

    message = "Quota exceeded for resources: %(overs)s"
    commit_first = True


class QuotaError(CinderException):
    message = "Quota exceeded: code=%(code)s"
    code = 413
    headers = {"Retry-After": 0}
    safe = True


class VolumeSizeExceedsAvailableQuota(QuotaError):
    message = "Requested volume exceeds allowed volume size quota"


class VolumeSizeExceedsQuota(QuotaError):
    message = "Maximum volume size exceeded"


class VolumeLimitExceeded(QuotaError):
    message = "Maximum number of volumes allowed (%(allowed)d) exceeded"


# --- other Cinder errors (code 500) ---------------------------------------------------------------
class VolumeTypeCreateFailed(CinderException):
    message = "Cannot create volume_type with name %(name)s and specs %(extra_specs)s"


class NoValidHost(CinderException):
    message = "No valid host was found. %(reason)s"


class WillNotSchedule(CinderException):
    message = "Host %(host)s is not up or doesn't exist."


class VolumeIsBusy(CinderException):
    message = "deleting volume %(volume_name)s that has snapshot"


class SnapshotIsBusy(CinderException):
    message = "deleting snapshot %(snapshot_name)s that has dependent volumes"


class ISCSITargetCreateFailed(CinderException):
    message = "Failed to create iscsi target for volume %(volume_id)s."


class ISCSITargetRemoveFailed(CinderException):
    message = "Failed to remove iscsi target for volume %(volume_id)s."


class MigrationError(CinderException):
    message = "Migration error: %(reason)s"


class NotAllowed(CinderException):
    message = "Action not allowed."


class MalformedRequestBody(CinderException):
    message = "Malformed message body: %(reason)s"


class VolumeBackendAPIException(CinderException):
    message = "Bad or unexpected response from the storage volume backend API: %(data)s"


class DeprecatedConfig(CinderException):
    message = "Fatal call to deprecated config %(msg)s"


class GlanceConnectionFailed(CinderException):
    message = "Connection to glance failed: %(reason)s"


class ImageNotAuthorized(CinderException):
    message = "Not authorized for image %(image_id)s."


class NoMoreTargets(CinderException):
    """No free iSCSI target on the host (``cinder.db.api.NoMoreTargets``: no template)."""


# --- dbworker's own: the database behind the worker -----------------------------------------------
class DBUnavailable(CinderException):
    """The database is unreachable or the connection pool is exhausted; safe to retry later."""

    message = "The database is unavailable; retry later."
    expected = False


class DBBusy(CinderException):
    """A deadlock or serialization failure persisted through the worker's retries."""

    message = "The database stayed busy (deadlock) after %(attempts)s attempts; retry later."
    expected = False


class DBError(CinderException):
    """An unexpected database error; details are in the worker's log under the request id."""

    message = "Unexpected database error (request %(request_id)s); see the worker log."
    expected = False
