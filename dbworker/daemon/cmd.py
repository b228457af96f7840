"""``dbworker --config-file etc/dbworker.conf``: the worker daemon (see :mod:`dbworker.daemon.worker`)."""

from __future__ import annotations

import warnings

# futurist imports eventlet when it is installed (oslo.service pulls it in); dbworker runs native
# threads, so the library's deprecation banner would only mislead an operator reading the journal.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from oslo_service import backend as _backend  # noqa: E402

_backend.init_backend(_backend.BackendType.THREADING)  # before anything imports oslo_messaging

import sys  # noqa: E402

from oslo_config import cfg  # noqa: E402

from dbworker.daemon import metrics, startup, worker  # noqa: E402
from dbworker.daemon.masking import mask  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Check the configuration, database and broker, then run the workers until SIGTERM.

    Exits 1 with a one-line reason on stderr when a startup check fails, before any fork.
    """
    conf = cfg.CONF  # oslo.messaging registers its tracing options only on the global CONF
    try:
        worker.configure(conf, sys.argv[1:] if argv is None else argv)
        startup.check_startup(conf)
        metrics.serve(conf)
        failure = None
    except (startup.StartupError, metrics.MetricsError) as err:
        failure = mask(str(err))
    if failure is not None:
        worker.LOG.error("Not starting: %s", failure)
        if _logs_elsewhere(conf):
            print(f"dbworker: {failure}", file=sys.stderr)
        sys.exit(1)
    launcher = worker.launch(conf)
    sys.exit(launcher.wait())


def _logs_elsewhere(conf: cfg.ConfigOpts) -> bool:
    try:
        return bool(conf.log_file or conf.use_journal or conf.use_syslog)
    except cfg.Error:
        return False
