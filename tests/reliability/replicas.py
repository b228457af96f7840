"""What the read-replica tests share (PostgreSQL's ``test_read_replica.py`` and MariaDB's
``test_read_replica_mariadb.py``): the contexts, an in-process API whose dispatcher has a replica,
and waiting for the replica's state."""

from __future__ import annotations

import time
import uuid

from samples import context
from sqlalchemy.engine import Engine

from dbworker.api import LocalAPI
from dbworker.core.dispatch import Dispatcher
from dbworker.core.registry import Registry
from dbworker.core.replica import Database, Replica, ReplicaState
from dbworker.handlers import build_registry
from dbworker.session import make_sessionmaker

ADMIN = context("admin").to_dict()
#: An admin's context that accepts a reply from the replica.
ON_REPLICA = {**ADMIN, "use_slave": True}
REGISTRY: Registry = build_registry()


def local_api(primary: Engine, replica_engine: Engine, max_lag: float) -> LocalAPI:
    """An in-process API on ``primary`` whose dispatcher reads ``replica_engine`` as its replica
    (checked once)."""
    replica = Replica(Database(replica_engine, make_sessionmaker(replica_engine)), primary, max_lag=max_lag)
    replica.check()
    return LocalAPI(Dispatcher(REGISTRY, make_sessionmaker(primary), replica=replica))


def replica_of(api: LocalAPI) -> Replica:
    replica = api.dispatcher.replica
    assert replica is not None
    return replica


def new_volume(api: LocalAPI) -> str:
    """Create a volume of project p1 on the primary; return its id."""
    volume_id = str(uuid.uuid4())
    api.volume_create(ADMIN, {"id": volume_id, "project_id": "p1", "size": 1})
    return volume_id


def wait_for_state(replica: Replica, state: ReplicaState, timeout: float = 15) -> None:
    """Check the replica until it is in ``state`` (bounded)."""
    deadline = time.monotonic() + timeout
    while replica.check() is not state:
        assert time.monotonic() < deadline, f"the replica stayed {replica.state.value}, not {state.value}"
        time.sleep(0.05)
