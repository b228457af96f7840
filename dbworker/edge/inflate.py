"""Bounded decompression of broker messages: a compression bomb must not exhaust a worker's memory.

kombu inflates every message whose ``compression`` header names a registered codec before
oslo.messaging sees it, with no size limit: a 64 KB zlib body becomes 64 MB, and one as large as the
broker accepts (RabbitMQ: 16 MB) becomes gigabytes. :func:`install` re-registers kombu's decoders so
that inflating stops after :data:`MAX_INFLATED` bytes; a larger message fails to decode and
oslo.messaging drops it (logged). Codecs without a bounded decoder (brotli, zstd) are refused.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from kombu import compression

#: The largest inflated message a worker accepts, in bytes (a DB API call is far smaller).
MAX_INFLATED = 16 * 1024 * 1024

_BOUNDED: dict[str, Callable[[], Any]] = {
    "application/x-gzip": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def _bounded(make: Callable[[], Any]) -> Callable[[bytes], bytes]:
    def decode(body: bytes) -> bytes:
        inflated = make().decompress(body, MAX_INFLATED + 1)
        if len(inflated) > MAX_INFLATED:
            del inflated  # not kept alive by the traceback's frame
            raise ValueError(f"a compressed message inflates beyond {MAX_INFLATED} bytes")
        return inflated

    return decode


def _refuse(body: bytes) -> bytes:
    raise ValueError("this message compression is not accepted")


def install() -> None:
    """Replace kombu's (process-wide) decoders with bounded ones; refuse the others."""
    for content_type in compression.encoders():
        encoder, _ = compression.get_encoder(content_type)
        make = _BOUNDED.get(content_type)
        compression.register(encoder, _bounded(make) if make else _refuse, content_type)
