"""Configuration options: ``[dbworker]`` and dbworker's defaults for oslo.db's ``[database]``.

``register_opts(conf)`` registers them on a ``ConfigOpts``; ``list_opts()`` is the
``oslo.config.opts`` entry point that ``oslo-config-generator`` reads to write ``etc/dbworker.conf``.
Only the daemon (``daemon/``), ``dbworker-manage`` and the client read options; everything below them
takes plain values.
"""

from __future__ import annotations

import copy
import socket

from oslo_config import cfg
from oslo_db import options as db_options

DEFAULT_CONNECTION = "sqlite:///dbworker.sqlite"
DEFAULT_TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
#: dbworker's default for oslo.messaging's ``[DEFAULT] executor_thread_pool_size`` (oslo: 64).
#: One GIL per process: threads only overlap database and broker waits, and each costs CPU per
#: call in GIL hand-offs (bench/analysis.md); processes (``[dbworker] workers``) add CPU.
DEFAULT_THREADS = 8
#: Connections a worker keeps beyond one per thread (health checks, trimming ``rpc_calls``).
POOL_HEADROOM = 2

#: The metrics' default port (``[dbworker] metrics_port``).
DEFAULT_METRICS_PORT = 9583

dbworker_group = cfg.OptGroup(
    "dbworker", title="dbworker", help="The worker that serves Cinder's DB API over RPC."
)

DBWORKER_OPTS = [
    cfg.IntOpt(
        "workers",
        min=1,
        help="Worker processes to run. Default: one per CPU core. Each runs "
        "[DEFAULT] executor_thread_pool_size threads and as many database connections.",
    ),
    cfg.IntOpt(
        "max_deadlock_retries",
        default=5,
        min=0,
        help="Times a call is re-run from the start after a deadlock or a lost database "
        "connection before the caller gets DBBusy or DBUnavailable.",
    ),
    cfg.IntOpt(
        "broker_connect_timeout",
        default=60,
        min=0,
        help="Seconds the worker keeps retrying an unreachable broker at start before it exits.",
    ),
    cfg.IntOpt(
        "delivery_record_age",
        default=3600,
        min=3600,
        help="Seconds a write call's record (table rpc_calls) is kept: a message the broker "
        "delivers again within this time is not run twice, and a call sent again with the same "
        "idempotency key is answered with its recorded outcome (after it, the key runs again). "
        "At least an hour: far above a client's retry window (rpc_call_deadline).",
    ),
    cfg.FloatOpt(
        "deadline_allowance",
        default=2.0,
        min=0,
        help="Seconds a call may be taken after the deadline its caller sent (context key "
        "'deadline') and still run: the most the clocks of a caller's host and a worker's host may "
        "disagree by. A call taken later is not run, and gets no reply.",
    ),
    cfg.IntOpt(
        "delivery_record_trim_interval",
        default=300,
        min=0,
        help="Seconds between two deletions, by each worker process, of the delivery records "
        "older than delivery_record_age (0: never; then run `dbworker-manage db purge`).",
    ),
    cfg.PortOpt(
        "metrics_port",
        default=DEFAULT_METRICS_PORT,
        help="Port of the host's Prometheus metrics (http://metrics_host:metrics_port/metrics), "
        "served by the master process for all its workers; 0: no metrics. A port that cannot be "
        "bound stops the daemon at start.",
    ),
    cfg.HostAddressOpt(
        "metrics_host",
        default="127.0.0.1",
        help="Address the metrics are served on: the loopback by default; an address other hosts "
        "reach exposes call counts and latencies to them.",
    ),
    cfg.FloatOpt(
        "replica_max_lag",
        default=10.0,
        min=0,
        help="Seconds the read replica ([database] slave_connection) may be behind the primary "
        "for a read whose caller opted in (context key 'use_slave') to run there; further behind, "
        "unreachable or not a standby, such reads run on the primary. Measured as a bound (see "
        "the README), checked every replica_check_interval seconds.",
    ),
    cfg.FloatOpt(
        "replica_check_interval",
        default=1.0,
        min=0.1,
        help="Seconds between two checks of the read replica's lag by each worker process. "
        "Keep it well under replica_max_lag: the bound grows by the time since the last check.",
    ),
    cfg.StrOpt("volume_name_template", default="volume-%s", help="Template for a volume's 'name'."),
    cfg.StrOpt("snapshot_name_template", default="snapshot-%s", help="Template for a snapshot's 'name'."),
    cfg.BoolOpt(
        "enable_new_services",
        default=True,
        help="Whether service_create makes new services enabled; false forces disabled=True.",
    ),
    cfg.StrOpt(
        "volume_topic",
        default="cinder-volume",
        help="Topic of the volume services that service_get_all_volume_sorted lists.",
    ),
    cfg.IntOpt(
        "reservation_expire",
        default=86400,
        help="Seconds until a reservation expires when quota_reserve gets expire=null.",
    ),
    cfg.IntOpt(
        "until_refresh",
        default=0,
        min=0,
        help="Reservations until a usage is re-synced (0: never), when quota_reserve gets null.",
    ),
    cfg.IntOpt(
        "max_age",
        default=0,
        min=0,
        help="Seconds between forced usage re-syncs (0: never), when quota_reserve gets null.",
    ),
]

#: ``[DEFAULT]`` options of the daemon (nova's ``host``: the worker also listens on server=host).
DEFAULT_OPTS = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<current hostname>",
        help="Name of this worker host: each worker process also consumes the topic's "
        "server=<host> queue, and health replies name it.",
    ),
]

#: The options dbworker.client reads too (it registers only these on the caller's config).
CLIENT_OPTS = [
    cfg.StrOpt("topic", default="dbworker", help="RPC topic the workers consume and clients call."),
    cfg.IntOpt(
        "rpc_timeout",
        default=60,
        min=1,
        help="Seconds each attempt of a dbworker.client call waits for its reply (less when "
        "rpc_call_deadline is nearer). The attempt carries that deadline (context key 'deadline': "
        "now + this, in seconds since the epoch), after which a worker does not start it.",
    ),
    cfg.IntOpt(
        "rpc_retries",
        default=3,
        min=0,
        help="Times a dbworker.client call is sent again after MessagingTimeout (no reply within "
        "rpc_timeout) or DBUnavailable, before the caller gets that error. Every attempt of a "
        "write carries the same idempotency key (context key 'idempotency_key'), so the worker "
        "runs it at most once and answers a retry with the recorded outcome. Other errors are "
        "never retried; health is never retried. 0: one attempt.",
    ),
    cfg.FloatOpt(
        "rpc_retry_backoff",
        default=0.5,
        min=0,
        help="Seconds before a dbworker.client call's first retry, doubled before each next one "
        "(at most 30); each pause is drawn at random between half and all of that, so callers "
        "that failed together do not retry together.",
    ),
    cfg.IntOpt(
        "rpc_call_deadline",
        default=180,
        min=1,
        help="Seconds a dbworker.client call may take in all, retries and pauses included: an "
        "attempt waits at most the time left, and no retry starts with less than a second (or "
        "rpc_timeout, if shorter) left; the caller then gets the last attempt's error.",
    ),
    cfg.ListOpt(
        "use_slave_for",
        default=[],
        help="Read functions this caller sends with context key 'use_slave' set: it accepts "
        "their replies from the workers' read replica, up to their replica_max_lag seconds "
        "behind its own writes. Naming a write function (always run on the primary) or no "
        "function is an error. Empty: every read runs on the primary, unless a call's context says "
        "use_slave itself.",
    ),
]

#: dbworker's defaults for oslo.db's [database] options (see README: sizing the pools).
DATABASE_DEFAULTS = {
    "connection": DEFAULT_CONNECTION,
    "max_pool_size": DEFAULT_THREADS + POOL_HEADROOM,
    "max_overflow": 2,
    "pool_timeout": 10,
}


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register ``[dbworker]`` and ``[database]`` (with dbworker's defaults) on ``conf``."""
    conf.register_group(dbworker_group)
    conf.register_opts(CLIENT_OPTS + DBWORKER_OPTS, group=dbworker_group)
    conf.register_opts(DEFAULT_OPTS)
    db_options.set_defaults(conf, **DATABASE_DEFAULTS)


#: dbworker's defaults for oslo.messaging options, by group (None: [DEFAULT]).
#: ``rabbit_qos_prefetch_count = 1``: the bounded server accepts a call only when a thread is free,
#: so a busy worker holds at most one delivery that the other workers could have taken.
MESSAGING_DEFAULTS: dict[str | None, dict[str, object]] = {
    None: {"executor_thread_pool_size": DEFAULT_THREADS, "transport_url": DEFAULT_TRANSPORT_URL},
    "oslo_messaging_rabbit": {"rabbit_qos_prefetch_count": 1},
}


def set_messaging_defaults(conf: cfg.ConfigOpts) -> None:
    """Set :data:`MESSAGING_DEFAULTS` on ``conf`` (oslo.messaging's options registered on it)."""
    for group, defaults in MESSAGING_DEFAULTS.items():
        for name, value in defaults.items():
            conf.set_default(name, value, group=group)


def register_client_opts(conf: cfg.ConfigOpts) -> None:
    """Register only the options ``dbworker.client`` reads (``[dbworker] topic`` and ``rpc_*``)."""
    conf.register_group(dbworker_group)
    conf.register_opts(CLIENT_OPTS, group=dbworker_group)


def _database_opts() -> list[cfg.Opt]:
    opts = copy.deepcopy(db_options.database_opts)
    for opt in opts:
        if opt.dest in DATABASE_DEFAULTS:
            opt.default = DATABASE_DEFAULTS[opt.dest]
    return opts


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Return the options dbworker owns, for ``oslo-config-generator``."""
    return [
        ("DEFAULT", DEFAULT_OPTS),
        (dbworker_group.name, CLIENT_OPTS + DBWORKER_OPTS),
        ("database", _database_opts()),
    ]
