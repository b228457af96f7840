"""Where a ``volume_get`` call's time goes inside a worker: read the statistics that
:mod:`bench.profile_worker` writes, and break them down per call.

Three views, all divided by the number of calls the dispatcher ran:

* phases: the inclusive time (yappi's ``ttot``) of the functions that delimit each step of a call
  (decode, ack, context, auth/bind, begin, query, serialize, flush, commit, close, log, reply);
* packages: own time (``tsub``) summed by top-level package (dbworker, sqlalchemy, oslo_messaging...);
* functions: the functions with the most own time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.services import ROOT

_MARKERS = ("site-packages/", f"{ROOT}/")

#: (phase, module path suffix, yappi function name); inclusive times, so phases may nest.
PHASES = (
    ("whole call in the executor thread", "oslo_messaging/rpc/server.py", "RPCServer._process_incoming"),
    (
        "  ack (hand-off to the listener)",
        "oslo_messaging/_drivers/amqpdriver.py",
        "AMQPIncomingMessage.acknowledge",
    ),
    ("  oslo dispatch (incl. endpoint)", "oslo_messaging/rpc/dispatcher.py", "RPCDispatcher.dispatch"),
    ("    dbworker endpoint: DBWorkerEndpoint._call", "dbworker/rpc.py", "DBWorkerEndpoint._call"),
    ("      context: RequestContext.from_dict", "dbworker/context.py", "from_dict"),  # classmethod
    ("      LoggingDispatcher.call (oslo context + call)", "dbworker/service.py", "LoggingDispatcher.call"),
    ("        Dispatcher.call", "dbworker/dispatch.py", "Dispatcher.call"),
    ("          auth + bind: Handler.bind", "dbworker/registry.py", "Handler.bind"),
    ("          one transaction: _run_once", "dbworker/dispatch.py", "Dispatcher._run_once"),
    ("            txn begin: Session.begin", "sqlalchemy/orm/session.py", "Session.begin"),
    ("            query: the volume_get handler", "dbworker/handlers/volumes.py", "volume_get"),
    ("            serialize: to_primitive", "dbworker/serialize.py", "to_primitive"),
    ("            flush: Session.flush", "sqlalchemy/orm/session.py", "Session.flush"),
    ("            commit: Session.commit", "sqlalchemy/orm/session.py", "Session.commit"),
    ("            close: Session.close", "sqlalchemy/orm/session.py", "Session.close"),
    ("          log line: Logger.info", "logging/__init__.py", "Logger.info"),
    (
        "  reply: AMQPIncomingMessage.reply",
        "oslo_messaging/_drivers/amqpdriver.py",
        "AMQPIncomingMessage.reply",
    ),
    ("listener thread: receive + decode", "oslo_messaging/_drivers/amqpdriver.py", "AMQPListener.__call__"),
)


def load(path: Path) -> dict[str, Any]:
    """Read the statistics :mod:`bench.profile_worker` wrote."""
    return json.loads(path.read_text())


def summarize(stats: dict[str, Any], top: int = 20) -> dict[str, Any]:
    """Return ``{"clock", "calls", "phases", "packages", "functions"}`` in milliseconds per call."""
    functions = stats["functions"]
    calls = _find(functions, "dbworker/dispatch.py", "Dispatcher.call")
    n = max(1, calls["ncall"] if calls else 0)

    def per_call(seconds: float) -> float:
        return round(seconds * 1000 / n, 4)

    phases = []
    for phase, module, name in PHASES:
        found = _find(functions, module, name)
        if found is not None:
            phases.append({"phase": phase, "ms_per_call": per_call(found["ttot"]), "ncall": found["ncall"]})
    packages: dict[str, float] = {}
    for f in functions:
        key = _package(f["module"])
        packages[key] = packages.get(key, 0.0) + f["tsub"]
    busiest = sorted(functions, key=lambda f: f["tsub"], reverse=True)[:top]
    return {
        "clock": stats["clock"],
        "calls": n,
        "phases": phases,
        "packages": sorted(
            ({"package": k, "ms_per_call": per_call(v)} for k, v in packages.items()),
            key=lambda row: -row["ms_per_call"],
        ),
        "functions": [
            {
                "function": f"{f['name']} ({_short(f['module'])}:{f['line']})",
                "own_ms_per_call": per_call(f["tsub"]),
                "incl_ms_per_call": per_call(f["ttot"]),
                "ncall": f["ncall"],
            }
            for f in busiest
        ],
    }


def _find(functions: list[dict[str, Any]], module: str, name: str) -> dict[str, Any] | None:
    """Sum the statistics of ``name`` in ``module``. yappi names a method after the class of
    ``self`` (``Dispatcher.call`` run by a LoggingDispatcher is ``LoggingDispatcher.call``), so a
    ``Class.method`` name also matches subclasses whose name ends with ``Class``."""
    owner, _, method = name.rpartition(".")
    matches = [
        f
        for f in functions
        if f["module"].endswith(module)
        and f["name"].rpartition(".")[2] == method
        and f["name"].rpartition(".")[0].endswith(owner)
    ]
    if not matches:
        return None
    return {"ncall": sum(f["ncall"] for f in matches), "ttot": sum(f["ttot"] for f in matches)}


def _package(module: str) -> str:
    """Return the top-level package of a module path (``.../site-packages/kombu/x.py`` -> kombu)."""
    for marker in _MARKERS:
        if marker in module:
            return module.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in module:
        rest = module.split("/lib/python3", 1)[1].split("/", 2)
        return "stdlib:" + rest[1].removesuffix(".py") if len(rest) > 1 else "stdlib"
    return module.rsplit("/", 1)[-1]


def _short(module: str) -> str:
    for marker in _MARKERS:
        if marker in module:
            return module.split(marker, 1)[1]
    return module.rsplit("/", 2)[-1] if "/" in module else module
