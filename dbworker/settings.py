"""The configured values handlers need, as plain data carried by each call's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Settings:
    """Folsom's flags that shape results (contract §8); ``[dbworker]`` options in the daemon."""

    volume_name_template: str = "volume-%s"
    snapshot_name_template: str = "snapshot-%s"
    enable_new_services: bool = True
    volume_topic: str = "cinder-volume"
    reservation_expire: int = 86400
    until_refresh: int = 0
    max_age: int = 0


def settings_of(tx: Session) -> Settings:
    """Return the settings of the call ``tx`` belongs to (defaults outside the dispatcher)."""
    return tx.info.get("settings") or Settings()
