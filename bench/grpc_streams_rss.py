"""What 1,000 concurrent gRPC streams cost the agent in memory (issue 22: RSS growth at
most 20 MB), through the gRPC listener (the h2 relay).

    /work/main/.venv/bin/python bench/grpc_streams_rss.py [--streams N --hold-ms MS]

Starts on 127.0.0.1 a grpcio echo server (tests/fixtures/grpc/echo_server.py) and one
agent; a client (the agent's own HTTP/2 engine, agent/h2, in this process)
opens N server-streaming calls over N/100 connections (100 streams per connection, the
listener's limit), each answered after ``--hold-ms``. The agent's resident set
(/proc/PID/status VmRSS) is read before the calls and at its highest while every call is
open (from a second after they were sent until the first one ends); growth = the
difference, in a fresh agent's
first round and again in a second round.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.h2.connection import TRAILERS, Connection, Handler  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.grpc_peer import ECHO, EchoServer, generate_stubs  # noqa: E402
from tests.support.grpc_h2 import framed, request_headers  # noqa: E402

PER_CONNECTION = 100


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Calls(Handler):
    def __init__(self) -> None:
        self.ended = 0

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if kind == TRAILERS or end_stream:
            self.ended += 1


def request(hold_ms: int) -> bytes:
    import echo_pb2

    message = echo_pb2.EchoRequest(message="x", count=1, delay_ms=hold_ms).SerializeToString()
    return framed(message)


def round_of(port: int, streams: int, hold_ms: int, pid: int) -> tuple[int, int]:
    """(RSS before, RSS with every stream open) in KiB."""
    before = rss_kib(pid)
    handler = Calls()
    clients: list[tuple[socket.socket, Connection]] = []
    body = request(hold_ms)
    for first in range(0, streams, PER_CONNECTION):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn = Connection(handler, client=True)
        for _ in range(min(PER_CONNECTION, streams - first)):
            stream = conn.open_stream()
            conn.send_headers(
                stream,
                request_headers(f"/{ECHO}/ServerStream"),
            )
            conn.send_data(stream, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        clients.append((sock, conn))
    peak = -1
    sent = time.monotonic()
    deadline = time.monotonic() + 60
    while handler.ended < streams and time.monotonic() < deadline:
        for sock, conn in clients:
            sock.settimeout(0.01)
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if data:
                conn.receive(data)
                sock.sendall(conn.data_to_send())
        # The echo server sends its headers with its reply, after the hold: every call is
        # open in the agent from shortly after it was sent until the first one ends.
        if handler.ended == 0 and time.monotonic() - sent >= 1.0:
            peak = max(peak, rss_kib(pid))
    for sock, _ in clients:
        sock.close()
    if handler.ended < streams:
        raise RuntimeError(f"{handler.ended} of {streams} calls ended")
    if peak < 0:
        raise RuntimeError("the streams were never all open at once: raise --hold-ms")
    return before, peak


def measure(agent: AgentProcess, streams: int, hold_ms: int) -> list[tuple[int, int]]:
    """The first round (from a fresh agent) and a second one."""
    assert agent.pid is not None
    return [round_of(agent.listener_port(), streams, hold_ms, agent.pid) for _ in range(2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--hold-ms", type=int, default=3000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-rss-"))
    stubs = generate_stubs(tmp / "stubs")
    sys.path.insert(0, str(stubs))
    with EchoServer(tmp, stubs, "echo-a") as server:
        from tests.fixtures.processes import free_port

        config = {
            "services": [{"name": ECHO, "protocol": "grpc", "health": {"enabled": False}}],
            "listeners": [
                {"port": free_port(), "service": ECHO, "protocol": "grpc", "max_connections": 4096}
            ],
            "log_level": "WARNING",
        }
        agent = start_agent(tmp / "agent", config)
        try:
            with agent.client() as client:
                client.put(
                    f"/v1/registrations/{ECHO}/echo-a",
                    json={"host": "127.0.0.1", "port": server.port},
                ).raise_for_status()
            agent.wait_endpoints(ECHO, 1)
            for name, (before, peak) in zip(
                ("first", "second"), measure(agent, args.streams, args.hold_ms), strict=True
            ):
                print(
                    f"{name} round: RSS {before / 1024:.1f} MB before, "
                    f"{peak / 1024:.1f} MB with {args.streams} streams open: "
                    f"growth {(peak - before) / 1024:.1f} MB (target <= 20 MB)",
                    flush=True,
                )
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
