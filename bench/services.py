"""The local services a run uses: URLs, a private database per run, and the processes it starts.

Everything a run creates is undone by :class:`Resources` (a context manager): each process it
started is stopped by its own pid (its process group, i.e. the forked workers of a daemon, with it),
each ``bench_<pid>`` database is dropped, also on Ctrl-C and on exceptions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from dbworker.tools.testing import create_database, delete_queues

ROOT = Path(__file__).resolve().parents[1]

URLS = {
    "rabbitmq": ("DBWORKER_BENCH_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/"),
    "postgresql": ("DBWORKER_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("DBWORKER_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def service_url(kind: str) -> str:
    """Return the admin URL of a local service (environment variable, else the local default)."""
    variable, default = URLS[kind]
    return os.environ.get(variable, default)


def unique(prefix: str) -> str:
    """Return a name unique to this run (topics, queues)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Resources(contextlib.ExitStack):
    """Databases and processes of one run, released in reverse order on exit."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def broker_queues(self, transport_url: str, names: list[str]) -> None:
        """Delete the queues ``names`` from the broker when the run ends (after the processes
        using them stopped)."""
        self.callback(delete_queues, transport_url, names)

    def database(self, kind: str, suffix: str = "") -> str:
        """Create ``bench_<pid><suffix>`` on the ``kind`` server; return its URL (dropped on exit)."""
        url, drop = create_database(service_url(kind), f"bench_{os.getpid()}{suffix}")
        self.callback(drop)
        return url

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, source: Path = ROOT
    ) -> Process:
        """Start ``argv`` in a new session (its own process group), logging to ``<name>.log``, in
        the directory ``source`` and with it first on ``PYTHONPATH`` (its ``dbworker`` is the one
        imported: this checkout's, or a reference tree's)."""
        process = Process(name, argv, self.workdir / f"{name}.log", env, source)
        self.callback(process.stop)
        return process

    def write_config(self, name: str, sections: dict[str, dict[str, object]]) -> Path:
        """Write ``<name>.conf`` (INI: section -> option -> value) in the work directory."""
        path = self.workdir / f"{name}.conf"
        path.write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
                for group, values in sections.items()
            )
        )
        return path


class Process:
    """One child process this run started, stopped by its pid (and its process group)."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None, source: Path = ROOT
    ) -> None:
        self.name, self.log = name, log
        self.started = time.monotonic()
        self.started_at = time.time()  # wall clock, to compare with the process's log timestamps
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=source,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(source), **(env or {})},
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group this process leads; SIGKILL it after ``timeout`` seconds."""
        if self.popen.returncode is not None and not _group_alive(self.pid):
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)  # the group's id is the pid of the process we started
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.popen.poll()
                if not _group_alive(self.pid):
                    return
                time.sleep(0.1)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(what: str, attempt: Callable[[], object], process: Process, timeout: float) -> float:
    """Call ``attempt`` until it returns without raising; return the seconds since ``process`` started.

    Raises RuntimeError (with the end of the process's log) if it exits or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise RuntimeError(f"{what}: {process.name} exited\n{process.tail()}")
        try:
            attempt()
            return time.monotonic() - process.started
        except Exception as err:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: no answer after {timeout}s ({err})\n{process.tail()}") from err
        time.sleep(0.02)


def python(*args: str) -> list[str]:
    """Return the argv running this interpreter with ``args`` (warnings off, as operators run it)."""
    return [sys.executable, "-W", "ignore", *args]
