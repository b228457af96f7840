"""Credentials masked out of every message the daemon and ``dbworker-manage`` print or log."""

from __future__ import annotations

import logging
import re

from oslo_utils import strutils

#: ``scheme://user:password@``. A match starts only where a run of scheme characters starts (the
#: lookbehind): a long run with no ``://`` is then scanned once, not once per character (quadratic
#: time on hostile input, such as a 1 MB method name in a log line).
_URL_CREDENTIALS = re.compile(r"(?<![\w+.-])(?P<scheme>[\w+.-]+://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def mask(message: str) -> str:
    """Return ``message`` with URL passwords (``scheme://user:***@``) and oslo's known secret
    patterns (``password=...``) masked."""
    return strutils.mask_password(_URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", message))


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
