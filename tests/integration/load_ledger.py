"""The clients' side of the load and fault tests (``test_load_faults.py``): a mixed workload from
THREADS client threads, each with its own ``dbworker.client.Client``, and the ledger they keep of
what the daemon acknowledged, checked against the database afterwards.

The clients retry as ``dbworker.client`` does by default (``MessagingTimeout`` and
``DBUnavailable``, with the call's idempotency key, within :data:`CALL_DEADLINE`), so every call
is expected to end with an answer (ok, or an expected typed error). A call that still ends unknown
(a final ``MessagingTimeout`` or ``DBUnavailable``) is counted as such, and the ledger accepts
either outcome for exactly those calls; the tests assert there are none. No write call may run
twice: a retry of a committed write is answered from its key's record (logged ``KeyTaken``), never
re-run.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import oslo_messaging
import sqlalchemy as sa
from daemons import ADMIN, Daemon, wait_for

from dbworker import exception
from dbworker.client import Client
from dbworker.models import QuotaUsage, Reservation, Volume, VolumeMetadata

THREADS, PROJECTS, LIMITS = 32, 8, {"widgets": 12, "gadgets": 30}
#: Each client's retries of a call after a timeout or DBUnavailable, and the seconds a call may
#: take in all (a fault test's attempts wait 10 s each: five attempts and their pauses fit).
RETRIES, CALL_DEADLINE = 4, 90
SETTLES = ("reservation_commit", "reservation_rollback")
CALLS = ("volume_get", "volume_create", "volume_update", "volume_destroy", "quota_reserve", *SETTLES)
WRITES = frozenset(CALLS) - {"volume_get"}  # a redelivered read may run again: it changes nothing
#: The dispatcher's line for each call: request id, function, duration, outcome.
#: A call's log line: oslo.log's context prefix ``[global-id request-id user ...]`` (the request id
#: appears there only), then ``<function> <ms>ms <outcome>``.
CALL_LINE = re.compile(r"\[\S+ (req-[0-9a-f-]{36}) [^\]]*\] ([a-z_]+) [0-9.]+ms (\w+)")
#: The outcomes of a call that committed its writes (OverQuota commits quota_reserve's refresh);
#: a call that failed otherwise wrote nothing, so a redelivery of it may run.
COMMITTED = ("ok", "OverQuota")
UNKNOWN = (oslo_messaging.MessagingTimeout, exception.DBUnavailable)
EXPECTED = {
    "volume_get": (exception.VolumeNotFound,),
    "volume_update": (exception.VolumeNotFound,),
    "volume_destroy": (exception.VolumeNotFound,),
    "quota_reserve": (exception.OverQuota,),
}


@dataclass
class VolumeEntry:
    """What the clients know of one volume id: its create, the last acknowledged (status, size),
    the states of updates with unknown outcome, and the destroys."""

    project: str
    metadata: dict[str, str]
    created: bool | None  # True: acknowledged; None: unknown outcome
    last: tuple[str, int]
    maybe: set[tuple[str, int]] = field(default_factory=set)
    destroyed: int = 0
    destroy_unknown: bool = False
    not_found: bool = False  # a read or update of this volume answered VolumeNotFound


class Ledger:
    """The clients' record of acknowledged outcomes (thread-safe), and the check against the database."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.projects = [f"lf-{tag}-{n}" for n in range(PROJECTS)]
        self.lock = threading.Lock()
        self.volumes: dict[str, VolumeEntry] = {}
        self.pools: dict[str, list[str]] = {p: [] for p in self.projects}
        self.committed: Counter[tuple[str, str]] = Counter()
        self.settled: set[str] = set()  # reservation uuids committed or rolled back
        self.pending: list[tuple[str, dict, list[str], dict[str, int]]] = []  # settles, outcome unknown
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.unexpected: list[tuple[str, str]] = []  # (request id, what)
        self.sent: dict[str, tuple[str, object]] = {}  # request id: (function, what it wrote)
        self.doubtful_reserves = 0  # quota_reserve calls that may have left reservations behind
        self.quotas: dict[str, dict[str, int]] = {}
        self.fault_at = self.seconds = 0.0

    def call(self, name: str, method, ctx: dict, *args, wrote: object = None) -> tuple[str, object]:
        """Run one client call under a request id of its own; return ``("ok", reply)``,
        ``("unknown", err)``, ``("failed", err)`` (an expected error) or ``("unexpected", err)``."""
        request_id = f"req-{uuid.uuid4()}"
        with self.lock:
            self.sent[request_id] = (name, wrote)
        try:
            reply = method({**ctx, "request_id": request_id}, *args)
        except UNKNOWN as err:
            outcome, result = "unknown", err
        except EXPECTED.get(name, ()) as err:
            outcome, result = "failed", err
        except Exception as err:  # recorded, then the test fails on it
            with self.lock:
                self.unexpected.append((request_id, f"{name}: {type(err).__name__}: {str(err)[:200]}"))
            outcome, result = "unexpected", err
        else:
            outcome, result = "ok", reply
        with self.lock:
            self.outcomes[name, outcome if outcome != "failed" else type(result).__name__] += 1
            self.doubtful_reserves += name == "quota_reserve" and outcome == "unknown"
        return outcome, result

    def deliveries(self, log: str) -> tuple[set[str], int]:
        """Return the clients' write requests the daemon's log shows committed more than once, and
        how many deliveries of them it did not run again: a redelivery (outcome ``Redelivered``) or
        a retry answered from its key's record (``KeyTaken``)."""
        runs: Counter[str] = Counter()
        dropped = 0
        for request_id, name, outcome in CALL_LINE.findall(log):
            if request_id in self.sent and name in WRITES:
                dropped += outcome in ("Redelivered", "KeyTaken")
                runs[request_id] += outcome in COMMITTED
        return {request_id for request_id, n in runs.items() if n > 1}, dropped

    def count(self, *, unknown: bool) -> int:
        """Return how many calls had an unknown outcome (``unknown``), or an answer."""
        with self.lock:
            return sum(n for (_, outcome), n in self.outcomes.items() if (outcome == "unknown") == unknown)

    def problems(self, engine: sa.Engine) -> list[str]:
        """Compare the database with the ledger; return every mismatch."""
        with engine.connect() as conn:
            volumes = sa.select(Volume).where(Volume.project_id.in_(self.projects))
            rows = {r.id: r for r in conn.execute(volumes)}
            meta: dict[str, list] = {}
            for m in conn.execute(sa.select(VolumeMetadata).where(VolumeMetadata.volume_id.in_(list(rows)))):
                meta.setdefault(m.volume_id, []).append((m.key, m.value, m.deleted))
            usages = sa.select(QuotaUsage).where(
                QuotaUsage.project_id.in_(self.projects), ~QuotaUsage.deleted
            )
            live_usages = list(conn.execute(usages))
        found = [f"volume {vid} was never created by a client" for vid in set(rows) - set(self.volumes)]
        for vid, entry in self.volumes.items():
            row = rows.get(vid)
            if row is None:
                found += [f"volume {vid}: acknowledged create lost"] if entry.created else []
                continue
            if (row.status, row.size) not in {entry.last} | entry.maybe:
                found.append(f"volume {vid}: {(row.status, row.size)} not in {entry.last} | {entry.maybe}")
            if entry.destroyed > 1:
                found.append(f"volume {vid}: {entry.destroyed} destroys acknowledged")
            if row.deleted != bool(entry.destroyed) and not entry.destroy_unknown:
                found.append(f"volume {vid}: deleted={row.deleted}, {entry.destroyed} destroys acknowledged")
            if entry.not_found and entry.created and not row.deleted:
                found.append(f"volume {vid}: VolumeNotFound answered for a live volume")
            wanted = sorted((k, v, row.deleted) for k, v in entry.metadata.items())
            if sorted(meta.get(vid, [])) != wanted:
                found.append(f"volume {vid}: metadata {meta.get(vid)} instead of {wanted}")
        usage: dict[tuple[str, str], tuple[int, int]] = {}
        for u in live_usages:
            if (u.project_id, u.resource) in usage:
                found.append(f"{u.project_id}/{u.resource}: two live usage rows")
            usage[u.project_id, u.resource] = (u.in_use, u.reserved)
        for project in self.projects:  # no usage row: no quota_reserve of the project ever ran
            for resource, limit in LIMITS.items():
                in_use, reserved = usage.get((project, resource), (0, 0))
                if (in_use, reserved) != (self.committed[project, resource], 0) or in_use > limit:
                    found.append(
                        f"{project}/{resource}: in_use {in_use} reserved {reserved}, limit {limit}, "
                        f"ledger: {self.committed[project, resource]} committed"
                    )
        return found


def client_loop(ledger: Ledger, client: Client, index: int, stop: threading.Event) -> None:
    """One client thread's mixed workload, until ``stop``."""
    rng = random.Random(index)
    project = ledger.projects[index % PROJECTS]
    user = {"user_id": f"u{index}", "project_id": project, "roles": ["member"]}
    own: list[str] = []
    quotas = ledger.quotas[project]
    while not stop.is_set():
        op = rng.choices(["read", "create", "update", "destroy", "quota"], [30, 20, 20, 8, 22])[0]
        with ledger.lock:
            pool = ledger.pools[project]
            some = rng.choice(pool) if pool else None
        if op == "create" or some is None:
            create(ledger, client, rng, project, own)
        elif op == "read":
            outcome, reply = ledger.call("volume_get", client.volume_get, ADMIN, some)
            entry = ledger.volumes[some]
            if outcome == "ok" and reply["metadata"] != entry.metadata:
                with ledger.lock:
                    ledger.unexpected.append(("", f"volume_get {some}: half-written {reply['metadata']}"))
            if outcome == "failed":
                entry.not_found = True
        elif op == "update" and own:
            vid = rng.choice(own)
            state = (rng.choice(["available", "in-use", "error", "attaching"]), rng.randint(1, 500))
            values = {"status": state[0], "size": state[1]}
            outcome, _ = ledger.call(
                "volume_update", client.volume_update, ADMIN, vid, values, wrote=(vid, state)
            )
            entry = ledger.volumes[vid]
            if outcome == "ok":
                entry.last = state
            elif outcome == "unknown":
                entry.maybe.add(state)
            elif outcome == "failed":
                entry.not_found = True
        elif op == "destroy":
            outcome, _ = ledger.call("volume_destroy", client.volume_destroy, ADMIN, some, wrote=some)
            with ledger.lock:
                ledger.volumes[some].destroyed += outcome == "ok"
                ledger.volumes[some].destroy_unknown |= outcome == "unknown"
        else:
            reserve(ledger, client, rng, user, quotas)


def create(ledger: Ledger, client: Client, rng: random.Random, project: str, own: list[str]) -> None:
    """Create a volume with a new caller-chosen id and metadata, in one call."""
    vid = str(uuid.uuid4())
    metadata = {"owner": project, "token": vid[:8], "n": str(rng.randint(0, 9))}
    state = ("creating", rng.randint(1, 500))
    values = {"id": vid, "project_id": project, "status": state[0], "size": state[1], "metadata": metadata}
    outcome, reply = ledger.call("volume_create", client.volume_create, ADMIN, values, wrote=vid)
    if outcome == "ok" and (reply["id"], reply["status"], reply["size"]) != (vid, *state):
        with ledger.lock:
            ledger.unexpected.append(("", f"volume_create {vid} replied {reply}"))
    with ledger.lock:
        ledger.volumes[vid] = VolumeEntry(project, metadata, True if outcome == "ok" else None, state)
        ledger.pools[project].append(vid)
    own.append(vid)


def reserve(ledger: Ledger, client: Client, rng: random.Random, user: dict, quotas: dict) -> None:
    """Reserve widgets and gadgets as the project's user, then commit (60 %) or roll back."""
    deltas = {"widgets": rng.randint(1, 3), "gadgets": rng.randint(0, 2)}
    outcome, uuids = ledger.call("quota_reserve", client.quota_reserve, user, list(LIMITS), quotas, deltas)
    if outcome != "ok":
        return
    action = SETTLES[0] if rng.random() < 0.6 else SETTLES[1]
    settle(ledger, client, action, user, uuids, deltas)


def settle(ledger: Ledger, client: Client, action: str, ctx: dict, uuids: list[str], deltas: dict) -> str:
    """Commit or roll back reservations; an unknown outcome is kept to be settled again (idempotent)."""
    outcome, _ = ledger.call(action, getattr(client, action), ctx, uuids)
    with ledger.lock:
        if outcome == "ok":
            ledger.settled.update(uuids)
            for resource, delta in deltas.items() if action == SETTLES[0] else ():
                ledger.committed[ctx["project_id"], resource] += delta
        elif outcome == "unknown":
            ledger.pending.append((action, ctx, uuids, deltas))
    return outcome


def run_load(worker: Daemon, transport, seconds: float, timeout: float, fault=None) -> Ledger:
    """Set the projects' quotas, run THREADS clients (client timeout ``timeout``) for ``seconds``
    and, with ``fault``, call it once 20 calls are answered and keep the load on 4 s after it;
    return the ledger once every thread is done."""
    ledger = Ledger()
    admin = Client(transport, topic=worker.topic, timeout=30)

    def set_quotas(project: str) -> None:
        for resource, limit in LIMITS.items():
            admin.quota_create(ADMIN, project, resource, limit)
        quotas = admin.quota_get_all_by_project(ADMIN, project)
        assert quotas.pop("project_id") == project and quotas == LIMITS
        ledger.quotas[project] = quotas

    with ThreadPoolExecutor(PROJECTS) as pool:
        list(pool.map(set_quotas, ledger.projects))
    stop = threading.Event()
    clients = [
        Client(transport, topic=worker.topic, timeout=timeout, retries=RETRIES, call_deadline=CALL_DEADLINE)
        for _ in range(THREADS)
    ]
    threads = [threading.Thread(target=client_loop, args=(ledger, c, i, stop)) for i, c in enumerate(clients)]
    started = end = time.monotonic()
    for thread in threads:
        thread.start()
    if fault is not None:
        wait_for(lambda: ledger.count(unknown=False) >= 20, timeout=60)
        fault()
        ledger.fault_at, end = time.monotonic() - started, time.monotonic() + 4
    stop.wait(max(started + seconds, end) - time.monotonic())  # the load's duration, not a race
    stop.set()
    for thread in threads:
        thread.join(timeout=CALL_DEADLINE + 30)
    assert not any(t.is_alive() for t in threads), "a client thread never returned"
    ledger.seconds = time.monotonic() - started
    return ledger


def settle_and_check(ledger: Ledger, worker: Daemon, transport, database_url: str) -> int:
    """Check that no write request ran twice, settle again the reservations whose commit/rollback
    had an unknown outcome (idempotent), roll back those of quota_reserve calls with unknown
    outcome, and compare the database with the ledger; return how many redelivered requests the
    daemon dropped (each already ran once)."""
    twice, dropped = ledger.deliveries(worker.log)
    assert not twice, (
        f"{len(twice)} write requests committed twice: {sorted(ledger.sent[r][0] for r in twice)}"
    )
    unexpected = [what for _, what in ledger.unexpected]
    assert not unexpected, unexpected[:10]
    client = Client(transport, topic=worker.topic, timeout=30)
    pending, ledger.pending = ledger.pending, []
    for action, ctx, uuids, deltas in pending:
        assert settle(ledger, client, action, ctx, uuids, deltas) == "ok"
    engine = sa.create_engine(database_url)
    try:
        live = sa.select(Reservation.uuid).where(
            Reservation.project_id.in_(ledger.projects), ~Reservation.deleted
        )
        with engine.connect() as conn:
            live_uuids = conn.execute(live).scalars().all()
        assert not set(live_uuids) & ledger.settled, (
            "an acknowledged commit/rollback left its reservation live"
        )
        assert len(live_uuids) <= 2 * ledger.doubtful_reserves, live_uuids
        if live_uuids:
            client.reservation_rollback(ADMIN, live_uuids)
        problems = ledger.problems(engine)
        with engine.connect() as conn:
            assert conn.execute(live).all() == []
    finally:
        engine.dispose()
    assert not problems, f"{len(problems)} mismatches: {problems[:20]}"
    return dropped
