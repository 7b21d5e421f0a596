"""Valid inputs each fuzz target starts from, built with the agent's own encoders (and
h2's client for HTTP/2), so the fuzzer begins inside the formats. Every seed starts with
the byte that tells the targets how to split the rest into reads (fuzz/targets.py)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import h2.config
import h2.connection

from plugins.dubbo.body import (
    Invocation,
    encode_invocation,
    heartbeat_request,
    request_frame,
    value_response_frame,
)
from plugins.dubbo.hessian2 import JavaObject, encode
from plugins.thrift.codec import Header, MessageType, Proto, encode_header

SPLIT = b"\x06"  # reads of 7 bytes


def _hessian() -> list[bytes]:
    person = JavaObject("com.acme.Person", {"name": "ada", "age": 36, "tags": ["a", "b"]})
    return [
        encode(1, -1, 2**40, 1.5, True, None, "text", "\u00fc\u20ac", b"\x00\x01"),
        encode([1, 2, 3], {"k": "v", 1: [None]}, person, [person, person]),
        encode(datetime(2026, 1, 2, tzinfo=UTC), Decimal("1.25")),
    ]


def _dubbo() -> list[bytes]:
    invocation = Invocation(
        "com.acme.Echo", "1.0", "echo", ("java.lang.String",), ("hi",), {"timeout": "500"}
    )
    body = encode_invocation(invocation)
    return [request_frame(1, body) + heartbeat_request(2), value_response_frame(3, "answer")]


def _thrift(proto: Proto, framed: bool) -> bytes:
    head = encode_header(Header("echo", MessageType.CALL, 1, proto))
    if proto is Proto.BINARY:
        # field 1: string "hi"; field 255: Base struct with LogID; stop
        body = b"\x0b\x00\x01" + struct.pack(">i", 2) + b"hi"
        body += b"\x0c\x00\xff" + b"\x0b\x00\x01" + struct.pack(">i", 2) + b"id" + b"\x00"
        body += b"\x00"
    else:
        body = b"\x18\x02hi" + b"\x0c\x0f\x1f\x18\x02id\x00" + b"\x00"
    message = head + body
    return struct.pack(">i", len(message)) + message if framed else message


def _http2() -> bytes:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [
            (":method", "POST"),
            (":path", "/echo.Echo/Unary"),
            (":scheme", "http"),
            (":authority", "a"),
            ("content-type", "application/grpc"),
        ],
    )
    client.send_data(1, b"\x00\x00\x00\x00\x02hi", end_stream=True)
    client.reset_stream(1)
    client.ping(b"12345678")
    wire = client.data_to_send()
    # The target sends the preface itself; the seed is what follows it.
    return wire[len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") :]


SEEDS: dict[str, list[bytes]] = {
    "hessian2": _hessian(),
    "dubbo_frames": [SPLIT + seed for seed in _dubbo()],
    "thrift_detected": [
        SPLIT + _thrift(proto, framed)
        for proto in (Proto.BINARY, Proto.COMPACT)
        for framed in (True, False)
    ],
    "thrift_buffered_binary": [SPLIT + _thrift(Proto.BINARY, False)],
    "thrift_buffered_compact": [SPLIT + _thrift(Proto.COMPACT, False)],
    "grpc_framing": [SPLIT + b"\x00\x00\x00\x00\x02hi\x00\x00\x00\x00\x00"],
    "http2_server": [SPLIT + _http2()],
    "http1_heads": [
        SPLIT + b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        SPLIT + b"POST /v1/invoke/dubbo/s/m HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /readyz HTTP/1.0\r\n\r\n",
        SPLIT + b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
    ],
    "sniffer": [
        b"\xda\xbb\xc2\x00",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
        _thrift(Proto.BINARY, True),
        _thrift(Proto.COMPACT, False),
    ],
    "propagation": [
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=x\n"
        b"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1\n\n\n500\n2S\n3\napp-a,app-b",
    ],
}
