"""A gRPC call's request as raw HTTP/2 pieces, for tests and benchmarks that drive the
agent with its own engine (agent/h2) as the client."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


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


def rapid_reset(port: int, pairs: int) -> tuple[int | None, int]:
    """HEADERS then RST_STREAM, ``pairs`` times on one connection, until the agent closes
    it; (the GOAWAY's error code or None, the pairs sent before the connection ended)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sent = 0
    code = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        try:
            for _ in range(pairs):
                stream = conn.get_next_available_stream_id()
                conn.send_headers(
                    stream,
                    [
                        (":method", "POST"),
                        (":scheme", "http"),
                        (":path", "/meshtest.Echo/Unary"),
                        (":authority", "x"),
                        ("content-type", "application/grpc"),
                        ("te", "trailers"),
                    ],
                )
                conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                sock.sendall(conn.data_to_send())
                sent += 1
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the agent closed the connection
        try:
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        code = event.error_code
        except (OSError, h2.exceptions.ProtocolError):
            pass
    return code, sent
