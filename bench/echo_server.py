"""A bare oslo.messaging RPC server returning its argument: the transport's limit.

``python -m bench.echo_server URL TOPIC THREADS`` runs until SIGTERM; it has one method,
``echo(ctxt, arg)``, and uses oslo.messaging's plain threading executor with THREADS threads.
:func:`serve` is shared with the bare server that reads the database (:mod:`bench.oslo_peer`).
"""

from __future__ import annotations

import signal
import sys
import threading

import oslo_messaging
from oslo_config import cfg


class Echo:
    target = oslo_messaging.Target(version="1.0")

    def echo(self, ctxt: dict, arg: object) -> object:
        return arg


def serve(url: str, topic: str, server: str, threads: int, endpoints: list[object]) -> None:
    """Serve ``endpoints`` on ``topic`` with ``threads`` executor threads until SIGTERM."""
    conf = cfg.CONF  # oslo.messaging registers its tracing options only on the global CONF
    conf([], project=f"dbworker-{server}")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    target = oslo_messaging.Target(topic=topic, server=server)
    rpc_server = oslo_messaging.get_rpc_server(
        transport,
        target,
        endpoints,
        executor="threading",
        access_policy=oslo_messaging.DefaultRPCAccessPolicy,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    rpc_server.start(override_pool_size=threads)
    stopped.wait()
    rpc_server.stop()
    rpc_server.wait()
    transport.cleanup()


def main(url: str, topic: str, threads: str) -> None:
    serve(url, topic, "bench-echo", int(threads), [Echo()])


if __name__ == "__main__":
    main(*sys.argv[1:4])
