"""The configured values handlers need, as plain data: a handler declares a keyword-only
``settings: Settings`` parameter and the dispatcher passes it (it is not a wire argument)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """The Folsom flags that shape results: the ``[dbworker]`` options of the same names.

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
