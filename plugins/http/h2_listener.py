"""HTTP/2 from clients on the HTTP listener (prior knowledge and the h2c upgrade), on the
agent's own HTTP/2 engine (agent/h2) and compiled: no python-h2 on the path.

The engine runs the connection (framing, HPACK, flow control, stream states, the RFC 9113
checks). Each stream is one request, routed and balanced on its own and forwarded to the
provider over a pooled HTTP/1.1 connection by the same exchange as an HTTP/1.1 client's
request (plugins/http/h1_exchange.py: the call record, retries, deadlines, passive
health), so one multiplexed client connection is spread over every endpoint. A stream is
that exchange's client side (:class:`_Stream`): it turns the provider's response into
HEADERS, DATA and trailers, and the request's DATA into an HTTP/1.1 body (as sent, with
its Content-Length, or chunked when the client gave none).

Flow control both ways: a request's DATA is acknowledged (its window given back to the
client) once it went to the provider's connection, not while it waits for one or while
that connection's socket is full; a response's body is sent within the client's windows,
and past ``_HELD_HIGH`` bytes waiting for them the provider's connection is not read.

Defences (CVE-2023-44487 rapid reset, SETTINGS/PING/CONTINUATION floods, header list
size, stream limits) are the engine's, at the listener's ``h2_max_concurrent_streams``,
``h2_max_resets_per_s``, ``h2_max_control_frames_per_s`` and ``max_header_bytes``: past a
rate the connection gets GOAWAY ENHANCE_YOUR_CALM and a log line. A connection error's
GOAWAY is followed by a lingering close. Idle connections (no stream for
``client_idle_timeout_s``) get GOAWAY and are closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import struct
from collections import deque

from agent.h2.connection import (
    ENHANCE_YOUR_CALM,
    HEAD,
    INTERNAL_ERROR,
    NO_ERROR,
    PREFACE,
    Connection,
    Handler,
    ProtocolError,
    Settings,
    StreamGone,
)
from agent.h2.upstream import H2Pool
from agent.runtime.protocols import ListenerContext
from plugins.http.config import HttpConfig
from plugins.http.h1_exchange import ClientSide, ProviderExchange, Request
from plugins.http.h1_upstream import FastPool
from plugins.http.h2_exchange import new_exchange
from plugins.http.headers import Headers, end_to_end, forwarding, split_fields
from plugins.http.routing import Router

__all__ = ["PREFACE", "H2ClientConnection", "upgrade_settings_problem"]

log = logging.getLogger(__name__)

# How long a connection refused for a protocol error lingers before it closes.
_LINGER_S = 1.0
# Response bytes one stream may hold waiting for the client's window before its provider
# connection stops being read.
_HELD_HIGH = 256 * 1024
# Receive windows we advertise: 1 MiB per stream, 4 MiB for the connection (a request body
# streams without waiting for WINDOW_UPDATEs; bounded what a client can make us hold).
_STREAM_WINDOW = 1024 * 1024
_CONNECTION_WINDOW = 4 * 1024 * 1024

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def upstream_settings() -> Settings:
    """What the listener's HTTP/2 provider connections announce (the same windows)."""
    return Settings(stream_window=_STREAM_WINDOW, connection_window=_CONNECTION_WINDOW)


def upgrade_settings(value: bytes) -> bytes | None:
    """The SETTINGS payload an ``HTTP2-Settings`` header carries (base64url, no padding),
    or None when it is not base64url."""
    try:
        standard = value.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(value) % 4)
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        return None


def upgrade_settings_problem(value: bytes) -> str | None:
    """Why an ``HTTP2-Settings`` header cannot start an h2c upgrade, or None.

    RFC 9113 3.2.1 (7540 3.2.1): base64url, no padding, of a SETTINGS frame's payload;
    checked before the 101 is sent, so a bad one gets 400 instead of a connection that
    switches protocol and then fails."""
    payload = upgrade_settings(value)
    if payload is None:
        return "HTTP2-Settings is not base64url"
    if len(payload) % 6:
        return "HTTP2-Settings is not a sequence of 6-byte settings"
    for offset in range(0, len(payload), 6):
        setting, number = struct.unpack_from(">HI", payload, offset)
        if setting == 0x2 and number > 1:
            return f"HTTP2-Settings: ENABLE_PUSH {number}"
        if setting == 0x4 and number > 2**31 - 1:
            return f"HTTP2-Settings: INITIAL_WINDOW_SIZE {number}"
        if setting == 0x5 and not 2**14 <= number <= 2**24 - 1:
            return f"HTTP2-Settings: MAX_FRAME_SIZE {number}"
    return None


class _Stream(ClientSide):
    """One client stream: its request's client side (plugins/http/h1_exchange.py)."""

    def __init__(self, client: H2ClientConnection, stream_id: int, request: Request) -> None:
        self.client = client
        self.stream_id = stream_id
        self.request = request
        self.context = client.context
        self.stats = client.stats
        self.router = client.router
        self.pool = client.pool
        self.h2_pool = client.h2_pool
        self.loop = client.loop
        self.write_paused = client.write_paused
        self.exchange: ProviderExchange | None = None
        # Request body bytes read and not yet given back to the client (waiting for a
        # provider connection, or for its socket to drain).
        self.held_in = 0
        self.upstream_full = False
        # Response body waiting for the client's window, and what ends the response once
        # it is out (trailers, or None for END_STREAM on the last DATA).
        self.out: deque[bytes] = deque()
        self.out_size = 0
        self.out_end = False
        self.out_trailers: Headers | None = None
        # The response is on its way (HEADERS sent), and wholly sent.
        self.started = False
        self.finished = False

    # -- the request -------------------------------------------------------------------

    def request_data(self, data: bytes, flow: int, end_stream: bool) -> None:
        client = self.client
        if flow > len(data):  # padding: nothing to forward, given back now
            client.conn.ack(self.stream_id, flow - len(data))
        exchange = self.exchange
        if exchange is None or exchange.done or self.finished:
            client.conn.ack(self.stream_id, len(data))  # answered already: dropped
        elif data:
            if exchange.send_body(data) and not self.upstream_full:
                client.conn.ack(self.stream_id, len(data))
            else:
                self.held_in += len(data)  # given back by body_sent or upstream_writable
        if end_stream:
            self.request_end([])

    def request_end(self, trailers: Headers) -> None:
        request = self.request
        request.complete = True
        request.trailers = trailers
        exchange = self.exchange
        if exchange is not None and not exchange.done:
            exchange.end_body()

    def _give_back(self) -> None:
        held, self.held_in = self.held_in, 0
        if held:
            self.client.conn.ack(self.stream_id, held)
            self.client.schedule_flush()

    # -- ClientSide: what the exchange asks ---------------------------------------------

    def body_sent(self, exchange: ProviderExchange, size: int) -> None:
        size = min(size, self.held_in)
        if size > 0:
            self.held_in -= size
            self.client.conn.ack(self.stream_id, size)
            self.client.schedule_flush()

    def upstream_writable(self, exchange: ProviderExchange, writable: bool) -> None:
        self.upstream_full = not writable
        if writable:
            self._give_back()

    def arm(self, exchange: ProviderExchange, timeout_s: float) -> None:
        self.client.arm(exchange, timeout_s)

    def disarm(self, exchange: ProviderExchange) -> None:
        exchange.deadline = 0.0

    def cork(self) -> None:
        return None

    def uncork(self) -> None:
        self.client.schedule_flush()

    def respond(
        self, exchange: ProviderExchange, status: int, content_type: bytes, body: bytes
    ) -> None:
        self.response_started(
            exchange,
            status,
            b"",
            [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
            False,
            False,
        )
        self.response_data(exchange, body)
        self.response_done(exchange)

    def informational(
        self, exchange: ProviderExchange, status: int, reason: bytes, fields: Headers
    ) -> None:
        if status == 101 or self.started:
            return  # no HTTP/2 form (the upgrade was the client's to ask for, not ours)
        headers = [(b":status", b"%d" % status), *_lowered(fields)]
        try:
            self.client.conn.send_headers(self.stream_id, headers)
        except StreamGone:
            return

    def response_started(
        self,
        exchange: ProviderExchange,
        status: int,
        reason: bytes,
        fields: Headers,
        chunked: bool,
        until_close: bool,
    ) -> None:
        self.started = True
        headers = [(b":status", b"%d" % status), *_lowered(fields)]
        try:
            self.client.conn.send_headers(self.stream_id, headers)
        except StreamGone:
            self.finished = True  # the client reset it meanwhile

    def response_data(self, exchange: ProviderExchange, data: bytes) -> None:
        if self.finished or not data:
            return
        exchange.route.bytes_out += len(data)
        if self.out_size:
            self.out.append(data)
            self.out_size += len(data)
        else:
            conn = self.client.conn
            window = conn.window(self.stream_id)
            if window >= len(data):
                conn.send_data(self.stream_id, data)
                return
            if window > 0:
                conn.send_data(self.stream_id, data[:window])
                data = data[window:]
            self.out.append(data)
            self.out_size = len(data)
        if self.out_size > _HELD_HIGH and not self.write_paused:
            self.write_paused = True
            exchange.pause_response()

    def response_trailers(self, exchange: ProviderExchange, trailers: Headers) -> None:
        self.out_trailers = _lowered(end_to_end(trailers))

    def response_done(self, exchange: ProviderExchange) -> None:
        self.out_end = True
        self.flush_out()

    def response_cut(self, exchange: ProviderExchange) -> None:
        self.client.reset_stream(self, INTERNAL_ERROR)

    # -- sending the response -----------------------------------------------------------

    def flush_out(self) -> None:
        """Send what waits for the client's window; end the stream once all is out."""
        if self.finished:
            return
        conn = self.client.conn
        stream_id = self.stream_id
        try:
            while self.out:
                window = conn.window(stream_id)
                if window <= 0:
                    return
                chunk = self.out.popleft()
                if len(chunk) > window:
                    self.out.appendleft(chunk[window:])
                    chunk = chunk[:window]
                self.out_size -= len(chunk)
                conn.send_data(stream_id, chunk)
            if self.write_paused and not self.client.write_paused:
                self.write_paused = False
                exchange = self.exchange
                if exchange is not None:
                    exchange.resume_response()
            if self.out_end:
                if self.out_trailers:
                    conn.send_headers(stream_id, self.out_trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
                self.client.stream_finished(self)
        except StreamGone:
            self.client.stream_finished(self)


def _lowered(fields: Headers) -> Headers:
    """HTTP/1.1 fields as HTTP/2 ones: lower-case names (RFC 9113 §8.2.1)."""
    return [(name.lower(), value) for name, value in fields]


class H2ClientConnection(Handler):
    """One client's HTTP/2 connection to the HTTP listener: an asyncio protocol by its
    methods (a compiled class has one base: the engine's Handler). Takes over a connection
    the HTTP/1.1 fast path accepted, counted and tracked."""

    def __init__(
        self,
        context: ListenerContext,
        config: HttpConfig,
        pool: FastPool,
        h2_pool: H2Pool,
        router: Router,
    ) -> None:
        self.context = context
        self.stats = context.stats
        self.config = config
        self.pool = pool
        self.h2_pool = h2_pool
        self.router = router
        self.loop = asyncio.get_running_loop()
        self.conn = Connection(
            self,
            client=False,
            settings=Settings(
                stream_window=_STREAM_WINDOW,
                connection_window=_CONNECTION_WINDOW,
                max_concurrent_streams=config.h2_max_concurrent_streams,
                max_header_list_size=config.max_header_bytes,
                max_resets_per_s=config.h2_max_resets_per_s,
                max_control_frames_per_s=config.h2_max_control_frames_per_s,
                oversized_to_handler=True,  # answered 431 (_start)
            ),
        )
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.draining = False
        self.write_paused = False  # the client's socket buffer is full
        self.flush_scheduled = False
        self.client_ip = "unknown"
        # One timer for every stream's response deadline (re-armed, not made per request).
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.deadline_timer_at = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.served = 0
        self.idle_mark = -1

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
        self.idle_timer = self.loop.call_later(self.config.client_idle_timeout_s, self._idle)

    def upgraded(self, settings: bytes, request_headers: Headers) -> None:
        """h2c: the 101 is sent; the request that asked is stream 1 (RFC 7540 §3.2)."""
        stream_id = self.conn.upgrade(settings)
        self._start(stream_id, request_headers, True)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        try:
            self.conn.receive(data)
        except ProtocolError as exc:
            # A client that breaks HTTP/2 loses its connection (GOAWAY), nobody else.
            if exc.code == ENHANCE_YOUR_CALM:
                log.warning(
                    "http/2 connection refused: %s",
                    exc,
                    extra={
                        "listener": self.context.listener.display_name,
                        "client": self.client_ip,
                    },
                )
                self.stats.rejected += 1
            else:
                log.info("client broke HTTP/2", extra={"error": str(exc)})
            self._linger()
            return
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close: HTTP/2 has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self.deadline_timer, self.idle_timer):
            if timer is not None:
                timer.cancel()
        self._cancel_all()
        if self.transport is not None:
            self.stats.active -= 1
            self.context.untrack(self.transport)

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            stream.write_paused = True
            exchange = stream.exchange
            if exchange is not None:
                exchange.pause_response()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            if stream.out_size <= _HELD_HIGH:
                stream.write_paused = False
                exchange = stream.exchange
                if exchange is not None:
                    exchange.resume_response()

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> None:
        self.flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.stats.bytes_out += len(data)
            self.transport.write(data)

    def schedule_flush(self) -> None:
        """Flush on the loop's next turn: the answers of every provider read in this turn
        go out in one send."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def _linger(self) -> None:
        """After a connection error's GOAWAY: end our side (FIN) and close a second later
        or at the client's end, whichever is first; what it sends meanwhile is dropped.
        Closed at once with unread bytes, the socket would answer with a reset, which can
        reach the client before the GOAWAY."""
        self._cancel_all()
        self.flush()
        transport = self.transport
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(_LINGER_S, transport.close)

    def _cancel_all(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.finished = True
            exchange, stream.exchange = stream.exchange, None
            if exchange is not None and not exchange.done:
                exchange.cancel()

    # -- the engine's events (agent/h2/connection.py Handler) -----------------------------

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if kind == HEAD:
            self._start(stream_id, headers, end_stream)
            return
        stream = self.streams.get(stream_id)  # trailers: they end the request
        if stream is not None:
            stream.request_end(headers)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.conn.ack(stream_id, flow)
            return
        stream.request_data(data, flow, end_stream)

    def stream_reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.finished = True
        exchange, stream.exchange = stream.exchange, None
        if exchange is not None and not exchange.done:
            exchange.cancel()  # the provider's side goes too (never reused)
        self._stream_gone()

    def window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.flush_out()
            return
        for each in list(self.streams.values()):
            if each.out_size or each.out_end:
                each.flush_out()

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        return None  # the client opens no more streams; those open finish

    # -- streams ---------------------------------------------------------------------------

    def _start(self, stream_id: int, headers: Headers, ended: bool) -> None:
        stats = self.stats
        stats.requests += 1
        request = Request()
        method = path = b""
        authority: bytes | None = None
        regular: Headers = []
        cookies: list[bytes] = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
            elif name == b"cookie":
                cookies.append(value)  # one field for HTTP/1.1 (RFC 9113 §8.2.3)
            else:
                regular.append((name, value))
        if cookies:
            regular.append((b"cookie", b"; ".join(cookies)))
        fields, length, _, host = split_fields(regular, request.incoming)
        if authority is None:
            authority = host
        request.method = method
        request.url = path
        request.host = authority
        request.headers = regular
        request.complete = ended
        request.has_body = not ended
        target = self.router.route(authority, path)
        stream = _Stream(self, stream_id, request)
        self.streams[stream_id] = stream
        exchange = new_exchange(stream, request, target, self.router.route_stats(target))
        stream.exchange = exchange
        if method == b"CONNECT" or not path:
            exchange.done = True
            stream.answer(exchange, 501, "CONNECT is not supported over HTTP/2")
            return
        if self.conn.decoder.oversized:
            exchange.done = True
            limit = self.config.max_header_bytes
            stream.answer(exchange, 431, f"header list over {limit} bytes")
            return
        if host is None and authority is not None:
            fields.insert(0, (b"host", authority))
        elif authority is not None and host != authority:
            fields = [(b"host", authority) if n.lower() == b"host" else (n, v) for n, v in fields]
        if request.has_body and length is None:
            request.chunked = True
            fields.append((b"transfer-encoding", b"chunked"))
        config = self.config
        if config.x_forwarded or config.forwarded:
            fields = forwarding(
                fields, config.x_forwarded, config.forwarded, self.client_ip, authority
            )
        request.first = method + b" " + path + b" HTTP/1.1\r\n"
        request.fields = fields
        exchange.open()

    def stream_finished(self, stream: _Stream) -> None:
        """The stream's response is wholly sent (or the stream is gone)."""
        if stream.finished:
            return
        stream.finished = True
        stream.exchange = None  # (a reference cycle with its side: freed without the gc)
        self.served += 1
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not stream.request.complete and stream.stream_id in self.conn.streams:
            # Answered before the client finished sending (RFC 9113 §8.1): it may stop.
            self.conn.reset(stream.stream_id, NO_ERROR)
        unread = stream.held_in
        stream.held_in = 0
        if unread:
            self.conn.ack(stream.stream_id, unread)  # the connection's window comes back
        self.schedule_flush()
        self._stream_gone()

    def reset_stream(self, stream: _Stream, code: int) -> None:
        if stream.stream_id in self.conn.streams:
            self.conn.reset(stream.stream_id, code)
        stream.out.clear()
        stream.out_size = 0
        self.stream_finished(stream)

    def _stream_gone(self) -> None:
        if self.draining and not self.streams:
            self.loop.call_soon(self._close)

    # -- deadlines, idle, drain ------------------------------------------------------------

    def arm(self, exchange: ProviderExchange, timeout_s: float) -> None:
        """``exchange``'s response head is due within ``timeout_s`` (one timer for all the
        connection's streams, set for the earliest deadline)."""
        deadline = self.loop.time() + timeout_s
        exchange.deadline = deadline
        timer = self.deadline_timer
        if timer is not None:
            if self.deadline_timer_at <= deadline:
                return
            timer.cancel()
        self.deadline_timer = self.loop.call_at(deadline, self._check_deadlines)
        self.deadline_timer_at = deadline

    def _check_deadlines(self) -> None:
        self.deadline_timer = None
        if self.closed:
            return
        now = self.loop.time()
        earliest = 0.0
        for stream in list(self.streams.values()):
            exchange = stream.exchange
            if exchange is None or not exchange.deadline:
                continue
            if exchange.deadline <= now:
                exchange.deadline = 0.0
                exchange.timeout()
            elif not earliest or exchange.deadline < earliest:
                earliest = exchange.deadline
        if earliest:
            self.deadline_timer = self.loop.call_at(earliest, self._check_deadlines)
            self.deadline_timer_at = earliest
        self.schedule_flush()

    def _idle(self) -> None:
        """GOAWAY and close when no stream was served for a whole idle period (checked once
        per period: closed between one and two periods after its last stream)."""
        if self.closed:
            return
        if not self.streams and self.served == self.idle_mark:
            self.conn.goaway()
            self._close()
            return
        self.idle_mark = self.served
        self.idle_timer = self.loop.call_later(self.config.client_idle_timeout_s, self._idle)

    def drain(self) -> None:
        """The agent is draining: GOAWAY (RFC 9113 §6.8: the streams open finish, the
        client opens new ones elsewhere), and the connection closes after its last."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.conn.goaway()
        self.flush()
        if not self.streams:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()
