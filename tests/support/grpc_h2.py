"""A gRPC call's request as raw HTTP/2 pieces, for tests and benchmarks that drive the
agent with its own engine (agent/h2) as the client."""

from __future__ import annotations

import struct


def request_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers of a gRPC call to ``path`` (``/package.Service/Method``)."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"meshagent"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]


def framed(message: bytes) -> bytes:
    """One gRPC message with its length prefix (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message
