"""The catalogue: every function a Python caller can call, with Cinder's signatures.

The handlers define each function once (name, wire parameters, defaults, and in the return
annotation the shape of the reply). A caller's process must not import them, so this module reads
their committed description, :mod:`dbworker.protocol.signatures` (written by
``python -m dbworker.tools.describe``), and turns each wire signature into the caller's: Cinder's,
which differs from the wire's only as :data:`ALIASES` and :data:`CALLER_ONLY` say.
``dbworker.client`` and the in-process API generate their methods from :data:`FUNCTIONS`, and
decode replies by :func:`reply_shape`; the client sends a call of a function in :data:`WRITES` with
an idempotency key (:func:`writes`).

Adding a function: its handler, its test, a line in the version history below, then
``python -m dbworker.tools.describe``. Imports nothing but the standard library,
:mod:`dbworker.protocol.wire` and :mod:`dbworker.protocol.signatures`.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dbworker.protocol import signatures, wire

#: RPC API version served. History (a new function or optional argument bumps the minor):
#:   1.0 - Cinder's Folsom DB API (90 functions), volume_admin_metadata_*, health
#: Context keys are not arguments and need no version: a worker ignores those it does not know,
#: so a call with ``deadline``, ``idempotency_key`` or ``use_slave`` to an older worker runs as a
#: call without them (``use_slave``: on the primary, which is always safe).
API_VERSION = "1.0"

#: The exception modules a caller lists in ``allowed_remote_exmods`` to get typed errors back.
ALLOWED_EXMODS = ["dbworker.exception"]

#: Parameters Cinder names otherwise, by function: ``{old name: wire name}``. The worker takes the
#: wire name (and the old one, so a raw caller may send either: that is why the handler gives the
#: wire name a default and its parameters are keyword-only). A Python caller gets Cinder's
#: signature with the wire name in the old one's place, every parameter positional and the wire
#: name required, and may still pass the old name by keyword.
ALIASES: dict[str, dict[str, str]] = {"quota_usage_update": {"class_name": "project_id"}}

#: Parameters a Python caller may pass but that never go on the wire, by function, with their
#: defaults (Folsom's DB session): appended to the caller's signature, dropped from the call.
CALLER_ONLY: dict[str, dict[str, Any]] = {"volume_data_get_for_project": {"session": None}}


@dataclass(frozen=True)
class Function:
    """One catalogue entry: the name, the caller's parameters after ``context``, the reply shape."""

    name: str
    signature: inspect.Signature
    reply: wire.Reply


def parse_signature(params: str) -> inspect.Signature:
    """Return the signature written as ``params`` (Python syntax, literal defaults, no types).

    Raises:
        ValueError: ``params`` is not Python, has a default that is not a literal, or has
            positional-only, ``*args`` or ``**kwargs`` parameters.
    """
    try:
        args = ast.parse(f"def f({params}): pass").body[0].args  # type: ignore[attr-defined]
    except SyntaxError as err:
        raise ValueError(f"({params}) is not a parameter list") from err
    if args.posonlyargs or args.vararg or args.kwarg:
        raise ValueError(f"({params}): only plain and keyword-only parameters travel")
    empty = inspect.Parameter.empty
    padded = [None] * (len(args.args) - len(args.defaults)) + args.defaults
    plain = [(a, d, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a, d in zip(args.args, padded, strict=True)]
    keyword = [
        (a, d, inspect.Parameter.KEYWORD_ONLY) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    return inspect.Signature(
        [
            inspect.Parameter(arg.arg, kind, default=empty if default is None else ast.literal_eval(default))
            for arg, default, kind in plain + keyword
        ]
    )


def caller_signature(name: str, wire_signature: inspect.Signature) -> inspect.Signature:
    """Return Cinder's signature for function ``name`` served with ``wire_signature``: the
    :data:`ALIASES` old names dropped (their wire names positional and required in their place),
    the :data:`CALLER_ONLY` parameters appended.

    Raises:
        ValueError: the result is not a valid signature (a required parameter after a default).
    """
    aliases = ALIASES.get(name, {})
    params = [p for p in wire_signature.parameters.values() if p.name not in aliases]
    if aliases:
        params = [
            p.replace(
                kind=inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if p.name in aliases.values() else p.default,
            )
            for p in params
        ]
    local = CALLER_ONLY.get(name, {}).items()
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in local]
    return inspect.Signature(params)


def functions(description: Mapping[str, str]) -> dict[str, Function]:
    """Return the catalogue of ``description`` (:data:`dbworker.protocol.signatures.SIGNATURES`'s form:
    ``{reply shape: "name(wire params)" lines}``), by name.

    Raises:
        ValueError: a line is not ``name(params)``, or a shape is not a ``wire.Reply`` value.
    """
    found = {}
    for shape, block in description.items():
        for line in filter(None, (raw.strip() for raw in block.splitlines())):
            name, paren, params = line.partition("(")
            if not (paren and params.endswith(")") and name.isidentifier()):
                raise ValueError(f"not a signature: {line!r}")
            wire_signature = parse_signature(params[:-1])
            found[name] = Function(name, caller_signature(name, wire_signature), wire.Reply(shape))
    return dict(sorted(found.items()))


#: Every callable function, by name.
FUNCTIONS: dict[str, Function] = functions(signatures.SIGNATURES)

#: Every function's reply shape.
REPLIES: dict[str, wire.Reply] = {name: function.reply for name, function in FUNCTIONS.items()}


def reply_shape(name: str) -> wire.Reply:
    """Return the shape of function ``name``'s reply (``PLAIN`` for any other name)."""
    return REPLIES.get(name, wire.Reply.PLAIN)


#: The functions that write (their handler says so): a retried call of one must not run twice.
WRITES: frozenset[str] = signatures.WRITES


def writes(name: str) -> bool:
    """Return whether function ``name`` writes (False for any other name: ``health``, unknown names)."""
    return name in WRITES
