"""CPU time per call of every process a call goes through: server, broker, database, client.

Each group's CPU seconds (utime + stime from ``/proc/<pid>/stat``, through psutil) are read before
and after a throughput row; the difference divided by the row's calls is the group's milliseconds
of CPU per call. Groups:

* ``server``: the process tree serving the row (dbworker's master and its workers, the Celery
  worker, the echo or bare oslo server); ``worker``: for dbworker, its worker processes only;
* ``broker``: RabbitMQ's ``beam.smp`` (found by name; only read, never signalled);
* ``database``: the PostgreSQL postmaster and all its children (backends, WAL writer...), or
  ``mariadbd``: the whole server, so other users' work counts too (run on a quiet machine);
* ``client``: this process (the 16 client threads; for the no-broker rows it is also the server).

A row on a private PostgreSQL primary and hot standby (:mod:`dbworker.tools.pg_replica`) reads
its two servers apart instead: ``database`` is the primary's postmaster tree, ``replica`` the
standby's.

A tree's root counts the CPU of the children it already reaped (``cutime``/``cstime``), so a
backend that exits during a row is still counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psutil

#: Process names of the servers whose CPU is read, by kind.
BROKER_NAMES = ("beam.smp",)
DATABASE_NAMES = {"postgresql": ("postgres",), "mysql": ("mariadbd", "mysqld")}

Group = Callable[[], float]


def _seconds(proc: psutil.Process, reaped: bool = False) -> float:
    """utime + stime of ``proc`` (plus its reaped children's with ``reaped``); 0 if it is gone."""
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0.0
    own = t.user + t.system
    return own + t.children_user + t.children_system if reaped else own


def tree(pid: int) -> Group:
    """The CPU seconds of process ``pid`` and all its descendants."""
    root = psutil.Process(pid)

    def read() -> float:
        with contextlib.suppress(psutil.NoSuchProcess):
            children = root.children(recursive=True)
            return _seconds(root, reaped=True) + sum(_seconds(c) for c in children)
        return 0.0

    return read


def children(pid: int) -> Group:
    """The CPU seconds of the descendants of ``pid`` (a daemon's worker processes)."""
    root = psutil.Process(pid)

    def read() -> float:
        with contextlib.suppress(psutil.NoSuchProcess):
            return sum(_seconds(c) for c in root.children(recursive=True))
        return 0.0

    return read


def by_name(names: tuple[str, ...]) -> Group | None:
    """The CPU seconds of the trees rooted at processes named ``names`` whose parent has another
    name (the postmaster, not its backends); None when no such process runs here."""
    roots = []
    for proc in psutil.process_iter(["name", "ppid"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] in names:
                parent = psutil.Process(proc.info["ppid"]) if proc.info["ppid"] else None
                if parent is None or parent.name() not in names:
                    roots.append(proc.pid)
    if not roots:
        return None
    trees = [tree(pid) for pid in roots]
    return lambda: sum(read() for read in trees)


def this_process() -> Group:
    """The CPU seconds of this process (all its threads)."""
    me = psutil.Process()
    return lambda: _seconds(me)


def groups(
    server_pid: int | None,
    database: str,
    workers: bool = False,
    database_pids: dict[str, int] | None = None,
) -> dict[str, Group]:
    """The groups read around a row served by ``server_pid`` (None: served in this process) on the
    ``database`` kind (``postgresql``/``mysql``); ``workers`` adds dbworker's worker group;
    ``database_pids`` (group name -> postmaster pid) replaces the ``database`` group by those
    servers' trees."""
    out: dict[str, Group] = {}
    if server_pid is not None:
        out["server"] = tree(server_pid)
        if workers:
            out["worker"] = children(server_pid)
    found = by_name(BROKER_NAMES)
    if found is not None:
        out["broker"] = found
    if database_pids:
        out.update({name: tree(pid) for name, pid in database_pids.items()})
    elif (found := by_name(DATABASE_NAMES[database])) is not None:
        out["database"] = found
    out["client"] = this_process()
    return out


def snapshot(readers: dict[str, Group]) -> dict[str, float]:
    """Read every group's CPU seconds now."""
    return {name: read() for name, read in readers.items()}


def per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    """Milliseconds of CPU per call of each group between two snapshots (and their ``total``,
    without ``worker``, which ``server`` already holds)."""
    if not calls:
        return {}
    out = {name: round((after[name] - before[name]) * 1000 / calls, 3) for name in before}
    out["total"] = round(sum(v for k, v in out.items() if k != "worker"), 3)
    return out
