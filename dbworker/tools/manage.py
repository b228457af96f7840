"""``dbworker-manage``: the operator's commands, configured like the worker (``--config-file``).

``db sync`` creates or upgrades the schema, ``db version`` prints its revision, ``db stamp REV``
records a revision for a schema brought there by hand, ``db purge --age-in-days N`` hard-deletes
rows soft-deleted more than N days ago (and ``rpc_calls`` records older than N days, at least an
hour). ``call FUNCTION '{json kwargs}'`` sends one call to a running worker
(``[DEFAULT] transport_url``, ``[dbworker] topic``) and prints its JSON reply. ``metrics`` prints
the host's running daemon's metrics (``[dbworker] metrics_host``, ``metrics_port``) per function.

Each command category adds its parsers through one function in :data:`CATEGORIES`; a command is
``fn(conf) -> exit status`` and prints its output with :func:`_out`. Expected failures (bad config,
an unreachable database or broker, a schema that cannot be upgraded, an error reply) print one line
on stderr and exit 1; bad arguments exit 2. Output into a pipe whose reader has gone (``... | head``)
ends the command quietly with status 141 (:data:`STDOUT_CLOSED`). Credentials in URLs are masked in
every message.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # futurist imports it if installed

from oslo_service import backend as _backend  # noqa: E402

_backend.init_backend(_backend.BackendType.THREADING)  # before anything imports oslo_messaging

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

import alembic.util  # noqa: E402
import oslo_messaging  # noqa: E402
import sqlalchemy.exc  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_db import exception as db_exc  # noqa: E402
from oslo_messaging import opts as messaging_opts  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from dbworker import __version__, client, exception, options, schema  # noqa: E402
from dbworker.daemon import masking  # noqa: E402
from dbworker.protocol import wire  # noqa: E402
from dbworker.session import make_engine  # noqa: E402
from dbworker.tools import metrics_report  # noqa: E402
from dbworker.tools.purge import purge  # noqa: E402

PROG = "dbworker-manage"

Command = Callable[[cfg.ConfigOpts], int]


class CommandError(Exception):
    """An expected failure of a command: its message is all the operator needs."""

    status = 1


class UsageError(CommandError):
    """Arguments that do not make sense together (exit status 2, like argparse's own errors)."""

    status = 2


#: Exit status when stdout is a pipe that its reader closed before the output was written
#: (``dbworker-manage call ... | head -c 10``): 128 + SIGPIPE, the status a shell reports for a
#: writer killed by SIGPIPE (``cat``, ``yes``), so ``set -o pipefail`` treats dbworker-manage like
#: any other tool. Nothing is printed on stderr: the reader chose to stop reading.
STDOUT_CLOSED = 128 + signal.SIGPIPE


class StdoutClosed(Exception):
    """stdout's reader has gone: the rest of the output cannot be written."""


def _out(text: str) -> None:
    """Print one line of a command's output; raise ``StdoutClosed`` if the reader has gone.

    Flushed at once, so a closed pipe shows here rather than when the interpreter exits.
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise StdoutClosed from None


# --- db -----------------------------------------------------------------------------------------
def db_sync(config: cfg.ConfigOpts) -> int:
    """Create or upgrade the schema to the newest revision."""
    engine = _engine(config)
    before = schema.current(engine)
    schema.upgrade(engine)
    after = schema.current(engine)
    if before == after:
        _out(f"Database schema is at revision {after} (head); nothing to do.")
    else:
        _out(f"Database schema upgraded from {before or 'none'} to {after}.")
    return 0


def db_version(config: cfg.ConfigOpts) -> int:
    """Print the schema's revision, or ``none`` when the database has no schema yet."""
    _out(schema.current(_engine(config)) or "none")
    return 0


def db_stamp(config: cfg.ConfigOpts) -> int:
    """Record a revision without running migrations."""
    schema.stamp(_engine(config), config.command.revision)
    _out(f"Database schema stamped at revision {config.command.revision}.")
    return 0


def db_purge(config: cfg.ConfigOpts) -> int:
    """Hard-delete rows soft-deleted more than ``--age-in-days`` days ago, and the records of RPC
    write calls older than that (at least an hour); print counts."""
    age = config.command.age_in_days
    if age < 0:
        raise CommandError("--age-in-days must be 0 or more")
    engine = _engine(config)
    if not schema.is_current(engine):
        raise CommandError("the database schema is not at the newest revision; run `dbworker-manage db sync`")
    for table, count in purge(engine, timedelta(days=age)).items():
        _out(f"{table}: {count}")
    return 0


def _add_db_parsers(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="Manage the database schema and its rows.")
    actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("sync", help=db_sync.__doc__).set_defaults(fn=db_sync)
    actions.add_parser("version", help=db_version.__doc__).set_defaults(fn=db_version)
    stamp = actions.add_parser("stamp", help=db_stamp.__doc__)
    stamp.add_argument("revision", help="The revision the schema is at, e.g. 0001.")
    stamp.set_defaults(fn=db_stamp)
    purge_parser = actions.add_parser("purge", help=db_purge.__doc__)
    purge_parser.add_argument("--age-in-days", type=int, required=True, metavar="N")
    purge_parser.set_defaults(fn=db_purge)


# --- call ---------------------------------------------------------------------------------------
#: Times ``call`` retries sending to an unreachable broker before it gives up (oslo's default: forever).
BROKER_RETRIES = 2
#: Seconds ``call`` waits beyond ``--timeout`` before it calls the broker unreachable: oslo.messaging
#: retries connecting its reply queue forever, so the call itself would never return.
BROKER_GRACE = 3.0


def call(config: cfg.ConfigOpts) -> int:
    """Call FUNCTION on a running worker with JSON keyword arguments; print the JSON reply."""
    args = config.command
    kwargs = _json_object(args.kwargs)
    context = _call_context(args)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    _register_messaging_opts(config)
    _log_masked_warnings()
    try:
        reply = _send(config, args.function, context, kwargs, timeout=args.timeout)
    except exception.CinderException as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        print(json.dumps(err.kwargs, sort_keys=True), file=sys.stderr)
        return 1
    _out(json.dumps(wire.encode(reply), indent=2, sort_keys=True))
    return 0


def _send(
    config: cfg.ConfigOpts,
    function: str,
    context: dict[str, Any],
    kwargs: dict[str, Any],
    *,
    timeout: float | None,
) -> Any:
    """Return the worker's reply (datetimes decoded); raise its typed error, or ``CommandError``
    naming what went wrong on the way (no worker, no such method, no broker)."""
    topic = config.dbworker.topic
    timeout = timeout if timeout is not None else config.dbworker.rpc_timeout
    transport = None
    try:
        transport = client.get_transport(config)
        # One attempt (retries=0): an operator's poke reports what happened within --timeout, and
        # the worker still gets the call's deadline and, for a write, an idempotency key.
        api = client.Client(transport, topic=topic, timeout=timeout, retry=BROKER_RETRIES, retries=0)
        return _within(timeout + BROKER_GRACE, api.call, context, function, **kwargs)
    except TimeoutError:
        transport = None  # its reply queue is still connecting, holding a lock cleanup() would wait on
        hosts = ", ".join(f"{h.hostname}:{h.port}" for h in oslo_messaging.TransportURL.parse(config).hosts)
        raise CommandError(
            f"could not send the call within {timeout:g} seconds: the message broker "
            f"({hosts or '[DEFAULT] transport_url'}) is unreachable"
        ) from None
    except oslo_messaging.NoSuchMethod:
        raise CommandError(f"the worker does not serve {function!r} (NoSuchMethod)") from None
    except oslo_messaging.MessagingTimeout:
        raise CommandError(
            f"no worker on topic {topic!r} answered within {timeout:g} seconds (MessagingTimeout)"
        ) from None
    except oslo_messaging.RemoteError as err:
        raise CommandError(f"the worker failed: {err.exc_type}: {err.value}") from None
    except oslo_messaging.MessagingException as err:
        raise CommandError(f"messaging error: {type(err).__name__}: {_first_line(err)}") from None
    finally:
        if transport is not None:
            transport.cleanup()


def _within(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Return ``fn(*args, **kwargs)`` run in a daemon thread; raise its error, or ``TimeoutError``
    when it has not returned within ``seconds`` (the thread is left to die with the process)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name=f"{PROG}-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _json_object(text: str) -> dict[str, Any]:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"the keyword arguments are not JSON: {err}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"the keyword arguments must be a JSON object, not {type(kwargs).__name__}")
    return kwargs


def _call_context(args: Any) -> dict[str, Any]:
    ids = {"user_id": args.user_id, "project_id": args.project_id}
    if args.admin and any(ids.values()):
        raise UsageError("--admin cannot be combined with --project-id/--user-id")
    if any(ids.values()) and not all(ids.values()):
        raise UsageError("--project-id and --user-id go together")
    if args.admin:
        return {"is_admin": True, "roles": ["admin"]}
    return ids if all(ids.values()) else {}


def _log_masked_warnings() -> None:
    """Show the libraries' warnings (a broker connection retrying) on stderr, credentials masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    handler.addFilter(masking.MaskingFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _register_messaging_opts(config: cfg.ConfigOpts) -> None:
    """Register oslo.messaging's options with the worker's default ``transport_url``."""
    for group, opts in messaging_opts.list_opts():
        config.register_opts(opts, group=group)
    config.set_default("transport_url", options.DEFAULT_TRANSPORT_URL)


def _add_call_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "call",
        help=call.__doc__,
        description=f"{call.__doc__} Errors go to stderr: a typed error as 'ClassName: message' "
        "and a JSON line with its kwargs.",
    )
    parser.add_argument("function", metavar="FUNCTION", help="The DB API function, e.g. service_get_all.")
    parser.add_argument(
        "kwargs",
        nargs="?",
        default="{}",
        metavar="JSON",
        help="Its keyword arguments as a JSON object, e.g. '{\"service_id\": 1}' (default: {}).",
    )
    parser.add_argument("--admin", action="store_true", help="Call with an admin context.")
    parser.add_argument("--project-id", metavar="P", help="Call as a user of project P (with --user-id).")
    parser.add_argument("--user-id", metavar="U", help="Call as user U (with --project-id).")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="Seconds to wait for a worker's reply (default: [dbworker] rpc_timeout).",
    )
    parser.set_defaults(fn=call)


def metrics(config: cfg.ConfigOpts) -> int:
    """Print the metrics of the host's running daemon ([dbworker] metrics_host and metrics_port)
    as a table per function and a line per worker."""
    host, port = config.dbworker.metrics_host, config.dbworker.metrics_port
    if not port:
        raise CommandError("metrics are off ([dbworker] metrics_port = 0)")
    try:
        text = metrics_report.fetch(host, port)
    except OSError as err:
        raise CommandError(
            f"no metrics at http://{host}:{port}/metrics ({_first_line(err)}): is dbworker running?"
        ) from None
    _out(metrics_report.summary(text))
    return 0


def _add_metrics_parser(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("metrics", help=metrics.__doc__).set_defaults(fn=metrics)


# --- wiring -------------------------------------------------------------------------------------
#: One function per command category, each adding its sub-parsers (``set_defaults(fn=...)``).
CATEGORIES: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_db_parsers,
    _add_call_parser,
    _add_metrics_parser,
]


def _add_categories(subparsers: argparse._SubParsersAction) -> None:
    for add in CATEGORIES:
        add(subparsers)


COMMAND_OPT = cfg.SubCommandOpt(
    "command", title="Commands", handler=_add_categories, help="The command to run."
)


def _engine(config: cfg.ConfigOpts) -> Engine:
    database = config.database
    return make_engine(database.connection, connection_parameters=database.connection_parameters or "")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 1 failed, 2 bad usage, 141 stdout closed)."""
    config = cfg.CONF
    options.register_opts(config)
    config.register_cli_opt(COMMAND_OPT)
    try:
        config(
            sys.argv[1:] if argv is None else argv,
            project="dbworker",
            prog=PROG,
            version=__version__,
        )
        return config.command.fn(config)
    except StdoutClosed:
        _discard_stdout()
        return STDOUT_CLOSED
    except CommandError as err:
        return _fail(str(err), err.status)
    except (schema.SchemaError, alembic.util.CommandError, cfg.Error) as err:
        return _fail(str(err))
    except (db_exc.DBError, sqlalchemy.exc.SQLAlchemyError) as err:
        return _fail(f"database error: {_first_line(err)}")
    except ModuleNotFoundError as err:
        return _fail(f"{err}: install the database driver for [database] connection")
    finally:
        config.reset()


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is left in its buffer would fail again when the interpreter
    flushes it at exit, and print "Exception ignored ... BrokenPipeError" on stderr."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _first_line(err: BaseException) -> str:
    inner = getattr(err, "inner_exception", None) or err
    return (str(inner).strip().splitlines() or [type(inner).__name__])[0]


def _fail(message: str, status: int = 1) -> int:
    print(f"{PROG}: error: {masking.mask(message)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
