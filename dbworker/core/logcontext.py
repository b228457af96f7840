"""Request ids on every log line of a call, through oslo.log's per-thread request context.

oslo.log's formatter prefixes each line with the thread's current ``oslo_context`` (request id,
user, project). The RPC edge and the in-process API run each call inside :func:`call_scope`, so
every line the call writes (the dispatcher's, a handler's, a library's) names its request, and no
message repeats the request id itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from oslo_context import context as oslo_context
from oslo_log import formatters

from dbworker.core.context import RequestContext


@contextmanager
def call_scope(ctx: RequestContext) -> Iterator[None]:
    """Make ``ctx`` the thread's logging context while the block runs, then clear it."""
    oslo_context.RequestContext(
        request_id=ctx.request_id,
        global_request_id=ctx.global_request_id,
        user_id=ctx.user_id,
        project_id=ctx.project_id,
        is_admin=ctx.is_admin,
        overwrite=True,
    )
    try:
        yield
    finally:
        # oslo.context has no public way to clear its thread-local store.
        oslo_context._request_store.__dict__.pop("context", None)


class CallLogFormatter(formatters.ContextFormatter):
    """oslo.log's ``ContextFormatter``, skipping the ISO timestamp (``%(isotime)s``) when no
    configured format prints it: oslo.log builds a local-timezone object for it on every record,
    a measurable part of each call's log line. Output is otherwise identical. The formats are read
    once (a worker process is replaced on SIGHUP, so it never sees them change)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conf = self.conf
        formats = (
            conf.logging_context_format_string,
            conf.logging_default_format_string,
            conf.logging_debug_format_suffix,
            conf.logging_exception_prefix,
        )
        self._prints_isotime = any("isotime" in (fmt or "") for fmt in formats)

    def _compute_iso_time(self, record: logging.LogRecord) -> None:
        if self._prints_isotime:
            super()._compute_iso_time(record)


def install_formatter(logger: logging.Logger | None = None) -> None:
    """Replace oslo.log's ``ContextFormatter`` on the handlers of ``logger`` (default: the root
    logger) by :class:`CallLogFormatter`, keeping its project, version, date format and config."""
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter
        if type(current) is formatters.ContextFormatter:
            handler.setFormatter(
                CallLogFormatter(
                    project=current.project,
                    version=current.version,
                    datefmt=current.datefmt,
                    config=current.conf,
                )
            )
