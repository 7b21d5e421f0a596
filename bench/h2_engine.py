"""The HTTP/2 engine alone, in process: what one relayed gRPC unary call costs each side of
a relay, agent/h2 against python-h2 (h2 4.x with hpack), the same bytes, interleaved rounds.

    /work/main/.venv/bin/python bench/h2_engine.py [--rounds N --calls C]

Per call, the listener side ("server") reads a request (HEADERS with grpc-go's usual
fields, and one DATA frame with END_STREAM) and writes the response (HEADERS, DATA,
trailers); the provider side ("client") writes the request and reads the response. The
peer's bytes are made once beforehand by python-h2, so only the engine under test runs in
the timed loop. Prints µs per call (median over rounds) and the ratio to python-h2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from agent.h2.connection import Connection, Handler, Settings  # noqa: E402

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/grpc.testing.BenchmarkService/UnaryCall"),
    (b":authority", b"127.0.0.1:50051"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-go/1.77.0"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"9999867u"),
]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]
MESSAGE = b"\x00\x00\x00\x00\x10" + b"x" * 16


def _h2(client: bool) -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )


def _consume(conn: h2.connection.H2Connection, data: bytes) -> None:
    """Read ``data`` and give its window back, as a peer reading everything does."""
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)


def requests_bytes(calls: int) -> tuple[bytes, list[bytes]]:
    """A client's preface and SETTINGS, then each call's request frames (a python-h2
    server answers each call, so that the client's windows and streams stay as a real
    peer would keep them)."""
    client = _h2(True)
    client.initiate_connection()
    start = client.data_to_send()
    answer = _h2(False)
    answer.initiate_connection()
    answer.receive_data(start)
    client.receive_data(answer.data_to_send())
    frames = []
    for _ in range(calls):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, REQUEST)
        client.send_data(stream_id, MESSAGE, end_stream=True)
        data = client.data_to_send()
        frames.append(data)
        _consume(answer, data)
        answer.send_headers(stream_id, RESPONSE)
        answer.send_data(stream_id, MESSAGE)
        answer.send_headers(stream_id, TRAILERS, end_stream=True)
        _consume(client, answer.data_to_send())
    return start, frames


def responses_bytes(calls: int) -> tuple[bytes, list[bytes]]:
    """A server's SETTINGS, then each call's response frames (streams 1, 3, ...)."""
    server = _h2(False)
    server.initiate_connection()
    client = _h2(True)
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    start = server.data_to_send()
    frames = []
    for _ in range(calls):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, REQUEST)
        client.send_data(stream_id, MESSAGE, end_stream=True)
        _consume(server, client.data_to_send())
        server.send_headers(stream_id, RESPONSE)
        server.send_data(stream_id, MESSAGE)
        server.send_headers(stream_id, TRAILERS, end_stream=True)
        data = server.data_to_send()
        frames.append(data)
        _consume(client, data)
        server.receive_data(client.data_to_send())
    return start, frames


class Sink(Handler):
    def __init__(self) -> None:
        self.ended: list[int] = []

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if end_stream:
            self.ended.append(stream_id)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        self.connection.ack(stream_id, flow)
        if end_stream:
            self.ended.append(stream_id)

    connection: Connection


def ours_server(start: bytes, frames: list[bytes]) -> float:
    sink = Sink()
    conn = Connection(sink, client=False, settings=Settings(max_concurrent_streams=1 << 30))
    sink.connection = conn
    conn.receive(start)
    conn.data_to_send()
    began = time.perf_counter()
    for stream_id, data in enumerate(frames, start=0):
        conn.receive(data)
        sid = stream_id * 2 + 1
        conn.send_headers(sid, RESPONSE)
        conn.send_data(sid, MESSAGE)
        conn.send_headers(sid, TRAILERS, end_stream=True)
        conn.data_to_send()
    return time.perf_counter() - began


def theirs_server(start: bytes, frames: list[bytes]) -> float:
    conn = _h2(False)
    conn.local_settings.max_concurrent_streams = 1 << 30
    conn.initiate_connection()
    conn.receive_data(start)
    conn.data_to_send()
    began = time.perf_counter()
    for data in frames:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id
        conn.send_headers(sid, RESPONSE)
        conn.send_data(sid, MESSAGE)
        conn.send_headers(sid, TRAILERS, end_stream=True)
        conn.data_to_send()
    return time.perf_counter() - began


def ours_client(start: bytes, frames: list[bytes]) -> float:
    sink = Sink()
    conn = Connection(sink, client=True)
    sink.connection = conn
    conn.receive(start)
    conn.data_to_send()
    began = time.perf_counter()
    for data in frames:
        sid = conn.open_stream()
        conn.send_headers(sid, REQUEST)
        conn.send_data(sid, MESSAGE, end_stream=True)
        conn.data_to_send()
        conn.receive(data)
    return time.perf_counter() - began


def theirs_client(start: bytes, frames: list[bytes]) -> float:
    conn = _h2(True)
    conn.initiate_connection()
    conn.receive_data(start)
    conn.data_to_send()
    began = time.perf_counter()
    for data in frames:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, REQUEST)
        conn.send_data(sid, MESSAGE, end_stream=True)
        conn.data_to_send()
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    requests = requests_bytes(args.calls)
    responses = responses_bytes(args.calls)
    runs = {
        ("server", "agent/h2"): lambda: ours_server(*requests),
        ("server", "python-h2"): lambda: theirs_server(*requests),
        ("client", "agent/h2"): lambda: ours_client(*responses),
        ("client", "python-h2"): lambda: theirs_client(*responses),
    }
    results: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            results[key].append(run() / args.calls * 1e6)
    from agent.compiled import compiled_modules

    print(f"agent/h2 compiled: {compiled_modules().get('agent.h2.connection', False)}")
    for side in ("server", "client"):
        ours = statistics.median(results[(side, "agent/h2")])
        theirs = statistics.median(results[(side, "python-h2")])
        print(
            f"{side:6}  agent/h2 {ours:7.2f} µs/call  python-h2 {theirs:7.2f} µs/call  "
            f"ratio {ours / theirs:.3f}"
        )


if __name__ == "__main__":
    main()
