"""Request ids on every log line of a call, through oslo.log's per-thread request context.

oslo.log's formatter prefixes each line with the thread's current ``oslo_context`` (request id,
user, project). The RPC edge and the in-process API run each call inside :func:`call_scope`, so
every line the call writes (the dispatcher's, a handler's, a library's) names its request, and no
message repeats the request id itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from oslo_context import context as oslo_context

from dbworker.context import RequestContext


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
