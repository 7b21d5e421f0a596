"""The HTTP/2 connection with bytes alone: against python-h2 (a peer nobody here wrote) in
both roles, and frame by frame for what RFC 9113 asks of a receiver: each malformed frame
or header list answered with the stream or connection error the RFC names, flow control
both ways, the flood defences, and work linear in what arrives."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import pytest

from agent.h2.connection import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEAD,
    HEADERS,
    INFORMATIONAL,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    TRAILERS,
    WINDOW_UPDATE,
    Connection,
    Handler,
    ProtocolError,
    Settings,
    StreamGone,
)
from agent.h2.hpack import Encoder
from tests.support.work import interpreted, lines_run

Headers = list[tuple[bytes, bytes]]

REQUEST: Headers = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/pkg.Svc/Call"),
    (b":authority", b"localhost"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


class Recorder(Handler):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def headers_received(self, stream_id: int, headers: Headers, kind: int, end: bool) -> None:
        self.events.append(("headers", stream_id, headers, kind, end))

    def stream_data(self, stream_id: int, data: bytes, flow: int, end: bool) -> None:
        self.events.append(("data", stream_id, data, flow, end))

    def stream_reset(self, stream_id: int, code: int) -> None:
        self.events.append(("reset", stream_id, code))

    def window_opened(self, stream_id: int) -> None:
        self.events.append(("window", stream_id))

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        self.events.append(("goaway", last_stream_id, code))

    def kinds(self) -> list[object]:
        return [event[0] for event in self.events]


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return (
        struct.pack(">BHBBI", length >> 16, length & 0xFFFF, frame_type, flags, stream_id) + payload
    )


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame in ``data`` (no preface)."""
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append(
            (data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length])
        )
        data = data[9 + length :]
    return out


def server(
    settings: Settings | None = None, clock: list[float] | None = None
) -> tuple[Connection, Recorder]:
    """A server connection that has read a client's preface and SETTINGS."""
    recorder = Recorder()
    now = clock if clock is not None else [0.0]
    conn = Connection(recorder, client=False, settings=settings, clock=lambda: now[0])
    conn.receive(PREFACE + frame(SETTINGS, 0, 0) + frame(SETTINGS, 1, 0))  # theirs, our ACK
    conn.data_to_send()
    return conn, recorder


def request_block(headers: Headers = REQUEST, encoder: Encoder | None = None) -> bytes:
    return (encoder or Encoder()).encode(headers)


def sent_errors(conn: Connection) -> list[tuple[str, int, int]]:
    """RST_STREAM and GOAWAY frames queued: (kind, stream or last stream, code)."""
    out = []
    for frame_type, _, stream_id, payload in frames(conn.data_to_send()):
        if frame_type == RST_STREAM:
            out.append(("rst", stream_id, int.from_bytes(payload, "big")))
        elif frame_type == GOAWAY:
            out.append(
                ("goaway", int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big"))
            )
    return out


def connection_error(conn: Connection, data: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        conn.receive(data)
    assert caught.value.code == code
    assert sent_errors(conn)[-1][0::2] == ("goaway", code)


# -- against python-h2 -----------------------------------------------------------------------


def _h2(client: bool) -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client, header_encoding=None)
    )


def test_serves_python_h2_client_requests_and_trailers() -> None:
    client = _h2(True)
    client.initiate_connection()
    recorder = Recorder()
    conn = Connection(recorder, client=False, settings=Settings(stream_window=1 << 20))
    conn.receive(client.data_to_send())
    client.receive_data(conn.data_to_send())
    for _ in range(3):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, REQUEST)
        client.send_data(stream_id, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        conn.receive(client.data_to_send())
        assert recorder.events[-2:] == [
            ("headers", stream_id, REQUEST, HEAD, False),
            ("data", stream_id, b"\x00\x00\x00\x00\x02hi", 7, True),
        ]
        conn.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        conn.send_data(stream_id, b"\x00\x00\x00\x00\x02ok")
        conn.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
        events = client.receive_data(conn.data_to_send())
        assert [type(e) for e in events] == [
            h2.events.ResponseReceived,
            h2.events.DataReceived,
            h2.events.TrailersReceived,
            h2.events.StreamEnded,
        ]
        assert events[2].headers == [(b"grpc-status", b"0")]
    assert conn.streams == {}  # ended both ways: forgotten


def test_calls_a_python_h2_server_with_large_bodies_under_flow_control() -> None:
    peer = _h2(False)
    peer.initiate_connection()
    recorder = Recorder()
    conn = Connection(recorder, client=True)
    peer.receive_data(conn.data_to_send())
    conn.receive(peer.data_to_send())
    stream_id = conn.open_stream()
    conn.send_headers(stream_id, REQUEST)
    body = b"x" * 200_000
    sent = 0
    received = 0
    while sent < len(body):
        window = conn.window(stream_id)
        assert window > 0
        piece = body[sent : sent + window]
        sent += len(piece)
        conn.send_data(stream_id, piece, end_stream=sent == len(body))
        assert conn.window(stream_id) == 0 or sent == len(body)
        for event in peer.receive_data(conn.data_to_send()):
            if isinstance(event, h2.events.DataReceived):
                received += len(event.data)
                peer.acknowledge_received_data(event.flow_controlled_length, stream_id)
        conn.receive(peer.data_to_send())  # WINDOW_UPDATEs
    assert received == len(body)
    assert ("window", stream_id) in recorder.events
    peer.send_headers(stream_id, [(b":status", b"100")])
    peer.send_headers(stream_id, [(b":status", b"200")])
    peer.send_data(stream_id, b"y" * 1000, end_stream=True)
    conn.receive(peer.data_to_send())
    heads = [e for e in recorder.events if e[0] == "headers"]
    assert [(e[3], e[4]) for e in heads] == [(INFORMATIONAL, False), (HEAD, False)]
    assert recorder.events[-1] == ("data", stream_id, b"y" * 1000, 1000, True)
    assert conn.streams == {}


# -- the preface and SETTINGS ----------------------------------------------------------------


def test_a_bad_preface_is_a_protocol_error() -> None:
    conn = Connection(Recorder(), client=False)
    conn.data_to_send()
    connection_error(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_ERROR)


def test_the_preface_may_arrive_byte_by_byte_and_settings_are_acknowledged() -> None:
    conn = Connection(Recorder(), client=False, settings=Settings(stream_window=1 << 20))
    sent = frames(conn.data_to_send())
    assert [kind for kind, _, _, _ in sent] == [SETTINGS]  # the default connection window
    settings = dict(struct.iter_unpack(">HI", sent[0][3]))
    assert settings[2] == 0 and settings[3] == 100 and settings[4] == 1 << 20
    for byte in PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1000)):
        conn.receive(bytes([byte]))
    assert frames(conn.data_to_send()) == [(SETTINGS, 1, 0, b"")]
    assert conn.peer_initial_window == 1000


def test_the_first_frame_must_be_settings() -> None:
    conn = Connection(Recorder(), client=False)
    connection_error(conn, PREFACE + frame(PING, 0, 0, b"x" * 8), PROTOCOL_ERROR)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(SETTINGS, 0, 1), PROTOCOL_ERROR),  # on a stream
        (frame(SETTINGS, 0, 0, b"x" * 5), FRAME_SIZE_ERROR),
        (frame(SETTINGS, 1, 0, b"x" * 6), FRAME_SIZE_ERROR),  # ACK with a payload
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 2, 2)), PROTOCOL_ERROR),  # ENABLE_PUSH 2
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 31)), FLOW_CONTROL_ERROR),
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 16383)), PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 1 << 24)), PROTOCOL_ERROR),
        (frame(PING, 0, 1, b"x" * 8), PROTOCOL_ERROR),
        (frame(PING, 0, 0, b"x" * 7), FRAME_SIZE_ERROR),
        (frame(GOAWAY, 0, 1, b"x" * 8), PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), FRAME_SIZE_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1)), FLOW_CONTROL_ERROR),
        (frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
        (frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR),  # idle stream
        (frame(HEADERS, END_HEADERS, 0, b"\x82"), PROTOCOL_ERROR),
        (frame(RST_STREAM, 0, 0, b"\x00" * 4), PROTOCOL_ERROR),
        (frame(RST_STREAM, 0, 1, b"\x00" * 4), PROTOCOL_ERROR),  # idle stream
        (frame(PRIORITY, 0, 0, b"\x00" * 5), PROTOCOL_ERROR),
        (frame(CONTINUATION, END_HEADERS, 1, b"\x82"), PROTOCOL_ERROR),
        (frame(5, END_HEADERS, 1, b"\x00\x00\x00\x02\x82"), PROTOCOL_ERROR),  # PUSH_PROMISE
        (frame(DATA, 0, 1, b"x" * 16385), FRAME_SIZE_ERROR),
        (frame(HEADERS, END_HEADERS, 1, b"\xc0"), COMPRESSION_ERROR),  # index past the table
        (frame(HEADERS, END_HEADERS, 2, request_block()), PROTOCOL_ERROR),  # even id
    ],
)
def test_connection_errors(data: bytes, code: int) -> None:
    conn, _ = server()
    connection_error(conn, data, code)
    conn.receive(frame(PING, 0, 0, b"x" * 8))  # after the error, nothing more is read
    assert conn.data_to_send() == b""


def test_unknown_frames_and_flags_are_ignored_and_ping_is_answered() -> None:
    conn, _ = server()
    conn.receive(frame(0xFA, 0xFF, 0, b"whatever") + frame(PING, 0xF0, 0, b"12345678"))
    assert frames(conn.data_to_send()) == [(PING, 1, 0, b"12345678")]
    conn.receive(frame(PING, 1, 0, b"12345678"))  # an ACK is not answered
    assert conn.data_to_send() == b""


# -- streams ---------------------------------------------------------------------------------


def test_stream_ids_must_grow() -> None:
    conn, recorder = server()
    encoder = Encoder()
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 5, request_block(encoder=encoder)))
    assert recorder.events[-1][:2] == ("headers", 5)
    conn.send_headers(5, [(b":status", b"200")], end_stream=True)
    conn.data_to_send()
    # A new stream below the last one opened: a connection error.
    connection_error(
        conn, frame(HEADERS, END_HEADERS, 3, request_block(encoder=encoder)), PROTOCOL_ERROR
    )


def test_frames_after_a_stream_ended_both_ways_are_a_connection_error() -> None:
    conn, _ = server()
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block()))
    conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    conn.data_to_send()
    # RFC 9113 §5.1 (closed): frames after END_STREAM both ways, STREAM_CLOSED (h2spec 5.1.12).
    connection_error(conn, frame(DATA, 0, 1, b"x"), STREAM_CLOSED)


def test_frames_after_the_peer_reset_a_stream_are_a_stream_error() -> None:
    conn, _ = server()
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.receive(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    conn.receive(frame(DATA, 0, 1, b"x"))
    assert sent_errors(conn) == [("rst", 1, STREAM_CLOSED)]


def test_half_closed_remote_refuses_more_data() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block()))
    conn.receive(frame(DATA, 0, 1, b"late"))
    assert sent_errors(conn) == [("rst", 1, STREAM_CLOSED)]
    assert recorder.events[-1] == ("reset", 1, STREAM_CLOSED)
    with pytest.raises(StreamGone):
        conn.send_headers(1, [(b":status", b"200")])


def test_frames_in_flight_after_our_reset_are_ignored() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.reset(1, CANCEL)
    assert sent_errors(conn) == [("rst", 1, CANCEL)]
    before = conn.recv_window
    conn.receive(frame(DATA, 0, 1, b"x" * 100) + frame(RST_STREAM, 0, 1, b"\x00\x00\x00\x08"))
    assert sent_errors(conn) == []
    assert conn.recv_window == before - 100  # counted against the connection all the same
    assert recorder.kinds() == ["headers"]


def test_the_peer_resetting_a_stream_tells_the_handler() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.receive(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    assert recorder.events[-1] == ("reset", 1, CANCEL)
    assert conn.streams == {}
    with pytest.raises(StreamGone):
        conn.send_data(1, b"x")


BAD_REQUESTS: list[Headers] = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"Upper", b"x")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"connection", b"close")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"te", b"gzip")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b"x", b"1"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":status", b"200")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":bogus", b"x")],
    [(b":method", b"GET"), (b":scheme", b"http")],
    [(b":method", b"GET"), (b":path", b"/")],
    [(b":scheme", b"http"), (b":path", b"/")],
    [(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x", b"a\r\nb")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x", b" padded")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x y", b"1")],
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b"content-length", b"x")],
    [(b":method", b"CONNECT"), (b":authority", b"h:1"), (b":path", b"/")],
]


@pytest.mark.parametrize("headers", BAD_REQUESTS)
def test_malformed_requests_are_reset_and_the_table_stays_in_step(headers: Headers) -> None:
    conn, recorder = server()
    encoder = Encoder()
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(headers)))
    assert sent_errors(conn) == [("rst", 1, PROTOCOL_ERROR)]
    assert recorder.events == []
    # The next request on the connection is decoded with the same dynamic table.
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, encoder.encode(REQUEST)))
    assert recorder.events == [("headers", 3, REQUEST, HEAD, True)]


def test_connect_needs_only_an_authority() -> None:
    conn, recorder = server()
    connect = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block(connect)))
    assert recorder.events == [("headers", 1, connect, HEAD, False)]


def test_trailers_must_end_the_stream_and_carry_no_pseudo_fields() -> None:
    conn, recorder = server()
    encoder = Encoder()
    conn.receive(frame(HEADERS, END_HEADERS, 1, encoder.encode(REQUEST)))
    conn.receive(frame(HEADERS, END_HEADERS, 1, encoder.encode([(b"x-t", b"1")])))
    assert sent_errors(conn) == [("rst", 1, PROTOCOL_ERROR)]
    conn.receive(frame(HEADERS, END_HEADERS, 3, encoder.encode(REQUEST)))
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, encoder.encode([(b":path", b"/")])))
    assert sent_errors(conn) == [("rst", 3, PROTOCOL_ERROR)]
    conn.receive(frame(HEADERS, END_HEADERS, 5, encoder.encode(REQUEST)))
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 5, encoder.encode([(b"x-t", b"1")])))
    assert recorder.events[-1] == ("headers", 5, [(b"x-t", b"1")], TRAILERS, True)


def test_content_length_must_match_the_data() -> None:
    conn, recorder = server()
    encoder = Encoder()
    with_length = [*REQUEST, (b"content-length", b"3")]
    conn.receive(frame(HEADERS, END_HEADERS, 1, encoder.encode(with_length)))
    conn.receive(frame(DATA, END_STREAM, 1, b"ab"))
    assert sent_errors(conn) == [("rst", 1, PROTOCOL_ERROR)]
    conn.receive(frame(HEADERS, END_HEADERS, 3, encoder.encode(with_length)))
    conn.receive(frame(DATA, 0, 3, b"abcd"))
    assert sent_errors(conn) == [("rst", 3, PROTOCOL_ERROR)]
    conn.receive(frame(HEADERS, END_HEADERS, 5, encoder.encode(with_length)))
    conn.receive(frame(DATA, END_STREAM, 5, b"abc"))
    assert recorder.events[-1] == ("data", 5, b"abc", 3, True)


def test_a_block_split_over_continuations_and_a_frame_inside_one() -> None:
    conn, recorder = server()
    block = request_block()
    conn.receive(
        frame(HEADERS, 0, 1, block[:3])
        + frame(CONTINUATION, 0, 1, block[3:7])
        + frame(CONTINUATION, END_HEADERS, 1, block[7:])
    )
    assert recorder.events == [("headers", 1, REQUEST, HEAD, False)]
    conn.receive(frame(HEADERS, 0, 3, block[:3]))
    connection_error(conn, frame(PING, 0, 0, b"x" * 8), PROTOCOL_ERROR)


def test_padding_is_stripped_and_counted_in_flow_control() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS | PADDED, 1, b"\x03" + request_block() + b"\x00" * 3))
    conn.receive(frame(DATA, PADDED, 1, b"\x04data" + b"\x00" * 4))
    assert recorder.events[-1] == ("data", 1, b"data", 9, False)
    connection_error(conn, frame(DATA, PADDED, 1, b"\x09data"), PROTOCOL_ERROR)


def test_streams_over_the_limit_are_refused() -> None:
    conn, recorder = server(Settings(max_concurrent_streams=2))
    encoder = Encoder()
    for stream_id in (1, 3, 5):
        conn.receive(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(REQUEST)))
    assert sent_errors(conn) == [("rst", 5, REFUSED_STREAM)]
    assert [e[1] for e in recorder.events] == [1, 3]
    conn.receive(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    conn.receive(frame(HEADERS, END_HEADERS, 7, encoder.encode(REQUEST)))
    assert recorder.events[-1] == ("headers", 7, REQUEST, HEAD, False)


def test_a_self_dependent_stream_is_a_stream_error() -> None:
    conn, _ = server()
    priority = struct.pack(">IB", 1, 16)
    conn.receive(frame(HEADERS, END_HEADERS | 0x20, 1, priority + request_block()))
    assert sent_errors(conn) == [("rst", 1, PROTOCOL_ERROR)]
    conn.receive(frame(PRIORITY, 0, 3, struct.pack(">IB", 3, 16)))
    assert sent_errors(conn) == [("rst", 3, PROTOCOL_ERROR)]
    conn.receive(frame(PRIORITY, 0, 5, b"\x00" * 4))
    assert sent_errors(conn) == [("rst", 5, FRAME_SIZE_ERROR)]


# -- flow control ----------------------------------------------------------------------------


def test_windows_are_given_back_at_half_and_enforced() -> None:
    conn, recorder = server(Settings(stream_window=1000, connection_window=100_000))
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.receive(frame(DATA, 0, 1, b"x" * 400))
    conn.ack(1, 400)
    assert frames(conn.data_to_send()) == []  # under half of either window
    conn.receive(frame(DATA, 0, 1, b"x" * 200))
    conn.ack(1, 200)
    assert frames(conn.data_to_send()) == [(WINDOW_UPDATE, 0, 1, struct.pack(">I", 600))]
    # Unacknowledged, the stream's window runs out: more is a stream error.
    conn.receive(frame(DATA, 0, 1, b"x" * 1000))
    conn.receive(frame(DATA, 0, 1, b"x"))
    assert sent_errors(conn) == [("rst", 1, FLOW_CONTROL_ERROR)]
    assert recorder.events[-1] == ("reset", 1, FLOW_CONTROL_ERROR)


def test_the_connection_window_is_enforced() -> None:
    conn, _ = server(Settings(stream_window=1 << 20))
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.receive(frame(DATA, 0, 1, b"x" * 16384) * 3 + frame(DATA, 0, 1, b"x" * 16383))
    connection_error(conn, frame(DATA, 0, 1, b"x"), FLOW_CONTROL_ERROR)


def test_sending_stays_within_the_peers_windows() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.send_headers(1, [(b":status", b"200")])
    assert conn.window(1) == 65535
    conn.send_data(1, b"x" * 65535)
    assert conn.window(1) == 0
    with pytest.raises(ValueError, match="flow-control window"):
        conn.send_data(1, b"x")
    sent = frames(conn.data_to_send())
    assert [len(payload) for kind, _, _, payload in sent if kind == DATA] == [16384] * 3 + [16383]
    conn.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 10)))
    assert conn.window(1) == 0  # the connection's window is still spent
    conn.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100)))
    assert conn.window(1) == 10
    assert recorder.events[-2:] == [("window", 1), ("window", 0)]
    # A smaller INITIAL_WINDOW_SIZE may make a stream's window negative (§6.9.2).
    conn.receive(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535 - 20)))
    assert conn.streams[1].send_window == -10 and conn.window(1) == 0


# -- defences --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flood",
    [
        frame(PING, 0, 0, b"x" * 8),
        frame(SETTINGS, 0, 0),
        frame(PRIORITY, 0, 9, struct.pack(">IB", 0, 16)),
    ],
    ids=["PING", "SETTINGS", "PRIORITY"],
)
def test_control_frame_floods_end_the_connection(flood: bytes) -> None:
    clock = [10.0]
    conn, _ = server(Settings(max_control_frames_per_s=50), clock)
    conn.receive(flood * 49)  # and the client's first SETTINGS
    conn.data_to_send()
    clock[0] = 11.0  # a new second: the count starts again
    conn.receive(flood * 50)
    conn.data_to_send()
    connection_error(conn, flood, ENHANCE_YOUR_CALM)


def test_pings_answering_our_data_are_not_a_flood() -> None:
    # grpc-go pings each time it receives DATA (bandwidth-delay estimation).
    clock = [0.0]
    conn, _ = server(Settings(max_control_frames_per_s=10, stream_window=1 << 20), clock)
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.send_headers(1, [(b":status", b"200")])
    for _ in range(100):
        conn.send_data(1, b"x")
        conn.receive(frame(PING, 0, 0, b"12345678"))
    assert [kind for kind, _, _, _ in frames(conn.data_to_send())].count(PING) == 100
    connection_error(conn, frame(PING, 0, 0, b"12345678") * 11, ENHANCE_YOUR_CALM)


def test_rapid_reset_ends_the_connection() -> None:
    clock = [0.0]
    conn, recorder = server(Settings(max_resets_per_s=10), clock)
    encoder = Encoder()
    data = b""
    for stream_id in range(1, 22, 2):
        data += frame(HEADERS, END_HEADERS, stream_id, encoder.encode(REQUEST))
        data += frame(RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL))
    connection_error(conn, data, ENHANCE_YOUR_CALM)
    assert recorder.kinds().count("reset") == 10


def test_continuation_floods_and_oversized_blocks_end_the_connection() -> None:
    conn, _ = server(Settings(max_header_list_size=1024))
    data = frame(HEADERS, 0, 1, request_block()) + frame(CONTINUATION, 0, 1, b"\x00" * 16000)
    connection_error(conn, data + frame(CONTINUATION, 0, 1, b"\x00" * 2000), ENHANCE_YOUR_CALM)
    clock = [0.0]
    conn, _ = server(Settings(max_control_frames_per_s=100), clock)
    data = frame(HEADERS, 0, 1, request_block()) + frame(CONTINUATION, 0, 1) * 101
    connection_error(conn, data, ENHANCE_YOUR_CALM)


def test_an_oversized_header_list_is_refused_and_decoded() -> None:
    conn, recorder = server(Settings(max_header_list_size=300))
    encoder = Encoder()
    big = [*REQUEST, (b"x-big", b"v" * 300)]
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(big)))
    assert sent_errors(conn) == [("rst", 1, PROTOCOL_ERROR)]
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, encoder.encode(REQUEST)))
    assert recorder.events == [("headers", 3, REQUEST, HEAD, True)]


def test_goaway_both_ways() -> None:
    conn, recorder = server()
    conn.receive(frame(HEADERS, END_HEADERS, 1, request_block()))
    conn.goaway()
    assert sent_errors(conn) == [("goaway", 1, 0)]
    # Streams after our GOAWAY are ignored; the one in progress goes on.
    conn.receive(frame(HEADERS, END_HEADERS, 3, request_block()))
    assert [e[1] for e in recorder.events] == [1]
    conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    client = Connection(Recorder(), client=True)
    client.receive(frame(SETTINGS, 0, 0))
    stream_id = client.open_stream()
    client.receive(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    assert client.handler.events == [("goaway", 0, 0)]  # type: ignore[attr-defined]
    assert not client.can_open()
    assert stream_id == 1


# -- linear work -----------------------------------------------------------------------------


def test_work_is_linear_in_a_frame_arriving_byte_by_byte() -> None:
    module = interpreted("agent.h2.connection")

    def run(size: int) -> int:
        recorder = Recorder()
        conn = module.Connection(
            recorder, client=False, settings=module.Settings(stream_window=1 << 20)
        )
        conn.receive(
            PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, request_block())
        )
        data = frame(DATA, 0, 1, b"x" * size)
        _, lines = lines_run(
            module, lambda: [conn.receive(data[i : i + 1]) for i in range(len(data))]
        )
        assert recorder.events[-1][2] == b"x" * size
        return lines

    small, large = run(1000), run(8000)
    assert large < small * 8 * 1.1  # eight times the bytes: at most ~eight times the work


def test_work_is_linear_in_a_header_block() -> None:
    module = interpreted("agent.h2.hpack")

    def run(fields: int) -> int:
        block = Encoder().encode([(b"x-%d" % i, b"v" * 40) for i in range(fields)])
        decoder = module.Decoder(max_table_size=4096)
        headers, lines = lines_run(module, lambda: decoder.decode(block))
        assert len(headers) == fields
        return lines

    small, large = run(200), run(1600)
    assert large < small * 8 * 1.1
