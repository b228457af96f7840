"""One dbworker worker process under yappi: ``python -m bench.profile_worker --config-file C --out F``.

It runs exactly what a daemon's forked worker runs (:class:`dbworker.service.WorkerService`: engine,
logging dispatcher, transport, bounded RPC server), with yappi profiling every thread, until SIGTERM;
then it stops the service and writes yappi's function statistics to ``F`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

import yappi
from oslo_config import cfg

from dbworker import service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    conf = cfg.CONF
    service.configure(conf, ["--config-file", args.config_file])
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    worker = service.WorkerService(conf, service.ReadyNotifier(None))
    yappi.set_clock_type(args.clock)
    yappi.start(builtins=False, profile_threads=True)
    worker.start()
    stopped.wait()
    yappi.stop()
    worker.stop()
    rows = [
        {
            "module": s.module,
            "name": s.name,
            "line": s.lineno,
            "ncall": s.ncall,
            "ttot": s.ttot,
            "tsub": s.tsub,
        }
        for s in yappi.get_func_stats()
    ]
    with open(args.out, "w") as out:
        json.dump({"clock": args.clock, "functions": rows}, out)


if __name__ == "__main__":
    main()
