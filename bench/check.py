"""The yardstick check: every peer's ``volume_get`` reply equals dbworker's, as JSON, ignoring nothing.

Run at the start of every benchmark (and alone by ``python -m bench.run --check``): for one seeded
volume it asks dbworker's daemon (the raw RPC reply, not decoded), dbworker's in-process dispatcher,
the direct floor, the Celery task and the bare oslo.messaging server, and fails the run with a diff
if any reply differs from the daemon's. It also asks each peer process which dbworker modules it
imported (none allowed), and compares the key structure of ``volume_create``'s replies (ids and
timestamps differ between two inserts, the shape must not).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

import oslo_messaging

from bench import workloads
from bench.measure import Call
from dbworker.core.context import RequestContext
from dbworker.protocol.catalogue import API_VERSION


class Mismatch(AssertionError):
    """A peer's reply differs from dbworker's, or a peer imported dbworker code."""


def canonical(reply: Any) -> str:
    """The reply as JSON with sorted keys (lists keep their order: it is part of the reply)."""
    return json.dumps(reply, sort_keys=True, indent=1)


def raw_dbworker(rpc_transport: oslo_messaging.Transport, topic: str) -> Callable[..., Any]:
    """Return ``call(ctxt, name, **kwargs)`` to the daemon; the reply as sent (JSON, not decoded)."""
    target = oslo_messaging.Target(topic=topic, version=API_VERSION)
    rpc = oslo_messaging.get_rpc_client(rpc_transport, target, timeout=30)
    return lambda ctxt, name, **kwargs: rpc.call(ctxt, name, **kwargs)


def shape(reply: Any) -> Any:
    """The key structure of a reply: dicts by sorted keys, lists by their items' shapes."""
    if isinstance(reply, dict):
        return {k: shape(v) for k, v in sorted(reply.items())}
    if isinstance(reply, list):
        return [shape(v) for v in reply]
    return type(reply).__name__ if reply is not None else None


def run(
    data: workloads.Data,
    dbworker: Callable[..., Any],
    peers: dict[str, Call],
    loaded: dict[str, Callable[[], list[str]]],
    creates: dict[str, Callable[[], Any]],
) -> dict[str, Any]:
    """Compare each of ``peers`` (name -> its ``volume_get`` Call; ``call(0, 0)`` reads
    ``data.read_id(0)``, as every workload does) with the daemon's raw reply for that volume.

    ``loaded`` maps a peer process to a call returning the dbworker modules it imported;
    ``creates`` maps a system to a ``volume_create`` returning its JSON reply, compared by shape
    with the daemon's. Returns what was compared; raises :class:`Mismatch`.
    """
    volume_id = data.read_id(0)
    reference = canonical(dbworker(workloads.READER, "volume_get", volume_id=volume_id))
    problems = []
    for name, call in peers.items():
        got = canonical(call(0, 0))
        if got != reference:
            diff = difflib.unified_diff(
                reference.splitlines(), got.splitlines(), "dbworker", name, lineterm="", n=2
            )
            problems.append(f"{name}: volume_get reply differs from dbworker's\n" + "\n".join(diff))
    for name, call in loaded.items():
        modules = call()
        if modules:
            problems.append(f"{name}: imported dbworker code: {modules[:5]}")
    values = workloads.create_values(data.type_id)
    create_shape = shape(dbworker(workloads.CREATOR, "volume_create", values=values))
    for name, call in creates.items():
        if shape(call()) != create_shape:
            problems.append(f"{name}: volume_create reply has another shape than dbworker's")
    if problems:
        raise Mismatch("\n\n".join(problems))
    return {
        "volume_id": volume_id,
        "reply_bytes": len(json.dumps(json.loads(reference))),
        "same_volume_get": sorted(peers),
        "no_dbworker_module": sorted(loaded),
        "same_create_shape": sorted(creates),
    }


def in_process(data: workloads.Data) -> tuple[Call, Callable[[], Any]]:
    """dbworker's dispatcher in this process, its JSON-safe reply before any decoding:
    ``(volume_get Call, volume_create())``."""
    from dbworker.api import LocalAPI

    dispatcher = LocalAPI.from_engine(data.engine).dispatcher
    values = workloads.create_values(data.type_id)

    def get(t: int, i: int) -> Any:
        ctx = RequestContext.from_dict(workloads.READER)
        return dispatcher.call("volume_get", ctx, {"volume_id": data.read_id(t * 7919 + i)})

    def create() -> Any:
        ctx = RequestContext.from_dict(workloads.CREATOR)
        return dispatcher.call("volume_create", ctx, {"values": values})

    return get, create
