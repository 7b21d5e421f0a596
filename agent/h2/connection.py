"""An HTTP/2 connection (RFC 9113), sans-IO, written for a proxy: bytes in, callbacks out,
bytes to send. Compiled by mypyc (agent/compiled.py).

One class serves both roles (``client=False`` for a listener's client connections,
``True`` for connections to providers). What it does itself: the connection preface and
SETTINGS exchange (acknowledged, applied), framing both ways with HEADERS/CONTINUATION
blocks through HPACK (agent/h2/hpack.py), stream states and ids, flow control both ways,
PING answered, GOAWAY, and every check RFC 9113 asks of a receiver (frame sizes, stream
states, padding, window overflows, header list rules: §8.2 field names and values,
pseudo-header fields, connection-specific fields, ``te``, content-length), each answered
with the stream or connection error the RFC names. What it leaves to its
:class:`Handler`: what a stream's headers and data mean, and when received data has been
consumed (:meth:`Connection.ack`), which is when the peer gets its window back: a relay
acknowledges bytes only once the other side took them, so a slow reader slows its writer
instead of filling the agent's memory.

Defences (CVE-2023-44487 rapid reset, control-frame floods, CONTINUATION floods): streams
the peer resets and SETTINGS, PING, PRIORITY and empty DATA frames are counted per second,
header blocks are bounded in size, streams beyond ``max_concurrent_streams`` are refused;
past a rate the connection ends with GOAWAY ENHANCE_YOUR_CALM.

Nothing per frame is allocated beyond the payload slice and, for HEADERS, the header list;
window updates are sent when half a window has been consumed, not per frame.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Final

from mypy_extensions import mypyc_attr

from agent.h2.hpack import Decoder, Encoder, HpackError

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (§6) and flags.
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (§7).
NO_ERROR: Final = 0
PROTOCOL_ERROR: Final = 1
INTERNAL_ERROR: Final = 2
FLOW_CONTROL_ERROR: Final = 3
STREAM_CLOSED: Final = 5
FRAME_SIZE_ERROR: Final = 6
REFUSED_STREAM: Final = 7
CANCEL: Final = 8
COMPRESSION_ERROR: Final = 9
ENHANCE_YOUR_CALM: Final = 11

# Settings (§6.5.2).
HEADER_TABLE_SIZE: Final = 1
ENABLE_PUSH: Final = 2
MAX_CONCURRENT_STREAMS: Final = 3
INITIAL_WINDOW_SIZE: Final = 4
MAX_FRAME_SIZE: Final = 5
MAX_HEADER_LIST_SIZE: Final = 6

DEFAULT_WINDOW: Final = 65535
MAX_WINDOW: Final = (1 << 31) - 1
DEFAULT_MAX_FRAME: Final = 16384

# How a stream closed (Connection.closed_streams).
_ENDED: Final = 0
_RESET_BY_US: Final = 1
_RESET_BY_PEER: Final = 2

# What a header block's kind is, for the handler.
HEAD: Final = 0  # a request's headers (server) or a final response's (client)
INFORMATIONAL: Final = 1  # a 1xx response (client)
TRAILERS: Final = 2

_HEADER = struct.Struct(">BHBBI")
_UINT32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")

# §8.2.2: fields that are connection-specific in HTTP/1.1 and malformed in HTTP/2.
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def _token_table() -> bytes:
    """For each byte: 1 when it may appear in a field name (lowercase tchar, RFC 9110 §5.6.2)."""
    allowed = bytearray(256)
    for byte in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz":
        allowed[byte] = 1
    return bytes(allowed)


_NAME_BYTES: Final = _token_table()


# What a field value may not hold (§8.2.1). Found by deleting them (one C pass, no
# regular expression): compiled, ``b"\r" in value`` first tries the byte as an integer
# and formats the TypeError it then catches, which was 2 % of a relayed request's CPU.
_FORBIDDEN_IN_VALUE: Final = b"\r\n\x00"


def _bad_value(value: bytes) -> bool:
    """§8.2.1: no NUL, CR or LF, and no whitespace at either end."""
    if not value:
        return False
    first = value[0]
    last = value[len(value) - 1]
    if first == 0x20 or first == 0x09 or last == 0x20 or last == 0x09:
        return True
    return len(value.translate(None, _FORBIDDEN_IN_VALUE)) != len(value)


class ProtocolError(Exception):
    """The peer broke HTTP/2 on the connection; GOAWAY with ``code`` has been queued."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@mypyc_attr(allow_interpreted_subclasses=True)
class Handler:
    """What a connection tells its owner. Every method may send on the connection."""

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        """A header block: ``kind`` is HEAD, INFORMATIONAL or TRAILERS (then ``end_stream``)."""

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        """DATA: ``flow`` (``len(data)`` plus padding) is to be given back with ``ack``."""

    def stream_reset(self, stream_id: int, code: int) -> None:
        """The stream ended abnormally: the peer reset it, or it broke the protocol (the
        connection has reset it)."""

    def window_opened(self, stream_id: int) -> None:
        """More may be sent on ``stream_id``, or on every stream when 0."""

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        """The peer is going away: our streams above ``last_stream_id`` were not processed."""


class Stream:
    """One stream's state as the connection sees it."""

    __slots__ = (
        "expected_length",
        "head_seen",
        "local_open",
        "received_length",
        "recv_window",
        "remote_open",
        "send_window",
        "stream_id",
        "unacked",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.local_open = True  # we may still send
        self.remote_open = True  # the peer may still send
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0  # received and consumed, window not yet given back
        self.head_seen = False  # a final (non-1xx) header block arrived
        self.expected_length = -1  # content-length of what the peer sends, -1: none
        self.received_length = 0


class _Rate:
    """Events in the current one-second window."""

    __slots__ = ("count", "limit", "window")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window = 0
        self.count = 0

    def exceeded(self, now: float) -> bool:
        second = int(now)
        if second != self.window:
            self.window = second
            self.count = 0
        self.count += 1
        return self.count > self.limit


class Settings:
    """What this end announces (SETTINGS) and enforces."""

    __slots__ = (
        "connection_window",
        "header_table_size",
        "max_concurrent_streams",
        "max_control_frames_per_s",
        "max_frame_size",
        "max_header_list_size",
        "max_resets_per_s",
        "oversized_to_handler",
        "stream_window",
    )

    def __init__(
        self,
        stream_window: int = DEFAULT_WINDOW,
        connection_window: int = DEFAULT_WINDOW,
        max_concurrent_streams: int = 100,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        max_header_list_size: int = 64 * 1024,
        header_table_size: int = 4096,
        max_resets_per_s: int = 100,
        max_control_frames_per_s: int = 100,
        oversized_to_handler: bool = False,
    ) -> None:
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_concurrent_streams = max_concurrent_streams
        self.max_frame_size = max_frame_size
        self.max_header_list_size = max_header_list_size
        self.header_table_size = header_table_size
        self.max_resets_per_s = max_resets_per_s
        self.max_control_frames_per_s = max_control_frames_per_s
        # A request whose header list is over max_header_list_size: reset (False), or
        # opened for the handler to answer (431, RFC 9113 §10.5.1), which then sees
        # ``decoder.oversized`` set in headers_received.
        self.oversized_to_handler = oversized_to_handler


class Connection:
    """One HTTP/2 connection's state. Feed :meth:`receive` what the socket read, write
    what :meth:`data_to_send` returns; the handler hears about streams as frames arrive."""

    def __init__(
        self,
        handler: Handler,
        client: bool,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.client = client
        self.local = settings if settings is not None else Settings()
        self.clock = clock
        self.streams: dict[int, Stream] = {}
        self._out: list[bytes] = []
        self._in = bytearray()
        self._need = 0  # bytes ``_in`` must hold before a frame can be parsed
        self._preface_pending = not client  # a server first reads the client's preface
        self._settings_pending = True  # the peer's first frame must be SETTINGS
        # The peer's first SETTINGS arrived (its stream limit and windows are known).
        self.peer_settings_received = False
        self.decoder = Decoder(self.local.header_table_size, self.local.max_header_list_size)
        self.encoder = Encoder()
        # The peer's settings, as far as they matter here.
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_streams = 1 << 31
        self.peer_max_header_list = 1 << 31
        # Flow control: what we may send; what the peer may send us; consumed, not given back.
        self.send_window = DEFAULT_WINDOW
        self.recv_window = self.local.connection_window
        self.unacked = 0
        # Our stream settings apply once acknowledged; until then the defaults may be used.
        self._local_window_acked = False
        # Stream ids: the next we open; the highest the peer opened; ours the peer ignored.
        self.next_stream_id = 1 if client else 2
        self.last_remote_id = 0
        self.open_remote = 0  # streams the peer opened that are not closed
        self.open_local = 0
        # Streams closed lately: id -> how (_ENDED, _RESET_BY_US, _RESET_BY_PEER), which
        # decides what a late frame for it is. Bounded; an id forgotten is a stream error.
        self.closed_streams: dict[int, int] = {}
        self._block_dependency_error = False
        self._sent_since_ping = False  # HEADERS or DATA sent since the last PING received
        # A header block arriving in pieces: its stream, flags, kind and bytes so far.
        self._block_stream = 0
        self._block_flags = 0
        self._block = bytearray()
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False
        self.resets = _Rate(self.local.max_resets_per_s)
        self.control = _Rate(self.local.max_control_frames_per_s)
        self._start()

    # -- sending ---------------------------------------------------------------------------

    def _start(self) -> None:
        local = self.local
        if self.client:
            self._out.append(PREFACE)
        payload = bytearray()
        payload += _SETTING.pack(ENABLE_PUSH, 0)
        if not self.client:
            payload += _SETTING.pack(MAX_CONCURRENT_STREAMS, local.max_concurrent_streams)
        if local.stream_window != DEFAULT_WINDOW:
            payload += _SETTING.pack(INITIAL_WINDOW_SIZE, local.stream_window)
        if local.max_frame_size != DEFAULT_MAX_FRAME:
            payload += _SETTING.pack(MAX_FRAME_SIZE, local.max_frame_size)
        payload += _SETTING.pack(MAX_HEADER_LIST_SIZE, local.max_header_list_size)
        if local.header_table_size != 4096:
            payload += _SETTING.pack(HEADER_TABLE_SIZE, local.header_table_size)
        self._frame(SETTINGS, 0, 0, bytes(payload))
        if local.connection_window > DEFAULT_WINDOW:
            self._frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(local.connection_window - DEFAULT_WINDOW))

    def _frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        length = len(payload)
        self._out.append(_HEADER.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id))
        if length:
            self._out.append(payload)

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        return data

    def open_stream(self) -> int:
        """A new stream id of ours (client role); raises when the peer allows no more."""
        if self.open_local >= self.peer_max_streams:
            raise StreamLimit(f"the peer allows {self.peer_max_streams} streams")
        if self.goaway_received:
            raise StreamLimit("the peer is going away")
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        self.streams[stream_id] = Stream(
            stream_id, self.peer_initial_window, self._initial_recv_window()
        )
        self.open_local += 1
        return stream_id

    def can_open(self) -> bool:
        return self.open_local < self.peer_max_streams and not self.goaway_received

    def upgrade(self, settings: bytes) -> int:
        """h2c (RFC 7540 §3.2, server role): the client's ``HTTP2-Settings`` (decoded) apply
        as a SETTINGS frame would (the 101 acknowledged them), and the HTTP/1.1 request
        that asked for the upgrade is stream 1, half-closed by the client: the caller
        answers it like any stream. Raises :class:`ProtocolError` for bad settings."""
        if self.client or self.last_remote_id:
            raise ValueError("only a server's fresh connection can be upgraded")
        if len(settings) % 6:
            raise ProtocolError(PROTOCOL_ERROR, "HTTP2-Settings of a wrong size")
        self._apply_settings(settings)
        stream = Stream(1, self.peer_initial_window, self._initial_recv_window())
        stream.head_seen = True
        stream.remote_open = False
        self.streams[1] = stream
        self.open_remote += 1
        self.last_remote_id = 1
        return 1

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamGone(stream_id)
        block = self.encoder.encode(headers)
        self._sent_since_ping = True
        limit = self.peer_max_frame
        flags = END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:limit])
            position = limit
            while position < len(block):
                piece = block[position : position + limit]
                position += limit
                last = position >= len(block)
                self._frame(CONTINUATION, END_HEADERS if last else 0, stream_id, piece)
        if end_stream:
            self._close_local(stream)

    def window(self, stream_id: int) -> int:
        """Bytes that may be sent on the stream now (within both windows)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            return 0
        window = stream.send_window if stream.send_window < self.send_window else self.send_window
        return window if window > 0 else 0

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """DATA within :meth:`window` (split into frames of the peer's maximum size)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamGone(stream_id)
        size = len(data)
        if size > stream.send_window or size > self.send_window:
            raise ValueError(f"{size} bytes over the flow-control window")
        stream.send_window -= size
        self.send_window -= size
        self._sent_since_ping = True
        limit = self.peer_max_frame
        if size <= limit:
            self._frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        else:
            position = 0
            while position < size:
                piece = data[position : position + limit]
                position += limit
                flags = END_STREAM if end_stream and position >= size else 0
                self._frame(DATA, flags, stream_id, piece)
        if end_stream:
            self._close_local(stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """RST_STREAM: the stream ends here; later frames of the peer's for it are ignored."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(code))
        self._forget(stream, _RESET_BY_US)

    def ack(self, stream_id: int, size: int) -> None:
        """``size`` received bytes were consumed: the peer may send them again, the stream's
        share once half its window is consumed, the connection's likewise."""
        if size <= 0 or self.closed:
            return
        self.unacked += size
        if self.unacked >= self.local.connection_window // 2:
            self._frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(self.unacked))
            self.recv_window += self.unacked
            self.unacked = 0
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= self.local.stream_window // 2:
                self._frame(WINDOW_UPDATE, 0, stream_id, _UINT32.pack(stream.unacked))
                stream.recv_window += stream.unacked
                stream.unacked = 0

    def ping(self, payload: bytes = b"\x00" * 8) -> None:
        self._frame(PING, 0, 0, payload)

    def goaway(self, code: int = NO_ERROR, message: bytes = b"") -> None:
        """GOAWAY naming the last stream the peer opened that we will process."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._frame(
                GOAWAY, 0, 0, _UINT32.pack(self.last_remote_id) + _UINT32.pack(code) + message
            )

    # -- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Frames from the peer. Raises :class:`ProtocolError` when the peer broke
        HTTP/2 (GOAWAY is then queued: send it, then close)."""
        if self.closed:
            return
        buffer = self._in
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return  # still short of the frame that started: no copy, no parse
            view = bytes(buffer)
            buffer.clear()
        else:
            view = data
        try:
            position = self._receive(view)
        except ProtocolError as broken:
            self._fail(broken.code, str(broken))
            raise
        except HpackError as bad_block:
            # (Named apart from ``broken``: compiled, one name holds one exception type.)
            self._fail(COMPRESSION_ERROR, str(bad_block))
            raise ProtocolError(COMPRESSION_ERROR, f"header block: {bad_block}") from None
        if position < len(view):
            buffer += view[position:]
            # What must be buffered before parsing again: a frame header, then its frame.
            self._need = 24 if self._preface_pending else 9
            if len(buffer) >= 9 and not self._preface_pending:
                length = (buffer[0] << 16) | (buffer[1] << 8) | buffer[2]
                # One too large is refused at the next read, not waited for.
                self._need = 9 + length if length <= self.local.max_frame_size else 9

    def _fail(self, code: int, message: str) -> None:
        # Sent even after a graceful GOAWAY: this one says why the connection ends now.
        self.goaway_sent = True
        debug = message.encode("utf-8", "replace")[:256]
        self._frame(GOAWAY, 0, 0, _UINT32.pack(self.last_remote_id) + _UINT32.pack(code) + debug)
        self.closed = True

    def _receive(self, data: bytes) -> int:
        position = 0
        end = len(data)
        if self._preface_pending:
            have = end if end < 24 else 24
            if data[:have] != PREFACE[:have]:
                raise ProtocolError(PROTOCOL_ERROR, "invalid connection preface")
            if have < 24:
                return 0
            self._preface_pending = False
            position = 24
        max_frame = self.local.max_frame_size
        while end - position >= 9:
            length = (data[position] << 16) | (data[position + 1] << 8) | data[position + 2]
            frame_type = data[position + 3]
            flags = data[position + 4]
            stream_id = (
                ((data[position + 5] & 0x7F) << 24)
                | (data[position + 6] << 16)
                | (data[position + 7] << 8)
                | data[position + 8]
            )
            if length > max_frame:
                raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - position - 9 < length:
                break
            payload = data[position + 9 : position + 9 + length]
            position += 9 + length
            self._dispatch(frame_type, flags, stream_id, payload)
            if self.closed:
                return end
        return position

    def _dispatch(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._settings_pending:
            if frame_type != SETTINGS or flags & ACK:
                raise ProtocolError(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._settings_pending = False
        if self._block_stream and frame_type != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "a frame inside a header block")
        if frame_type == DATA:
            self._on_data(flags, stream_id, payload)
        elif frame_type == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif frame_type == CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif frame_type == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif frame_type == RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif frame_type == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif frame_type == PING:
            self._on_ping(flags, stream_id, payload)
        elif frame_type == PRIORITY:
            self._on_priority(stream_id, payload)
        elif frame_type == GOAWAY:
            self._on_goaway(stream_id, payload)
        elif frame_type == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE, and push is disabled")
        # Unknown frame types are ignored (§4.1, §5.5).

    def _strip_padding(self, flags: int, payload: bytes, extra: int) -> bytes:
        """The payload without padding (and ``extra`` bytes of priority fields)."""
        if flags & PADDED:
            if not payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "padded frame without a pad length")
            pad = payload[0]
            if pad + 1 + extra > len(payload):
                raise ProtocolError(PROTOCOL_ERROR, "padding past the frame")
            return payload[1 + extra : len(payload) - pad]
        if extra:
            if len(payload) < extra:
                raise ProtocolError(FRAME_SIZE_ERROR, "priority fields cut short")
            return payload[extra:]
        return payload

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        data = self._strip_padding(flags, payload, 0)
        # The connection's window counts every DATA frame, whatever its stream's state.
        if flow > self.recv_window:
            raise ProtocolError(FLOW_CONTROL_ERROR, "DATA past the connection window")
        self.recv_window -= flow
        stream = self.streams.get(stream_id)
        if stream is None:
            self._gone_stream(stream_id, DATA)
            self.ack(0, flow)
            return
        if not stream.remote_open:
            self.ack(0, flow)
            self._stream_error(stream, STREAM_CLOSED)
            return
        if flow == 0 and not flags & END_STREAM and self.control.exceeded(self.clock()):
            raise ProtocolError(ENHANCE_YOUR_CALM, self._flood("empty DATA"))
        if flow > stream.recv_window:
            self.ack(0, flow)
            self._stream_error(stream, FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= flow
        end_stream = flags & END_STREAM != 0
        if stream.expected_length >= 0:
            stream.received_length += len(data)
            if stream.received_length > stream.expected_length or (
                end_stream and stream.received_length != stream.expected_length
            ):
                self.ack(0, flow)
                self._stream_error(stream, PROTOCOL_ERROR)
                return
        if end_stream:
            self._close_remote(stream)
        self.handler.stream_data(stream_id, data, flow, end_stream)
        if end_stream:
            self._maybe_forget(stream)

    def _gone_stream(self, stream_id: int, frame_type: int) -> None:
        """A frame for a stream not open (§5.1): idle (never opened) is a connection error,
        as is HEADERS opening a stream below the last one the peer opened (§5.1.1); after
        both sides ended it, a connection error STREAM_CLOSED; after the peer reset it, a
        stream error; after we reset it, nothing: frames in flight are ignored."""
        if self._idle(stream_id):
            raise ProtocolError(PROTOCOL_ERROR, f"frame {frame_type} on idle stream {stream_id}")
        how = self.closed_streams.get(stream_id, -1)
        if how == -1 and frame_type == HEADERS and (stream_id & 1 == 1) != self.client:
            raise ProtocolError(PROTOCOL_ERROR, f"stream {stream_id} below the last one opened")
        if how == _RESET_BY_US:
            return
        if how == _ENDED:
            raise ProtocolError(STREAM_CLOSED, f"frame {frame_type} on ended stream {stream_id}")
        self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(STREAM_CLOSED))

    def _idle(self, stream_id: int) -> bool:
        if (stream_id & 1 == 1) == self.client:  # one of ours
            return stream_id >= self.next_stream_id
        return stream_id > self.last_remote_id

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = self._strip_padding(flags, payload, 5 if flags & PRIORITY_FLAG else 0)
        if flags & PRIORITY_FLAG:
            dependency = _UINT32.unpack_from(payload, 1 if flags & PADDED else 0)[0] & 0x7FFFFFFF
            if dependency == stream_id:
                self._block_dependency_error = True
        self._block_stream = stream_id
        self._block_flags = flags
        self._block = bytearray(fragment)
        if flags & END_HEADERS:
            self._end_block()
        elif len(self._block) > self._max_block():
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")

    def _max_block(self) -> int:
        return self.local.max_header_list_size + 16 * 1024

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not self._block_stream or stream_id != self._block_stream:
            raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION outside a header block")
        self._block += payload
        if len(self._block) > self._max_block():
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large (CONTINUATION)")
        if flags & END_HEADERS:
            self._end_block()
        elif not payload and self.control.exceeded(self.clock()):
            raise ProtocolError(ENHANCE_YOUR_CALM, self._flood("empty CONTINUATION"))

    def _end_block(self) -> None:
        stream_id = self._block_stream
        flags = self._block_flags
        block = bytes(self._block)
        self._block_stream = 0
        self._block = bytearray()
        # Decoded whatever becomes of the stream: the HPACK tables must stay in step.
        headers = self.decoder.decode(block)
        self_dependent = self._block_dependency_error
        self._block_dependency_error = False
        end_stream = flags & END_STREAM != 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if (stream_id & 1 == 1) == self.client or stream_id <= self.last_remote_id:
                # One of ours never opened (idle), or a closed stream of the peer's.
                self._gone_stream(stream_id, HEADERS)
                return
            self._open_remote(stream_id, headers, end_stream, self_dependent)
            return
        if self_dependent:
            self._stream_error(stream, PROTOCOL_ERROR)
            return
        if not stream.remote_open:
            self._stream_error(stream, STREAM_CLOSED)
            return
        kind = TRAILERS if stream.head_seen else HEAD
        if kind == HEAD and self.client:
            status = _response_status(headers)
            if status < 0:
                self._stream_error(stream, PROTOCOL_ERROR)
                return
            if status < 200:
                kind = INFORMATIONAL
                if end_stream:
                    self._stream_error(stream, PROTOCOL_ERROR)
                    return
        if kind == TRAILERS:
            if not end_stream or not _valid_trailers(headers):
                self._stream_error(stream, PROTOCOL_ERROR)
                return
        elif kind == HEAD:
            # A response's content-length is not checked: a HEAD request's or a 304's
            # answer has one and no body, and the relay passes both on as they are.
            stream.head_seen = True
        if end_stream:
            self._close_remote(stream)
        self.handler.headers_received(stream_id, headers, kind, end_stream)
        if end_stream:
            self._maybe_forget(stream)

    def _open_remote(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool, bad: bool
    ) -> None:
        """A new stream of the peer's (server role: a request)."""
        if self.client:
            raise ProtocolError(PROTOCOL_ERROR, "a server opened a stream")
        if stream_id & 1 == 0:
            raise ProtocolError(PROTOCOL_ERROR, f"even stream id {stream_id} from a client")
        self.last_remote_id = stream_id
        if self.goaway_sent:
            return  # GOAWAY named an earlier last stream: this one is ignored
        if self.open_remote >= self.local.max_concurrent_streams:
            self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(REFUSED_STREAM))
            self._remember(stream_id, _RESET_BY_US)
            return
        expected = _content_length(headers)
        if (
            bad
            or (self.decoder.oversized and not self.local.oversized_to_handler)
            or not _valid_request(headers)
            or expected == -2
            or (end_stream and expected > 0)
        ):
            self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(PROTOCOL_ERROR))
            self._remember(stream_id, _RESET_BY_US)
            return
        stream = Stream(stream_id, self.peer_initial_window, self._initial_recv_window())
        stream.head_seen = True
        stream.expected_length = expected
        self.streams[stream_id] = stream
        self.open_remote += 1
        if end_stream:
            stream.remote_open = False
        self.handler.headers_received(stream_id, headers, HEAD, end_stream)

    def _initial_recv_window(self) -> int:
        # Until the peer acknowledges our SETTINGS it may use the default window, or ours.
        window = self.local.stream_window
        if self._local_window_acked or window > DEFAULT_WINDOW:
            return window
        return DEFAULT_WINDOW

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = _UINT32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            self.handler.window_opened(0)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise ProtocolError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # closed: ignored (§6.9)
        if increment == 0:
            self._stream_error(stream, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream, FLOW_CONTROL_ERROR)
            return
        self.handler.window_opened(stream_id)

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
        if self._idle(stream_id):
            raise ProtocolError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if self.resets.exceeded(self.clock()):
            raise ProtocolError(
                ENHANCE_YOUR_CALM,
                f"over {self.resets.limit} stream resets per second (rapid reset)",
            )
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        code = _UINT32.unpack(payload)[0]
        self._forget(stream, _RESET_BY_PEER)
        self.handler.stream_reset(stream_id, code)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._local_window_acked = True
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        if self.control.exceeded(self.clock()):
            raise ProtocolError(ENHANCE_YOUR_CALM, self._flood("SETTINGS/PING"))
        window_changed = self._apply_settings(payload)
        self.peer_settings_received = True
        self._frame(SETTINGS, ACK, 0, b"")
        if window_changed:
            self.handler.window_opened(0)

    def _apply_settings(self, payload: bytes) -> bool:
        """The peer's settings (a SETTINGS payload); True when its initial window changed."""
        window_changed = False
        for offset in range(0, len(payload), 6):
            identifier, value = _SETTING.unpack_from(payload, offset)
            if identifier == HEADER_TABLE_SIZE:
                self.encoder.set_max_table_size(value)
            elif identifier == ENABLE_PUSH:
                if value > 1:
                    raise ProtocolError(PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
                if value == 1 and self.client:
                    raise ProtocolError(PROTOCOL_ERROR, "a server enabled push")
            elif identifier == MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif identifier == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE past 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
                window_changed = True
            elif identifier == MAX_FRAME_SIZE:
                if value < DEFAULT_MAX_FRAME or value > (1 << 24) - 1:
                    raise ProtocolError(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
            elif identifier == MAX_HEADER_LIST_SIZE:
                self.peer_max_header_list = value
            # Unknown settings are ignored (§6.5.2).
        return window_changed

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ProtocolError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ProtocolError(FRAME_SIZE_ERROR, "PING of a wrong size")
        if flags & ACK:
            return
        # A PING after we sent something is a peer measuring the path (grpc-go pings as
        # it receives DATA, to size its windows: thousands a second on loopback); only
        # PINGs with nothing sent in between count towards the flood limit.
        if not self._sent_since_ping and self.control.exceeded(self.clock()):
            raise ProtocolError(ENHANCE_YOUR_CALM, self._flood("SETTINGS/PING"))
        self._sent_since_ping = False
        self._frame(PING, ACK, 0, payload)

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(FRAME_SIZE_ERROR))
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._forget(stream, _RESET_BY_US)
                self.handler.stream_reset(stream_id, FRAME_SIZE_ERROR)
            return
        if self.control.exceeded(self.clock()):
            raise ProtocolError(ENHANCE_YOUR_CALM, self._flood("PRIORITY"))
        dependency = _UINT32.unpack(payload[:4])[0] & 0x7FFFFFFF
        if dependency == stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._stream_error(stream, PROTOCOL_ERROR)
            else:
                self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(PROTOCOL_ERROR))
        # Priorities are otherwise ignored (RFC 9113 deprecates the scheme).

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ProtocolError(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY cut short")
        last = _UINT32.unpack(payload[:4])[0] & 0x7FFFFFFF
        code = _UINT32.unpack(payload[4:8])[0]
        self.goaway_received = True
        self.handler.goaway_received(last, code)

    def _flood(self, what: str) -> str:
        return f"over {self.control.limit} {what} frames per second"

    # -- stream ends -----------------------------------------------------------------------

    def _stream_error(self, stream: Stream, code: int) -> None:
        """Reset the stream for breaking the protocol and tell the handler."""
        self._frame(RST_STREAM, 0, stream.stream_id, _UINT32.pack(code))
        self._forget(stream, _RESET_BY_US)
        self.handler.stream_reset(stream.stream_id, code)

    def _close_local(self, stream: Stream) -> None:
        stream.local_open = False
        self._maybe_forget(stream)

    def _close_remote(self, stream: Stream) -> None:
        stream.remote_open = False

    def _maybe_forget(self, stream: Stream) -> None:
        if not stream.local_open and not stream.remote_open:
            self._forget(stream, _ENDED)

    def _forget(self, stream: Stream, how: int) -> None:
        stream_id = stream.stream_id
        if self.streams.pop(stream_id, None) is None:
            return
        stream.local_open = False
        stream.remote_open = False
        if (stream_id & 1 == 1) == self.client:
            self.open_local -= 1
        else:
            self.open_remote -= 1
        self._remember(stream_id, how)
        # Received and not yet consumed: the handler's later ack for this stream finds no
        # stream and gives the connection's window back only.

    def _remember(self, stream_id: int, how: int) -> None:
        closed = self.closed_streams
        if len(closed) >= 1024:
            closed.clear()  # bounded: a frame for a forgotten stream is a stream error
        closed[stream_id] = how


class StreamGone(Exception):
    """Sending on a stream that is closed for sending (reset, ended)."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed")
        self.stream_id = stream_id


class StreamLimit(Exception):
    """No stream can be opened now (the peer's limit, or GOAWAY)."""


def _response_status(headers: list[tuple[bytes, bytes]]) -> int:
    """The :status of a response head (three digits), or -1 when the head is malformed."""
    status = -1
    pseudo_done = False
    for name, value in headers:
        if name and name[0] == 0x3A:  # ':'
            if pseudo_done or name != b":status" or status != -1:
                return -1
            if len(value) != 3 or not value.isdigit():
                return -1
            status = int(value)
        else:
            pseudo_done = True
            if not _valid_field(name, value):
                return -1
    return status


def _valid_trailers(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name and name[0] == 0x3A:
            return False
        if not _valid_field(name, value):
            return False
    return True


def _valid_field(name: bytes, value: bytes) -> bool:
    if not name:
        return False
    table = _NAME_BYTES
    for byte in name:
        if not table[byte]:
            return False
    if name in _CONNECTION_SPECIFIC:
        return False
    if name == b"te" and value != b"trailers":
        return False
    return not _bad_value(value)


def _valid_request(headers: list[tuple[bytes, bytes]]) -> bool:
    """§8.3.1: the pseudo-header fields first, each once, the required ones there; the
    regular fields valid (§8.2)."""
    method = b""
    scheme = False
    path = False
    authority = False
    pseudo_done = False
    for name, value in headers:
        if name and name[0] == 0x3A:
            if pseudo_done:
                return False
            if name == b":method":
                if method:
                    return False
                method = value if value else b"?"
            elif name == b":scheme":
                if scheme:
                    return False
                scheme = True
            elif name == b":path":
                if path or not value:
                    return False
                path = True
            elif name == b":authority":
                if authority:
                    return False
                authority = True
            else:
                return False  # unknown, or a response's
            if _bad_value(value):
                return False
        else:
            pseudo_done = True
            if not _valid_field(name, value):
                return False
    if not method:
        return False
    if method == b"CONNECT":
        return authority and not scheme and not path
    return scheme and path


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The content-length field's value; -1 when absent, -2 when malformed or repeated
    with different values."""
    found = -1
    for name, value in headers:
        if name == b"content-length":
            if not value or not value.isdigit() or len(value) > 18:
                return -2
            length = int(value)
            if found >= 0 and length != found:
                return -2
            found = length
    return found
