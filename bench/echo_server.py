"""A bare oslo.messaging RPC server returning its argument: the transport's limit.

``python -m bench.echo_server URL TOPIC THREADS`` runs until SIGTERM; it has one method,
``echo(ctxt, arg)``, and uses oslo.messaging's plain threading executor with THREADS threads.
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


def main(url: str, topic: str, threads: str) -> None:
    conf = cfg.CONF  # oslo.messaging registers its tracing options only on the global CONF
    conf([], project="dbworker-bench-echo")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    target = oslo_messaging.Target(topic=topic, server="bench-echo")
    server = oslo_messaging.get_rpc_server(
        transport,
        target,
        [Echo()],
        executor="threading",
        access_policy=oslo_messaging.DefaultRPCAccessPolicy,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server.start(override_pool_size=int(threads))
    stopped.wait()
    server.stop()
    server.wait()
    transport.cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:4])
