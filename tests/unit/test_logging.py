"""The worker's log lines: credentials masked (with a fast path that must not miss any secret
oslo masks), and oslo.log's context format unchanged by the formatter that skips the unused ISO
timestamp."""

from __future__ import annotations

import logging

import pytest
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_log import formatters
from oslo_log import log as oslo_log
from oslo_utils import strutils

from dbworker.core.context import RequestContext
from dbworker.core.logcontext import CallLogFormatter, call_scope
from dbworker.daemon.masking import mask

MESSAGES = [
    "volume_get 1.2ms ok",
    "connecting to rabbit://guest:guest@127.0.0.1:5672/",
    "db postgresql+psycopg://u:s3cret@db/cinder unreachable",
    "password=hunter2 in the form",
    '{"adminPass": "abc", "size": 1}',
    "AUTH_TOKEN: abc",
    "the X-Auth-Token header: t0ken",
    "no secret here, only keys: key=value",
    "PrivateKey and private_key=xyz",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_mask_masks_what_oslo_masks_and_url_passwords(message):
    expected = strutils.mask_password(
        message.replace("guest:guest@", "guest:***@").replace("u:s3cret@", "u:***@")
    )
    assert mask(message) == expected
    assert "hunter2" not in mask(message) and "s3cret" not in mask(message)


@pytest.fixture
def log_conf():
    conf = cfg.ConfigOpts()
    oslo_log.register_options(conf)
    conf([])
    return conf


def _record() -> logging.LogRecord:
    return logging.LogRecord(
        "dbworker.core.dispatch", logging.INFO, __file__, 1, "%s %.1fms %s", ("volume_get", 1.25, "ok"), None
    )


@pytest.mark.parametrize("isotime", [False, True])
def test_the_call_log_formatter_prints_what_oslos_context_formatter_prints(log_conf, isotime):
    if isotime:
        log_conf.set_override("logging_context_format_string", "%(isotime)s [%(request_id)s] %(message)s")
    ctx = RequestContext(user_id="u1", project_id="p1", request_id="req-1")
    record = _record()
    with call_scope(ctx):
        ours = CallLogFormatter(project="dbworker", version="1", config=log_conf).format(
            logging.makeLogRecord(dict(record.__dict__))
        )
        oslos = formatters.ContextFormatter(project="dbworker", version="1", config=log_conf).format(
            logging.makeLogRecord(dict(record.__dict__))
        )
    assert ours == oslos and "req-1" in ours and ours.endswith("volume_get 1.2ms ok")
    assert oslo_context.get_current() is None  # the call's scope ended
