"""Flow control through the h2 relay: a provider streaming 100 MB to a client that reads
slowly; the agent holds about a window of it, not the stream."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from agent.h2.connection import HEAD, TRAILERS, Connection, Handler
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.grpc_peer import ECHO
from tests.support.grpc_h2 import framed, request_headers

pytestmark = pytest.mark.integration

MESSAGE = 512 * 1024  # under the listener's max_message_bytes (1 MiB in these tests)
REPLIES = 200


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Reader(Handler):
    def __init__(self) -> None:
        self.received = 0
        self.status: bytes | None = None
        self.pending: list[tuple[int, int]] = []  # (stream, flow) read, not yet consumed

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        assert kind in (HEAD, TRAILERS)
        if end_stream:  # trailers, or a trailers-only answer
            self.status = dict(headers)[b"grpc-status"]

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        self.received += len(data)
        self.pending.append((stream_id, flow))


def test_a_slow_reader_slows_the_provider_instead_of_filling_the_agent(
    grpc_agent: AgentProcess, grpc_stubs: Path
) -> None:
    import echo_pb2

    request = echo_pb2.EchoRequest(message="x" * MESSAGE, count=REPLIES).SerializeToString()
    assert grpc_agent.pid is not None
    before = rss_mib(grpc_agent.pid)
    reader = Reader()
    conn = Connection(reader, client=True)
    sock = socket.create_connection(("127.0.0.1", grpc_agent.listener_port()), timeout=30)
    stream = conn.open_stream()
    conn.send_headers(
        stream,
        request_headers(f"/{ECHO}/ServerStream"),
    )
    body = framed(request)
    sent = 0
    highest = before
    reads = 0
    while reader.status is None:
        window = conn.window(stream) if sent < len(body) else 0
        if window:
            piece = body[sent : sent + window]
            sent += len(piece)
            conn.send_data(stream, piece, end_stream=sent == len(body))
        sock.sendall(conn.data_to_send())
        data = sock.recv(256 * 1024)
        assert data, "the agent closed the connection"
        conn.receive(data)
        # Slow: what was read is consumed (its window given back) a little later.
        time.sleep(0.002)
        for stream_id, flow in reader.pending:
            conn.ack(stream_id, flow)
        reader.pending.clear()
        sock.sendall(conn.data_to_send())
        reads += 1
        if reads % 16 == 0:
            highest = max(highest, rss_mib(grpc_agent.pid))
    sock.close()
    assert reader.status == b"0", reader.status
    assert reader.received >= REPLIES * MESSAGE
    # Unbounded, the agent would have held much of the 100 MB; bounded, about a window
    # per direction (4 MiB per stream, 16 MiB per connection, advertised).
    assert highest - before < 40, (before, highest)
