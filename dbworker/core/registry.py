"""The handler registry: one function per RPC method, marked by ``@handler`` and collected explicitly.

Marking is pure (it sets an attribute and returns the function unchanged), so handlers stay plain
callables that tests and other handlers call directly. :meth:`Registry.from_modules` builds the
mapping at start-up and reads each handler's wire arguments from its signature and type hints.
A :class:`Handler` then admits each call by its declaration (:meth:`Handler.admit`): the caller's
authorization, the arguments' names, types and storable values, the caller's own project; the
dispatcher runs it before it begins the call's transaction.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from dbworker import exception
from dbworker.core import context, query, settings

_MARK = "__dbworker_handler__"
_RESERVED = frozenset({"target", "health"})


class Auth(enum.Enum):
    """Folsom's authorization levels: ``[A]`` admin, ``[C]`` a user or admin context, or none."""

    ADMIN = "admin"
    CONTEXT = "context"
    ANY = "any"


@dataclass(frozen=True)
class Arg:
    """One wire argument: its name, its type hint and its default (``Arg.REQUIRED`` if none)."""

    REQUIRED: typing.ClassVar[object] = inspect.Parameter.empty

    name: str
    annotation: Any
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is Arg.REQUIRED


@dataclass(frozen=True)
class Handler:
    """A registered RPC handler: its declaration, and the checks a call must pass to run it.

    ``core`` handlers annotate ``tx`` as a SQLAlchemy ``Connection`` (Core statements, no ORM
    session); the others get a ``Session``. A ``single_statement`` handler reads with exactly one
    statement, which sees one snapshot by itself: it runs without a transaction (autocommit), one
    round trip (a test holds every such handler to one statement). ``needs_settings`` handlers
    declare a keyword-only ``settings: Settings`` parameter, which :meth:`admit` passes (it is
    not a wire argument).
    """

    name: str
    fn: Callable[..., Any]
    auth: Auth
    writes: bool
    retry_on_deadlock: bool
    project_arg: str | None
    args: tuple[Arg, ...]
    core: bool = False
    needs_settings: bool = False
    single_statement: bool = False

    def admit(
        self, ctx: context.RequestContext, kwargs: Mapping[str, Any], settings: settings.Settings
    ) -> dict[str, Any]:
        """Return the keyword arguments to call ``fn(tx, ctx, **arguments)`` with, once ``ctx``
        may make the call and ``kwargs`` fit the wire arguments. Reads and writes nothing: the
        caller runs it before it begins the call's transaction.

        In this order: the declared authorization (before the arguments are looked at), the
        arguments bound (:meth:`bind`), each scalar argument storable in a column, a user
        context's own project in ``project_arg``; then ``settings`` added for a handler that
        declares it.

        Raises:
            AdminRequired: an ``Auth.ADMIN`` handler called without an admin context.
            NotAuthorized: an ``Auth.CONTEXT`` handler called with neither an admin nor a user
                context, or a user context naming another project in ``project_arg``.
            InvalidInput: an argument is missing, unexpected, of the wrong type, or holds what
                no column stores (named).
        """
        if self.auth is Auth.ADMIN and not ctx.is_admin:
            raise exception.AdminRequired()
        if self.auth is Auth.CONTEXT and not (ctx.is_admin or ctx.is_user):
            raise exception.NotAuthorized()
        bound = self.bind(kwargs)
        self._check_storable(bound)
        if self.project_arg is not None and ctx.is_user and bound.get(self.project_arg) != ctx.project_id:
            raise exception.NotAuthorized()
        if self.needs_settings:
            bound["settings"] = settings
        return bound

    def bind(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``kwargs`` against the wire arguments and return them with defaults filled in.

        Raises:
            InvalidInput: an argument is missing, unexpected, or of the wrong type (named).
        """
        if not isinstance(kwargs, Mapping):
            raise exception.InvalidInput(reason="arguments must be a dict of keyword arguments")
        known = {arg.name for arg in self.args}
        unexpected = sorted(set(kwargs) - known)
        if unexpected:
            raise exception.InvalidInput(reason=f"unexpected argument {unexpected[0]!r}")
        bound: dict[str, Any] = {}
        for arg in self.args:
            if arg.name in kwargs:
                value = kwargs[arg.name]
                if not conforms(value, arg.annotation):
                    raise exception.InvalidInput(
                        reason=f"argument {arg.name!r} must be {type_name(arg.annotation)}, "
                        f"not {type(value).__name__}"
                    )
                bound[arg.name] = value
            elif arg.required:
                raise exception.InvalidInput(reason=f"missing argument {arg.name!r}")
            else:
                bound[arg.name] = arg.default
        return bound

    def _check_storable(self, bound: Mapping[str, Any]) -> None:
        """Refuse, as InvalidInput naming the argument, a scalar argument no column holds, which a
        driver would reject with a raw error: a string (or list item) with a NUL byte or a lone
        surrogate, an integer argument beyond the 32-bit integer columns. Dict arguments are
        checked by the handlers, key by key."""
        for arg in self.args:
            value = bound[arg.name]
            if isinstance(value, str):
                query.check_string(f"argument {arg.name!r}", value, None)
            elif isinstance(value, int) and int in (accepted_types(arg.annotation) or ()):
                query.check_int(f"argument {arg.name!r}", value)
            elif isinstance(value, list | tuple):
                for item in value:
                    if isinstance(item, str):
                        query.check_string(f"argument {arg.name!r}", item, None)


def handler(
    fn: Callable[..., Any] | None = None,
    *,
    auth: Auth = Auth.CONTEXT,
    writes: bool = False,
    retry_on_deadlock: bool = False,
    project_arg: str | None = None,
    single_statement: bool = False,
) -> Any:
    """Mark ``fn(tx, ctx, **wire_args)`` as the handler of the RPC method named like it.

    ``auth`` is checked (:meth:`Handler.admit`) before anything runs; so is ``project_arg``, the
    name of an argument that a user context may only set to its own project (Folsom's ``[P]``).
    A handler that needs the worker's configuration declares a keyword-only ``settings:
    Settings`` parameter without a default: the worker passes its own on every call.
    """

    if single_statement and writes:
        raise ValueError("a write handler runs in a transaction: it cannot be single_statement")

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(
            f,
            _MARK,
            {
                "auth": auth,
                "writes": writes,
                "retry_on_deadlock": retry_on_deadlock,
                "project_arg": project_arg,
                "single_statement": single_statement,
            },
        )
        return f

    return mark(fn) if fn is not None else mark


class Registry(Mapping[str, Handler]):
    """The RPC methods a worker serves, by name (a read-only mapping)."""

    def __init__(self, handlers: Iterable[Handler]) -> None:
        self._handlers: dict[str, Handler] = {}
        for h in handlers:
            if h.name in self._handlers:
                raise ValueError(f"handler {h.name!r} is registered twice")
            if h.name.startswith("_") or h.name in _RESERVED:
                raise ValueError(f"{h.name!r} cannot be an RPC method name")
            self._handlers[h.name] = h

    @classmethod
    def from_modules(cls, modules: Iterable[types.ModuleType]) -> Registry:
        """Collect the marked functions defined in ``modules``.

        Raises:
            ValueError: two handlers share a name, a name is reserved, or a handler's parameters
                are not a handler's (see :func:`handler`).
        """
        found = []
        for module in modules:
            for fn in vars(module).values():
                if callable(fn) and hasattr(fn, _MARK) and fn.__module__ == module.__name__:
                    found.append(_describe(fn))
        return cls(found)

    def __getitem__(self, name: str) -> Handler:
        return self._handlers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


def _describe(fn: Callable[..., Any]) -> Handler:
    """Return ``fn``'s declaration: its marks, its wire arguments, whether it runs on a Core
    connection and whether it declares the worker's settings.

    Raises:
        ValueError: ``fn`` does not take ``(tx, ctx, ...)``, or declares its ``Settings`` other
            than as a keyword-only ``settings`` without a default.
    """
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    if [p.name for p in params[:2]] != ["tx", "ctx"]:
        raise ValueError(f"handler {fn.__name__} must take (tx, ctx, ...)")
    declared = [p for p in params[2:] if hints.get(p.name) is settings.Settings]
    wire = [p for p in params[2:] if p not in declared]
    for p in declared:
        if p.name != "settings" or p.kind is not p.KEYWORD_ONLY or p.default is not p.empty:
            raise ValueError(
                f"handler {fn.__name__}: its Settings must be the keyword-only parameter"
                " 'settings', without a default (the worker's configuration, never a fallback)"
            )
    args = tuple(Arg(p.name, hints.get(p.name, Any), p.default) for p in wire)
    return Handler(
        name=fn.__name__,
        fn=fn,
        args=args,
        core=hints.get("tx") is Connection,
        needs_settings=bool(declared),
        **getattr(fn, _MARK),
    )


def conforms(value: Any, annotation: Any) -> bool:
    """Return whether a JSON value fits a handler's type hint (``bool`` is not an ``int``)."""
    accepted = accepted_types(annotation)
    if accepted is None:
        return True
    if isinstance(value, bool) and bool not in accepted:
        return False
    return isinstance(value, accepted)


@functools.cache
def accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """Return the types a JSON value of this hint may have (``None``: any value): a float
    accepts an int, a list a tuple (worked out once per hint, not per call)."""
    if annotation is Any or annotation is object:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [accepted_types(a) for a in typing.get_args(annotation)]
        return None if None in parts else tuple(t for part in parts if part for t in part)
    if annotation is None or annotation is type(None):
        return (type(None),)
    base = origin or annotation
    return {float: (int, float), list: (list, tuple)}.get(base, (base,))


def type_name(annotation: Any) -> str:
    """Return a reader's name for a type hint: ``str``, ``int or null``, ``dict``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None) or annotation is None:
        return "null"
    base = typing.get_origin(annotation) or annotation
    return getattr(base, "__name__", str(base))
