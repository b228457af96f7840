"""The configured values handlers need, as plain data carried by each call's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Settings:
    """Folsom's flags that shape results (contract §8): the ``[dbworker]`` options of the same names.

    Every field is required, so the daemon cannot forget one and fall back to a default; the
    in-process API uses :data:`DEFAULT_SETTINGS` (a test holds them equal to the options' defaults).
    """

    volume_name_template: str
    snapshot_name_template: str
    enable_new_services: bool
    volume_topic: str
    reservation_expire: int
    until_refresh: int
    max_age: int


#: Folsom's defaults, for the in-process API and tests.
DEFAULT_SETTINGS = Settings(
    volume_name_template="volume-%s",
    snapshot_name_template="snapshot-%s",
    enable_new_services=True,
    volume_topic="cinder-volume",
    reservation_expire=86400,
    until_refresh=0,
    max_age=0,
)


def settings_of(tx: Session) -> Settings:
    """Return the settings of the call ``tx`` belongs to.

    Raises:
        KeyError: ``tx`` is not a dispatcher's transaction (no silent default).
    """
    return tx.info["settings"]
