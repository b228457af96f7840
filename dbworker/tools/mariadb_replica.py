"""For tests and benchmarks: a private MariaDB primary and a replica that follows it by GTID.

:class:`ReplicaPair` runs two servers of its own (``mariadbd``, MariaDB 10.11), in a temporary
directory (``dbworker-mariadb-replica-*``) that holds both data directories, their error logs,
sockets and pid files; they listen on 127.0.0.1 only, on free ports, with the user ``root`` and no
password, and each has the database ``test`` (created on the primary, replicated). The primary
writes a ROW binlog (server id 1); the replica (server id 2, ``read_only``) replicates from it with
``MASTER_USE_GTID=slave_pos``, so it catches up after a stop. As root the servers run as the
``mysql`` system user (``--user=mysql``). Only the servers it started are ever stopped, through
their own process handles; :meth:`ReplicaPair.stop` also runs at interpreter exit. Any other
MariaDB on the machine (the shared one on port 3306) is untouched.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

from dbworker.tools.testing import free_port

#: The server binaries.
INSTALL_DB, MARIADBD = Path("/usr/bin/mariadb-install-db"), Path("/usr/sbin/mariadbd")
_AS_ROOT = os.geteuid() == 0
_INSTALL = "--no-defaults --user=mysql --auth-root-authentication-method=normal --skip-test-db"
_SERVER = (
    "--no-defaults --user=mysql --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=32M"
    " --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 --skip-innodb-doublewrite"
)
_ROLES = {
    "primary": "--server-id=1 --log-bin=primary-bin --binlog-format=ROW",
    "replica": "--server-id=2 --read-only --relay-log=replica-relay-bin",
}
_CHANGE_MASTER = (
    "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port},"
    " MASTER_USER='root', MASTER_USE_GTID=slave_pos"
)
#: Each server's files in the directory: ``--datadir=<dir>/primary``, ``--socket=<dir>/primary.sock``...
_FILES = (("datadir", ""), ("socket", ".sock"), ("pid-file", ".pid"), ("log-error", ".err"))


def available() -> str | None:
    """Returns None when a pair can be started here, else the reason it cannot (for a skip)."""
    missing = [str(path) for path in (INSTALL_DB, MARIADBD) if not path.is_file()]
    if missing:
        return f"MariaDB binaries missing: {', '.join(missing)}"
    if _AS_ROOT:
        try:
            pwd.getpwnam("mysql")
        except KeyError:
            return "running as root and there is no 'mysql' system user to run the servers"
    return None


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class ReplicaPair:
    """A primary and its replica; a context manager (``with ReplicaPair() as pair:``)."""

    #: Set by :meth:`start` (AttributeError before), kept after :meth:`stop`: the temporary
    #: directory and the servers' TCP ports on 127.0.0.1.
    directory: Path
    primary_port: int
    replica_port: int

    def __init__(self, *, general_log: bool = False) -> None:
        self.general_log = general_log
        self._running = False
        self._servers: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> ReplicaPair:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def primary_url(self) -> str:
        """The SQLAlchemy URL of the primary's database ``test``."""
        return f"mysql+pymysql://root@127.0.0.1:{self.primary_port}/test"

    @property
    def replica_url(self) -> str:
        """The SQLAlchemy URL of the replica's database ``test`` (``read_only``)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.replica_port}/test"

    def start(self) -> None:
        """Create and start both servers and the replication; returns once the replica holds the
        database ``test``. Raises RuntimeError (the failing command and its log's tail) after
        removing whatever it had started, or when the pair is already running."""
        if self._running:
            raise RuntimeError("the pair is already running")
        self.directory = Path(tempfile.mkdtemp(prefix="dbworker-mariadb-replica-"))
        self._running = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException as err:
            self.stop()
            if isinstance(err, RuntimeError) or not isinstance(err, Exception):  # KeyboardInterrupt
                raise
            raise RuntimeError(f"starting the MariaDB pair failed: {err!r}") from err

    def _start(self) -> None:
        if _AS_ROOT:
            shutil.chown(self.directory, "mysql", "mysql")
        self.primary_port = free_port()
        self.replica_port = next(port for port in iter(free_port, None) if port != self.primary_port)
        for role in ("primary", "replica"):
            command = [str(INSTALL_DB), *_INSTALL.split(), f"--datadir={self.directory / role}"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                output = _tail(done.stderr or done.stdout)
                raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{output}")
        self._launch("primary")
        self._sql(self.primary_port, "CREATE DATABASE test")
        self.start_replica()
        self._sql(self.replica_port, _CHANGE_MASTER.format(port=self.primary_port))
        self.start_replication()
        self.wait_caught_up()

    def stop(self) -> None:
        """Stop both servers (SIGTERM, else SIGKILL) and remove the directory. Idempotent, and safe
        after a partial start; never raises for a server that is already gone."""
        if not self._running:
            return
        for role in ("replica", "primary"):
            self._terminate(role)
        shutil.rmtree(self.directory, ignore_errors=True)
        self._running = False
        atexit.unregister(self.stop)

    @property
    def replica_running(self) -> bool:
        """True while the replica server this pair started is running."""
        server = self._servers.get("replica")
        return server is not None and server.poll() is None

    def stop_replica(self) -> None:
        """Stop the replica server (a clean shutdown); its replication resumes when it restarts."""
        self._terminate("replica")

    def start_replica(self) -> None:
        """Start the replica server; returns once it accepts connections. Raises RuntimeError if
        it does not within a minute, or when it is already running."""
        self._launch("replica")

    def stop_replication(self) -> None:
        """``STOP SLAVE`` on the replica: its IO and SQL threads stop (the server keeps serving)."""
        self._sql(self.replica_port, "STOP SLAVE")

    def start_replication(self) -> None:
        """``START SLAVE`` on the replica: its IO and SQL threads start again."""
        self._sql(self.replica_port, "START SLAVE")

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Wait until the replica has applied every transaction of the primary's binlog (its
        ``@@gtid_slave_pos`` covers the primary's ``@@gtid_binlog_pos``, read once, first).
        Raises TimeoutError when it has not after ``timeout`` seconds, and pymysql.Error when
        either server is down."""
        position = self._sql(self.primary_port, "SELECT @@gtid_binlog_pos")
        if self._sql(self.replica_port, "SELECT MASTER_GTID_WAIT(%s, %s)", position, timeout) != 0:
            applied = self._sql(self.replica_port, "SELECT @@gtid_slave_pos")
            raise TimeoutError(f"the replica applied up to {applied!r}, not {position!r}, in {timeout} s")

    def replica_log(self) -> str:
        """Returns the replica's general query log (empty without ``general_log``)."""
        return _read(self.directory / "replica.general.log")

    def _launch(self, role: str, timeout: float = 60) -> None:
        if role in self._servers and self._servers[role].poll() is None:
            raise RuntimeError(f"the {role} is already running")
        port = self.primary_port if role == "primary" else self.replica_port
        base, log = self.directory / role, self.directory / f"{role}.err"
        command = [str(MARIADBD), *_SERVER.split(), *_ROLES[role].split(), f"--port={port}"]
        command += [f"--{name}={base}{suffix}" for name, suffix in _FILES]
        if self.general_log and role == "replica":
            command += ["--general-log", f"--general-log-file={base}.general.log"]
        with log.open("ab") as output:
            self._servers[role] = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline, error = time.monotonic() + timeout, None
        while time.monotonic() < deadline and self._servers[role].poll() is None:
            try:
                self._sql(port, "SELECT 1")
                return
            except pymysql.err.OperationalError as err:
                error = err
            time.sleep(0.05)
        exited = self._servers[role].poll()
        self._terminate(role)
        status = f"exited {exited}" if exited is not None else f"not ready after {timeout} s: {error}"
        raise RuntimeError(f"{' '.join(command)} {status}:\n{_tail(_read(log))}")

    def _terminate(self, role: str) -> None:
        server = self._servers.pop(role, None)
        if server is None or server.poll() is not None:
            return
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def _sql(self, port: int, query: str, *params: object) -> Any:
        """Returns the first column of the first row (None without rows); raises pymysql.Error."""
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=5, autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET SESSION sql_log_off = 1")  # out of the replica's general log
                cursor.execute(query, params or None)
                row = cursor.fetchone()
                return row[0] if row else None
        finally:
            conn.close()
