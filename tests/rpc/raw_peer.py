"""A raw oslo.messaging peer on the in-memory broker: it publishes calls as they are enveloped on
the wire (its own ``_unique_id``, ``_msg_id`` and context keys), and collects the replies."""

from __future__ import annotations

import json
import uuid

import kombu


class RawPeer:
    """Publishes oslo-enveloped calls as is (a chosen ``_unique_id``) to the in-memory broker, and
    collects the replies sent to its own reply queue."""

    def __init__(self, topic: str) -> None:
        self.connection = kombu.Connection("memory://")
        self.topic, self.reply_q = topic, f"redelivery-reply-{uuid.uuid4().hex}"
        self.producer = kombu.Producer(self.connection.channel())
        queue = kombu.Queue(
            self.reply_q, exchange=kombu.Exchange("", type="direct"), routing_key=self.reply_q
        )
        self.consumer = kombu.Consumer(self.connection.channel(), [queue], callbacks=[self._on_reply])
        self.consumer.consume()
        self.replies: list[dict] = []

    def publish(self, message: dict) -> None:
        body = {"oslo.version": "2.0", "oslo.message": json.dumps({**message, "_reply_q": self.reply_q})}
        self.producer.publish(body, exchange="openstack", routing_key=self.topic, serializer="json")

    def drain(self) -> None:
        """Take every reply already in the reply queue."""
        while True:
            try:
                self.connection.drain_events(timeout=0.2)
            except TimeoutError:
                return

    def _on_reply(self, body: dict, message: kombu.Message) -> None:
        reply = json.loads(body["oslo.message"])
        if reply.get("ending", True):
            self.replies.append(reply)
        message.ack()

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()
