"""For tests and benchmarks: a private PostgreSQL primary and a hot-standby streaming replica.

:class:`StreamingPair` runs two servers of its own from PostgreSQL 15's binaries, in a temporary
directory (``dbworker-pg-replica-*``) that holds both data directories, their logs and their unix
sockets; they listen on 127.0.0.1 only, on free ports, with trust authentication for the user
``postgres``, and each has the (empty) database ``test``. The standby follows the primary through
a physical replication slot, so it catches up after :meth:`StreamingPair.stop_standby`. As root the
servers run as the ``postgres`` system user (``runuser``). Only the servers it started are ever
stopped, through ``pg_ctl`` on its own data directories; :meth:`StreamingPair.stop` also runs at
interpreter exit. Any other PostgreSQL on the machine (the shared one on port 5432) is untouched.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from dbworker.core.replica import wal_end
from dbworker.tools.testing import free_port

#: Where the server binaries are.
BIN = Path("/usr/lib/postgresql/15/bin")
_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
_AS_ROOT = os.geteuid() == 0
#: The primary's settings, after initdb's; the standby copies them and sets its own port.
_PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
fsync = off
"""
_INITDB = "-U postgres --auth=trust --no-sync -E UTF8 --locale=C"
_BASEBACKUP = "-h 127.0.0.1 -U postgres -R -X stream -C -S dbworker_standby -c fast --no-sync"
_HBA = "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"


def available() -> str | None:
    """Returns None when a pair can be started here, else the reason it cannot (for a skip)."""
    missing = [tool for tool in _TOOLS if not (BIN / tool).is_file()]
    if missing:
        return f"PostgreSQL binaries missing from {BIN}: {', '.join(missing)}"
    if _AS_ROOT:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' system user to run the servers"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not on PATH"
    return None


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class StreamingPair:
    """A primary and its hot standby; a context manager (``with StreamingPair() as pair:``)."""

    #: Set by :meth:`start` (AttributeError before), kept after :meth:`stop`: the temporary
    #: directory and the servers' TCP ports on 127.0.0.1.
    directory: Path
    primary_port: int
    standby_port: int

    def __init__(self, *, log_statements: bool = False) -> None:
        self.log_statements = log_statements
        self._running = False

    def __enter__(self) -> StreamingPair:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def primary_url(self) -> str:
        """The SQLAlchemy URL of the primary's database ``test``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port}/test"

    @property
    def standby_url(self) -> str:
        """The SQLAlchemy URL of the standby's database ``test`` (read-only)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.standby_port}/test"

    def start(self) -> None:
        """Create, start and connect both servers; returns once the standby is in recovery and
        accepts connections. Raises RuntimeError (the failing command and its stderr's tail) after
        removing whatever it had started, or when the pair is already running."""
        if self._running:
            raise RuntimeError("the pair is already running")
        self.directory = Path(tempfile.mkdtemp(prefix="dbworker-pg-replica-"))
        self._running = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException as err:
            self.stop()
            if isinstance(err, RuntimeError) or not isinstance(err, Exception):  # KeyboardInterrupt
                raise
            raise RuntimeError(f"starting the PostgreSQL pair failed: {err!r}") from err

    def _start(self) -> None:
        primary, standby = self.directory / "primary", self.directory / "standby"
        if _AS_ROOT:
            shutil.chown(self.directory, "postgres", "postgres")
        self.primary_port = free_port()
        self.standby_port = next(port for port in iter(free_port, None) if port != self.primary_port)
        self._run("initdb", "-D", primary, *_INITDB.split())
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(f"{_PRIMARY_CONF}port = {self.primary_port}\n")
            conf.write(f"unix_socket_directories = '{self.directory}'\n")
        with (primary / "pg_hba.conf").open("a") as hba:
            hba.write(_HBA)
        self._pg_ctl(primary, "start")
        self._sql(self.primary_port, "CREATE DATABASE test", dbname="postgres")
        self._run("pg_basebackup", "-p", self.primary_port, "-D", standby, *_BASEBACKUP.split())
        with (standby / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.standby_port}\nhot_standby = on\n")
            conf.write("log_statement = 'all'\n" if self.log_statements else "")
        self.start_standby()

    def stop(self) -> None:
        """Stop both servers (fast, else immediate) and remove the directory. Idempotent, and safe
        after a partial start; never raises for a server that is already gone."""
        if not self._running:
            return
        for data in (self.directory / "standby", self.directory / "primary"):
            if (data / "postmaster.pid").exists():
                try:
                    self._pg_ctl(data, "stop", "-m", "fast")
                except RuntimeError:
                    with contextlib.suppress(RuntimeError):
                        self._pg_ctl(data, "stop", "-m", "immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
        self._running = False
        atexit.unregister(self.stop)

    def stop_standby(self) -> None:
        """Stop the standby (``pg_ctl stop -m fast``). Raises RuntimeError if pg_ctl fails (as
        when the standby is not running)."""
        self._pg_ctl(self.directory / "standby", "stop", "-m", "fast")

    def start_standby(self, timeout: float = 60) -> None:
        """Start the standby; returns once it accepts connections and is in recovery. Raises
        RuntimeError if pg_ctl fails or the standby is not ready within ``timeout`` seconds."""
        self._pg_ctl(self.directory / "standby", "start")
        deadline, error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                if self._sql(self.standby_port, "SELECT pg_is_in_recovery()"):
                    return
            except psycopg.OperationalError as err:
                error = err
            time.sleep(0.05)
        raise RuntimeError(f"standby not ready after {timeout} s: {error}\n{_tail(self.standby_log())}")

    def pause_replay(self) -> None:
        """Pause WAL replay on the standby: no further record is applied once this returns."""
        self._sql(self.standby_port, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """Resume WAL replay on the standby."""
        self._sql(self.standby_port, "SELECT pg_wal_replay_resume()")

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Wait until the standby has replayed the primary's WAL as far as its flushed position,
        read once, first. Raises TimeoutError when it has not after ``timeout`` seconds, and
        psycopg.OperationalError when either server is down."""
        lsn = wal_end(int(self._sql(self.primary_port, "SELECT pg_current_wal_flush_lsn() - '0/0'")))
        query = "SELECT coalesce(pg_last_wal_replay_lsn() - '0/0' >= %s, false)"
        deadline = time.monotonic() + timeout
        while not self._sql(self.standby_port, query, lsn):
            if time.monotonic() >= deadline:
                replayed = self._sql(self.standby_port, "SELECT pg_last_wal_replay_lsn()::text")
                target = f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
                raise TimeoutError(f"the standby replayed up to {replayed}, not {target}, in {timeout} s")
            time.sleep(0.02)

    def postmaster_pid(self, server: str) -> int:
        """Returns the pid of the ``"primary"`` or ``"standby"`` server's postmaster (its
        ``postmaster.pid``). Raises OSError when that server is not running."""
        return int((self.directory / server / "postmaster.pid").read_text().split()[0])

    def standby_log(self) -> str:
        """Returns the text of the standby server's log (its statements with log_statements)."""
        return (self.directory / "standby.log").read_text(errors="replace")

    def _sql(self, port: int, query: str, *params: object, dbname: str = "test") -> Any:
        """Returns the first column of the first row (None without rows); raises psycopg.Error."""
        conninfo = f"host=127.0.0.1 port={port} user=postgres dbname={dbname} connect_timeout=5"
        # The helper's own statements stay out of a log_statements standby's log.
        with psycopg.connect(conninfo, autocommit=True, options="-c log_statement=none") as conn:
            cursor = conn.execute(query.encode(), params or None)
            row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None

    def _pg_ctl(self, data: Path, action: str, *args: str) -> None:
        log = self.directory / f"{data.name}.log"
        self._run("pg_ctl", action, "-D", data, "-w", "-t", "60", "-l", log, *args, log=log)

    def _run(self, tool: str, *args: object, log: Path | None = None) -> None:
        command = [str(BIN / tool), *map(str, args)]
        if _AS_ROOT:
            command = ["runuser", "-u", "postgres", "--", *command]
        try:
            done = subprocess.run(command, cwd=self.directory, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{' '.join(command)} timed out after {err.timeout} s") from err
        if done.returncode != 0:
            logged = _tail(log.read_text(errors="replace")) if log and log.exists() else ""
            output = _tail(done.stderr or done.stdout)
            raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{output}\n{logged}")
