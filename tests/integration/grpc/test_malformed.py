"""Malformed length-prefixed messages, sent with a raw HTTP/2 client (h2): the call ends
with an error status, and the connection and its other calls go on.

A message cut short by the end of the client's stream is not an error to grpc's core (a
grpcio server waits for the rest until the client's deadline); the relay counts message
sizes and ends such a call at once with INTERNAL.
"""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.support.grpc_h2 import rapid_reset

pytestmark = pytest.mark.integration


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def call(self, path: str, body: bytes, timeout: str | None = None) -> dict[str, str]:
        """Send one call; return its response headers and trailers merged."""
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "meshagent"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        self.conn.send_headers(stream, headers)
        self.conn.send_data(stream, body, end_stream=True)
        self.flush()
        fields: dict[str, str] = {}
        while True:
            data = self.sock.recv(65536)
            assert data, "the agent closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                if (
                    isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived))
                    and event.stream_id == stream
                ):
                    fields.update((k.decode(), v.decode()) for k, v in event.headers or [])
                if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    fields["reset"] = str(event.error_code)
                    return fields
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    self.flush()
                    return fields
            self.flush()

    def close(self) -> None:
        self.conn.close_connection()
        self.flush()
        self.sock.close()


def framed(message: bytes, declared: int | None = None, compressed: int = 0) -> bytes:
    length = len(message) if declared is None else declared
    return struct.pack(">BI", compressed, length) + message


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (framed(b"abc", declared=100), "13"),  # shorter than its prefix says: INTERNAL
        (b"\x00\x00\x00", "13"),  # a prefix cut short: INTERNAL
        (framed(b"abc", compressed=1), "13"),  # compressed, no grpc-encoding: INTERNAL
    ],
    ids=["short-message", "short-prefix", "compressed-without-encoding"],
)
def test_malformed_message_ends_the_call_not_the_connection(
    grpc_agent: AgentProcess, body: bytes, status: str
) -> None:
    client = RawClient(grpc_agent.listener_port(0))
    try:
        bad = client.call("/meshtest.Echo/Unary", body, timeout="500m")
        assert bad.get("grpc-status") == status, bad
        if body[0] == 0:
            assert "ended inside a message" in bad.get("grpc-message", "")
        good = client.call("/meshtest.Echo/Unary", framed(b""))
        assert good.get("grpc-status") == "0"
        assert good.get("x-server", "").startswith("echo-")
    finally:
        client.close()


def test_rapid_reset_gets_goaway(grpc_agent: AgentProcess) -> None:
    # Issue 25: 20,000 HEADERS + RST_STREAM pairs on one connection, and no GOAWAY.
    code, _sent = rapid_reset(grpc_agent.listener_port(), 2_000)
    assert code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert "over 100 stream resets per second (rapid reset)" in grpc_agent.process.output()
    # The relay keeps serving other clients afterwards.
    client = RawClient(grpc_agent.listener_port())
    try:
        answer = client.call("/meshtest.Echo/Unary", b"\x00\x00\x00\x00\x00", timeout="5S")
        assert answer.get("grpc-status") == "0", answer
    finally:
        client.sock.close()
