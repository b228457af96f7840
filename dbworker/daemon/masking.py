"""Credentials masked out of every message the daemon and ``dbworker-manage`` print or log."""

from __future__ import annotations

import logging
import re

from oslo_utils import strutils

#: ``scheme://user:password@``. A match starts only where a run of scheme characters starts (the
#: lookbehind): a long run with no ``://`` is then scanned once, not once per character (quadratic
#: time on hostile input, such as a 1 MB method name in a log line).
_URL_CREDENTIALS = re.compile(r"(?<![\w+.-])(?P<scheme>[\w+.-]+://)(?P<user>[^:/@\s]*):[^@/\s]*@")


#: The keys oslo's ``mask_password`` looks for (lower case). It lower-cases the message once per key,
#: for every message; most messages hold none of them, and then its patterns cannot match.
_SECRET_KEYS = tuple(getattr(strutils, "_SANITIZE_KEYS", ()))


def mask(message: str) -> str:
    """Return ``message`` with URL passwords (``scheme://user:***@``) and oslo's known secret
    patterns (``password=...``) masked."""
    if "://" in message:
        message = _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", message)
    lowered = message.lower()
    if _SECRET_KEYS and not any(key in lowered for key in _SECRET_KEYS):
        return message
    return strutils.mask_password(message)


class MaskingFilter(logging.Filter):
    """Masks credentials in every record a handler emits (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add a :class:`MaskingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
