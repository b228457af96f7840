"""Where a call's CPU goes inside the real dbworker worker: a py-spy profile under load.

:func:`record` attaches ``py-spy record --format raw --function --full-filenames`` to the daemon's
worker process (a child of the master, as it runs in production: no wrapper, no tracing hooks)
for N seconds while the benchmark drives it with one operation from 16 client threads.
:func:`summarize` reads py-spy's collapsed stacks (``frame;frame;... count``, root first) and gives,
in milliseconds per call (samples / rate / calls served during the recording):

* phases: the inclusive time of the functions that delimit each step of a call;
* packages: own (leaf) time summed by top-level package (dbworker, sqlalchemy, kombu, stdlib:...);
* functions: the frames with the most own time, with their total (inclusive) time.

py-spy samples only threads that are running (not idle in a socket wait), so the times are close
to CPU time, but a thread waiting for the GIL counts as running: with several executor threads that
inflates the samples several times over, so the run records with ``--gil`` (only the thread holding
the GIL) unless ``--no-profile-gil``; the worker's CPU from /proc over the same seconds is reported
beside the sampled total as a cross-check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.services import ROOT

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*):(?P<line>\d+)\)$")
_MARKERS = ("site-packages/", f"{ROOT}/")

#: (phase, file path suffix, function qualname or its last part); inclusive times, so phases nest.
#: A phase whose function was renamed or never sampled shows 0.
PHASES = (
    (
        "executor thread: the whole call",
        "dbworker/edge/flow_control.py",
        "BoundedRPCServer._process_incoming",
    ),
    ("  oslo dispatch (incl. endpoint)", "oslo_messaging/rpc/dispatcher.py", "RPCDispatcher.dispatch"),
    ("    dbworker endpoint: DBWorkerEndpoint._call", "dbworker/edge/rpc.py", "DBWorkerEndpoint._call"),
    ("      context: RequestContext.from_dict", "dbworker/core/context.py", "RequestContext.from_dict"),
    ("      Dispatcher.call", "dbworker/core/dispatch.py", "Dispatcher.call"),
    ("        admit (auth, arguments): Handler.admit", "dbworker/core/registry.py", "Handler.admit"),
    ("        one transaction: _run_once", "dbworker/core/dispatch.py", "Dispatcher._run_once"),
    (
        "          record by message id (writes): MessageRecord.begin",
        "dbworker/edge/delivery.py",
        "MessageRecord.begin",
    ),
    ("          record by key (writes): KeyRecord.begin", "dbworker/edge/delivery.py", "KeyRecord.begin"),
    ("          the kept outcome (writes): KeyRecord.keep", "dbworker/edge/delivery.py", "KeyRecord.keep"),
    ("          query: the volume_get handler", "dbworker/handlers/volumes.py", "volume_get"),
    ("          query: the volume_create handler", "dbworker/handlers/volumes.py", "volume_create"),
    ("            the reply: volume_reply", "dbworker/handlers/volume_replies.py", "volume_reply"),
    ("          serialize: to_primitive", "dbworker/core/serialize.py", "to_primitive"),
    ("          commit: Session.commit", "sqlalchemy/orm/session.py", "Session.commit"),
    ("          close: Session.close", "sqlalchemy/orm/session.py", "Session.close"),
    ("        log line: Logger.info", "logging/__init__.py", "Logger.info"),
    (
        "  reply: AMQPIncomingMessage.reply",
        "oslo_messaging/_drivers/amqpdriver.py",
        "AMQPIncomingMessage.reply",
    ),
    (
        "listener thread: receive, decode, ack, hand-over",
        "dbworker/edge/flow_control.py",
        "BoundedListener._run",
    ),
    (
        "  accept (ack + queue): _GatedDelivery._accept",
        "dbworker/edge/flow_control.py",
        "_GatedDelivery._accept",
    ),
)


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter (or on PATH), None if it is not installed."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int, gil: bool) -> subprocess.Popen[bytes]:
    """Start py-spy recording process ``pid`` for ``seconds`` into ``out`` (raw collapsed stacks)."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install -r bench/requirements.txt)")
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--function", "--full-filenames"]
    argv += ["--rate", str(rate), "--duration", str(max(1, round(seconds))), "--output", str(out)]
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def parse(text: str) -> list[tuple[list[str], int]]:
    """Return py-spy's raw output as ``(frames root first, samples)``."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(text: str, calls: int, rate: int, top: int = 20) -> dict[str, Any]:
    """Return ``{"samples", "calls", "rate", "phases", "packages", "functions"}``, times in ms/call."""
    stacks = parse(text)
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks:
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    n = max(1, calls)

    def ms(count: float) -> float:
        return round(count * 1000 / rate / n, 4)

    phases = []
    for phase, suffix, name in PHASES:
        hits = sum(c for f, c in total.items() if _matches(f, suffix, name))
        phases.append({"phase": phase, "ms_per_call": ms(hits)})
    packages: Counter[str] = Counter()
    for frame, count in own.items():
        packages[_package(_split(frame)[1])] += count
    return {
        "samples": samples,
        "calls": calls,
        "rate": rate,
        "ms_per_call_sampled": ms(samples),
        "phases": phases,
        "packages": [{"package": k, "ms_per_call": ms(v)} for k, v in packages.most_common()],
        "functions": [
            {"function": _short(f), "own_ms_per_call": ms(c), "total_ms_per_call": ms(total[f])}
            for f, c in own.most_common(top)
        ],
        "inclusive": [
            {"function": _short(f), "total_ms_per_call": ms(c)}
            for f, c in total.most_common(top * 2)
            if _split(f)[1].find("threading.py") < 0
        ][:top],
    }


def _split(frame: str) -> tuple[str, str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, "", ""
    return match["name"], match["file"], match["line"]


def _matches(frame: str, suffix: str, name: str) -> bool:
    func, file, _ = _split(frame)
    return file.endswith(suffix) and (func == name or func.endswith("." + name))


def _package(path: str) -> str:
    """The top-level package of a file path (``.../site-packages/kombu/x.py`` -> kombu)."""
    if path.startswith("<"):  # generated code: ``<sqlalchemy generated ...>``, ``<string>``
        return path[1:].split(" ", 1)[0].rstrip(">") or "?"
    for marker in _MARKERS:
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 2)
        return "stdlib:" + rest[1].removesuffix(".py") if len(rest) > 1 else "stdlib"
    return path.rsplit("/", 1)[-1] or "?"


def _short(frame: str) -> str:
    func, path, line = _split(frame)
    for marker in (*_MARKERS, "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path}:{line})" if path else func
