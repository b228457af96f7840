"""A raw AMQP peer of a dbworker daemon, for hostile-input tests: it publishes anything (oslo
envelopes or not) to the worker's topic with kombu, bypassing oslo.messaging's client, and reads the
replies; and a probe of the worker's health, rows and memory between batches."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import kombu
import sqlalchemy as sa
from daemons import ADMIN, Daemon

from dbworker.tools.testing import kombu_url

CONTROL_EXCHANGE = "openstack"  # oslo.messaging's default [DEFAULT] control_exchange
MB = 1024 * 1024


class Wire:
    """A raw AMQP peer of the worker: publishes anything to its topic and reads the replies sent
    to a private reply queue (decoded from oslo's envelope)."""

    def __init__(self, rabbit_url: str, topic: str) -> None:
        self.topic = topic
        self.connection = kombu.Connection(kombu_url(rabbit_url))
        self.reply_q = f"hostile-reply-{uuid.uuid4().hex}"
        channel = self.connection.channel()
        self.producer = kombu.Producer(channel)
        # One consumer for the peer's lifetime: the queue is exclusive, so auto-deleted when it ends.
        queue = kombu.Queue(
            self.reply_q, exchange=kombu.Exchange("", type="direct"), routing_key=self.reply_q, exclusive=True
        )
        self.consumer = kombu.Consumer(self.connection.channel(), [queue], callbacks=[self._on_reply])
        self.consumer.consume()
        self.replies: dict[str, dict[str, Any]] = {}
        self.sent = 0
        self.calls: dict[str, str] = {}

    def publish(self, body: Any, content_type: str = "application/json", **kwargs: Any) -> None:
        """Publish ``body`` as is: bytes keep ``content_type``, anything else is JSON-encoded."""
        if isinstance(body, bytes):
            kwargs.setdefault("content_encoding", "binary")
            self.producer.publish(
                body, exchange=CONTROL_EXCHANGE, routing_key=self.topic, content_type=content_type, **kwargs
            )
        else:
            self.producer.publish(
                body, exchange=CONTROL_EXCHANGE, routing_key=self.topic, serializer="json", **kwargs
            )
        self.sent += 1

    def call(
        self,
        method: Any,
        args: Any = None,
        context: dict[str, Any] | None = None,
        *,
        reply: bool = True,
        compression: str | None = None,
        **fields: Any,
    ) -> str:
        """Publish an oslo-enveloped call; with ``reply``, to this peer's reply queue. Return its id."""
        msg_id = uuid.uuid4().hex
        message = {
            "method": method,
            "args": {} if args is None else args,
            "version": "1.0",
            "_unique_id": uuid.uuid4().hex,
            **{f"_context_{k}": v for k, v in (ADMIN if context is None else context).items()},
        }
        if reply:
            message.update(_msg_id=msg_id, _reply_q=self.reply_q)
        message.update(fields)
        self.publish(envelope(message), compression=compression)
        self.calls[msg_id] = f"{method!r:.40} {args!r:.80} {context!r:.60} {fields!r:.60}"
        return msg_id

    def collect(self, msg_ids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
        """Wait (bounded) for the reply to each of ``msg_ids`` and return them."""
        deadline = time.monotonic() + timeout
        while not all(m in self.replies for m in msg_ids):
            missing = [self.calls.get(m, m) for m in msg_ids if m not in self.replies]
            assert time.monotonic() < deadline, f"{len(missing)} calls unanswered: {missing}"
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=1)
        return [self.replies[m] for m in msg_ids]

    def _on_reply(self, body: Any, message: kombu.Message) -> None:
        reply = json.loads(body["oslo.message"])
        if reply.get("ending", True) and reply.get("_msg_id"):
            self.replies[reply["_msg_id"]] = reply
        message.ack()

    def close(self) -> None:
        """Cancel the reply consumer (deleting the reply queue) and close the connection."""
        self.consumer.cancel()
        self.connection.release()


def envelope(message: Any) -> dict[str, Any]:
    """Wrap ``message`` in oslo.messaging's 2.0 envelope."""
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


def failure(reply: dict[str, Any]) -> dict[str, Any]:
    """Return the decoded error of an error reply (class, module, message, args, kwargs, tb)."""
    assert reply["failure"], f"expected an error reply, got {reply!r:.300}"
    return json.loads(reply["failure"])


def deep(depth: int) -> Any:
    """Return JSON data nested ``depth`` levels deep (lists and dicts alternating)."""
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


class Probe:
    """What must hold after each batch: health answers, no new row, bounded RSS."""

    def __init__(self, worker: Daemon, client: Any, database_url: str) -> None:
        self.worker, self.client = worker, client
        self.engine = sa.create_engine(database_url)
        self.baseline = self.rows()
        self.pid = worker.workers()[0]
        self.rss: list[int] = []  # MB after each check
        self.peak: list[int] = []  # the worker's peak RSS so far (MB), after each check

    def rows(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar() for t in names}

    def check(self, batch: str) -> None:
        health = self.client.prepare(timeout=60).call({}, "health")
        assert health["status"] == "ok", (batch, health)
        assert self.worker.workers() == [self.pid], f"{batch}: the worker died or was replaced"
        assert self.rows() == self.baseline, f"{batch}: rows were written"
        status = Path(f"/proc/{self.pid}/status").read_text()
        self.rss.append(int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) // 1024)
        self.peak.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) // 1024)
