"""The handler registry: one function per RPC method, marked by ``@handler`` and collected explicitly.

Marking is pure (it sets an attribute and returns the function unchanged), so handlers stay plain
callables that tests and other handlers call directly. :meth:`Registry.from_modules` builds the
mapping at start-up and reads each handler's wire arguments from its signature and type hints.
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

from dbworker import exception, settings

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
    """A registered RPC handler and what the dispatcher must know to run it.

    ``core`` handlers annotate ``tx`` as a SQLAlchemy ``Connection`` (Core statements, no ORM
    session); the others get a ``Session``. A ``single_statement`` handler reads with exactly one
    statement, which sees one snapshot by itself: it runs without a transaction (autocommit), one
    round trip (a test holds every such handler to one statement). ``needs_settings`` handlers
    declare a keyword-only ``settings: Settings`` parameter, which the dispatcher passes (it is
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

    ``auth`` is checked by the dispatcher before anything runs; so is ``project_arg``, the name of
    an argument that a user context may only set to its own project (Folsom's ``[P]``).
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
            ValueError: two handlers share a name, or a name is reserved.
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
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    if [p.name for p in params[:2]] != ["tx", "ctx"]:
        raise ValueError(f"handler {fn.__name__} must take (tx, ctx, ...)")
    wire = [p for p in params[2:] if hints.get(p.name) is not settings.Settings]
    args = tuple(Arg(p.name, hints.get(p.name, Any), p.default) for p in wire)
    return Handler(
        name=fn.__name__,
        fn=fn,
        args=args,
        core=hints.get("tx") is Connection,
        needs_settings=len(wire) < len(params) - 2,
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
