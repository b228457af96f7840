"""quota_reserve under concurrency (contract §6): row locks on PostgreSQL and MariaDB (and the
write lock a write call takes at BEGIN on SQLite) keep a quota from being oversubscribed, and a
project's very first reservations never create two live usage rows. Every thread has its own
in-process API (its own dispatcher and connections)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from testenv import DATABASES

from dbworker import exception
from dbworker.api import LocalAPI
from dbworker.core.context import RequestContext
from dbworker.models import QuotaUsage, Reservation

THREADS = 16
USER = RequestContext(user_id="racer", project_id="race", roles=("member",))


# Row locks on PostgreSQL and MariaDB; on SQLite, write calls take the write lock at BEGIN.
pytestmark = pytest.mark.parametrize("database", DATABASES, indirect=True)


def _race(db, work):
    """Run ``work(api, index)`` in THREADS threads released together; return the outcome names."""
    barrier = threading.Barrier(THREADS)
    outcomes: list[object] = [None] * THREADS

    def run(index: int) -> None:
        api = LocalAPI.from_engine(db.engine)
        barrier.wait()
        try:
            outcomes[index] = work(api, index)
        except exception.CinderException as err:
            outcomes[index] = type(err).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def _live_usages(db):
    usages = db.rows(QuotaUsage, QuotaUsage.project_id == "race", QuotaUsage.deleted == False)
    assert sorted(u.resource for u in usages) == ["gigabytes", "volumes"]
    return {u.resource: u for u in usages}


def test_concurrent_first_reservations_fill_the_quota_exactly_and_create_one_usage_row_each(
    db,
):
    quotas = {"volumes": 5, "gigabytes": 1000}

    def reserve(api, index):
        return api.quota_reserve(USER, ["volumes", "gigabytes"], quotas, {"volumes": 1, "gigabytes": 10})

    outcomes = _race(db, reserve)

    assert Counter(o if isinstance(o, str) else "ok" for o in outcomes) == {
        "ok": 5,
        "OverQuota": THREADS - 5,
    }
    usages = _live_usages(db)
    assert (usages["volumes"].in_use, usages["volumes"].reserved) == (0, 5)
    assert (usages["gigabytes"].in_use, usages["gigabytes"].reserved) == (0, 50)
    live = db.rows(Reservation, Reservation.deleted == False)
    assert len(live) == 10


def test_concurrent_reserve_and_commit_rounds_never_oversubscribe(db):
    quotas = {"volumes": 8, "gigabytes": -1}
    committed = Counter()

    def rounds(api, index):
        for _ in range(4):
            try:
                uuids = api.quota_reserve(
                    USER, ["volumes", "gigabytes"], quotas, {"volumes": 1, "gigabytes": 3}
                )
            except exception.OverQuota as err:
                usage = err.kwargs["usages"]["volumes"]
                assert usage["in_use"] + usage["reserved"] <= 8
                continue
            api.reservation_commit(USER, uuids)
            committed[index] += 1
        return "done"

    outcomes = _race(db, rounds)

    assert outcomes == ["done"] * THREADS
    assert sum(committed.values()) == 8
    usages = _live_usages(db)
    assert (usages["volumes"].in_use, usages["volumes"].reserved) == (8, 0)
    assert (usages["gigabytes"].in_use, usages["gigabytes"].reserved) == (24, 0)
    assert db.rows(Reservation, Reservation.deleted == False) == []
