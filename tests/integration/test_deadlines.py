"""A call its caller gave up on before it started is never run (issue 14, part 1).

A worker is stopped (SIGSTOP) while write calls with a short timeout queue behind it; their callers
time out. After SIGCONT the worker takes what the broker had already handed it, finds each call's
deadline passed, and runs none of them: nothing is written, no reply is sent, and its log says why
for each. The broker itself drops the queued calls whose message expired with their caller's
timeout. Then the worker serves again.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import oslo_messaging
import pytest
import sqlalchemy as sa
from daemons import ADMIN, wait_for
from load_ledger import CALL_LINE
from test_load_faults import wait_serving

from dbworker.client import Client
from dbworker.models import Volume

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgresql, pytest.mark.slow, pytest.mark.timeout(180)]

TIMEOUT, ALLOWANCE, CALLS = 2.0, 0.5, 6


def test_calls_whose_deadline_passed_while_the_worker_was_stopped_never_run(daemon, transport, database_url):
    worker = daemon(dbworker__workers=1, executor_thread_pool_size=2, dbworker__deadline_allowance=ALLOWANCE)
    wait_serving(worker, transport, timeout=60, workers=1)
    (pid,) = worker.workers()
    client = Client(transport, topic=worker.topic, timeout=TIMEOUT, retries=0)
    ids = [f"expired-{uuid.uuid4()}" for _ in range(CALLS)]

    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(CALLS) as pool:
            calls = [pool.submit(client.volume_create, ADMIN, {"id": id_, "size": 1}) for id_ in ids]
            for call in calls:
                with pytest.raises(oslo_messaging.MessagingTimeout):
                    call.result(timeout=TIMEOUT + 30)
        # Every deadline (sent: now + TIMEOUT) is now past by more than the allowance.
        past = time.time() + ALLOWANCE
        wait_for(lambda: time.time() > past, timeout=ALLOWANCE + 5)
    finally:
        os.kill(pid, signal.SIGCONT)

    worker.wait_for_log("after its deadline; not run, no reply sent", timeout=30)
    after = Client(transport, topic=worker.topic, timeout=30, retries=0)
    assert after.volume_create(ADMIN, {"id": "after", "size": 1})["id"] == "after"

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(Volume.id)).scalars().all() == ["after"]
    finally:
        engine.dispose()
    outcomes = [outcome for _, name, outcome in CALL_LINE.findall(worker.log) if name == "volume_create"]
    assert outcomes[-1] == "ok" and set(outcomes[:-1]) == {"DeadlinePassed"}, outcomes
