"""Draining the h2 relay: GOAWAY to its clients, the calls in progress finish, then the
connection closes (a rolling restart loses no call)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from agent.h2.connection import HEAD, TRAILERS, Connection, Handler
from tests.fixtures.agent_process import start_agent
from tests.fixtures.grpc_peer import EchoServer
from tests.integration.grpc.conftest import ECHO, grpc_agent_config, register
from tests.support.grpc_h2 import framed, request_headers

pytestmark = pytest.mark.integration


def _echo_request(grpc_stubs: Path) -> bytes:
    import echo_pb2

    message = echo_pb2.EchoRequest(message="slow", count=2, delay_ms=400).SerializeToString()
    return framed(message)


class Events(Handler):
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.replies = 0
        self.status: bytes | None = None

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if kind == HEAD:
            self.seen.append("response")
        elif kind == TRAILERS:
            self.status = dict(headers)[b"grpc-status"]

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        self.replies += 1

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        self.seen.append(f"goaway {code}")


def test_a_drain_sends_goaway_and_lets_the_call_finish(
    tmp_path: Path, echo_servers: list[EchoServer], grpc_stubs: Path
) -> None:
    config = grpc_agent_config()
    config["drain_timeout_s"] = 10
    agent = start_agent(tmp_path, config)
    try:
        register(agent, ECHO, echo_servers[0])
        agent.wait_endpoints(ECHO, 1)
        sock = socket.create_connection(("127.0.0.1", agent.listener_port()), timeout=10)
        # The client is the agent's own engine: python-h2 drops a connection's streams
        # on GOAWAY, which RFC 9113 does not ask of a client.
        events = Events()
        conn = Connection(events, client=True)
        stream = conn.open_stream()
        conn.send_headers(
            stream,
            request_headers(f"/{ECHO}/ServerStream"),
        )
        conn.send_data(stream, _echo_request(grpc_stubs), end_stream=True)
        sock.sendall(conn.data_to_send())
        drained = False
        while events.status is None:
            data = sock.recv(65536)
            assert data, f"closed before the call ended: {events.seen}"
            conn.receive(data)
            if events.seen and not drained:
                agent.process.send_signal(signal.SIGTERM)  # the call is under way: drain
                drained = True
            sock.sendall(conn.data_to_send())
        assert events.seen[0] == "response" and "goaway 0" in events.seen
        assert events.status == b"0" and events.replies == 2
        sock.settimeout(10)
        assert sock.recv(65536) == b""  # closed once its last call finished
        sock.close()
    finally:
        agent.stop()
