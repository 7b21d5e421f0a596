"""Coverage-guided fuzz targets for every decoder that reads peers' bytes (issue 25).

Each target takes arbitrary bytes and must either succeed or raise one of the errors the
decoder documents for bad input (``RemoteProtocolError`` and its kind, or the codec's
own); anything else (an IndexError, a RecursionError, a hang) is a bug. The targets are
plain functions: ``fuzz/run.py`` drives them with atheris (``make fuzz``), and
``tests/unit/test_fuzz_targets.py`` runs each over its seeds and random bytes in CI so
that none rots.

Fuzz the interpreted build (``MESHAGENT_PURE_PYTHON=1``, which ``make fuzz`` sets):
atheris guides by Python line coverage, which mypyc-compiled modules do not report.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from agent.api.http1 import ApiConnection, ApiServer, Http1Limits, Reply
from agent.codec import NEED_DATA
from agent.errors import ProtocolError
from agent.h2.connection import PREFACE, Connection, Handler, StreamGone
from agent.h2.connection import ProtocolError as H2ProtocolError
from agent.runtime.sniff import sniff
from agent.telemetry.propagation import (
    incoming_trace,
    parse_grpc_timeout,
    parse_hops,
    parse_path,
    parse_timeout_ms,
)
from plugins.dubbo.body import decode_invocation, decode_result, timeout_attachment
from plugins.dubbo.frame import FrameDecoder, Header
from plugins.dubbo.hessian2 import decode_all
from plugins.grpc.framing import MessageSizes, MessageTooLarge
from plugins.thrift.base import BaseValues, read_extra, with_base
from plugins.thrift.codec import MessageDecoder, Proto, Transport, check_body

Target = Callable[[bytes], None]


def _split(data: bytes) -> list[bytes]:
    """The input in pieces, cut where the input says (its first byte), so the fuzzer
    also explores how a decoder resumes between reads."""
    if not data:
        return []
    step = (data[0] % 31) + 1
    rest = data[1:]
    return [rest[at : at + step] for at in range(0, len(rest), step)]


def hessian2(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_all(data)


def dubbo_frames(data: bytes) -> None:
    decoder = FrameDecoder(max_body=1 << 16)
    try:
        for piece in _split(data):
            decoder.receive_data(piece)
            while (frame := decoder.next_event()) is not NEED_DATA:
                assert not isinstance(frame, type(NEED_DATA))
                body = frame.body  # type: ignore[union-attr]
                header: Header = frame.header  # type: ignore[union-attr]
                if header.request and not header.event:
                    with contextlib.suppress(ProtocolError):
                        decode_invocation(body)
                        timeout_attachment(body)
                elif not header.request:
                    with contextlib.suppress(ProtocolError):
                        decode_result(header, body)
    except ProtocolError:
        pass


def _thrift(data: bytes, proto: Proto | None, transport: Transport | None) -> None:
    decoder = MessageDecoder(proto, transport, max_size=1 << 16)
    try:
        for piece in _split(data):
            decoder.receive_data(piece)
            while (message := decoder.next_event()) is not NEED_DATA:
                with_base(message, BaseValues("log-id", "caller", "127.0.0.1:1"))  # type: ignore[arg-type]
                read_extra(message)  # type: ignore[arg-type]
                with contextlib.suppress(ProtocolError):
                    check_body(message)  # type: ignore[arg-type]
    except ProtocolError:
        pass


def thrift_detected(data: bytes) -> None:
    _thrift(data, None, None)


def thrift_buffered_binary(data: bytes) -> None:
    _thrift(data, Proto.BINARY, Transport.BUFFERED)


def thrift_buffered_compact(data: bytes) -> None:
    _thrift(data, Proto.COMPACT, Transport.BUFFERED)


def grpc_framing(data: bytes) -> None:
    sizes = MessageSizes(1 << 16)
    try:
        for piece in _split(data):
            sizes.feed(piece)
    except MessageTooLarge:
        pass


class _Answering(Handler):
    """A handler that answers every request at once and gives back every window, so that
    the fuzzed bytes reach the engine's sending side too."""

    def __init__(self) -> None:
        self.conn: Connection | None = None

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        assert self.conn is not None
        with contextlib.suppress(StreamGone):
            self.conn.send_headers(stream_id, [(b":status", b"200")], end_stream=True)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        assert self.conn is not None
        self.conn.ack(stream_id, flow)


def http2_server(data: bytes) -> None:
    """The agent's HTTP/2 engine (agent/h2) in the server role, as the HTTP listener and
    the gRPC relay run it, with its flood limits."""
    handler = _Answering()
    conn = handler.conn = Connection(handler, client=False)
    try:
        for piece in _split(b"\x00" + PREFACE + data[1:]):
            conn.receive(piece)
            conn.data_to_send()
    except H2ProtocolError:
        pass


class MemoryTransport:
    """What the API connection asks of its transport, in memory: what it wrote is kept
    (tests read the answers; a fuzz execution's output is small)."""

    def __init__(self) -> None:
        self.closing = False
        self.out = bytearray()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.out += chunk

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_OK = Reply(200, b"{}")


# The API connection keeps its loop (it must be running): one for every execution.
_LOOP = asyncio.new_event_loop()


def http1_heads(data: bytes) -> None:
    """The API port's HTTP/1.1 server (agent/api/http1.py): heads, bodies, pipelining,
    limits; every request answered with a fixed reply."""
    _LOOP.run_until_complete(_http1_heads(data))


async def _http1_heads(data: bytes) -> None:
    server = ApiServer(lambda request: _OK, socket.socket(), Http1Limits(max_body_bytes=4096))
    try:
        connection = ApiConnection(server)
        transport = MemoryTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        for piece in _split(data):
            if transport.closing:
                break
            connection.data_received(piece)
        connection.connection_lost(None)
    finally:
        server.socket.close()


def sniffer(data: bytes) -> None:
    for end in range(len(data) + 1):
        if sniff(data[:end]) is not None:
            return


def propagation(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parts = text.split("\n")
    headers = {
        "traceparent": parts[0],
        "tracestate": parts[1] if len(parts) > 1 else "",
        "b3": parts[2] if len(parts) > 2 else "",
        "x-b3-traceid": parts[3] if len(parts) > 3 else "",
        "x-b3-spanid": parts[4] if len(parts) > 4 else "",
    }
    incoming_trace(headers)
    for part in parts:
        parse_timeout_ms(part)
        parse_grpc_timeout(part)
        parse_hops(part)
        parse_path(part)


TARGETS: dict[str, Target] = {
    "hessian2": hessian2,
    "dubbo_frames": dubbo_frames,
    "thrift_detected": thrift_detected,
    "thrift_buffered_binary": thrift_buffered_binary,
    "thrift_buffered_compact": thrift_buffered_compact,
    "grpc_framing": grpc_framing,
    "http2_server": http2_server,
    "http1_heads": http1_heads,
    "sniffer": sniffer,
    "propagation": propagation,
}
