"""The HTTP/1.1-aware outbound listener: one client connection, many requests, each routed.

The hot path is asyncio Protocol callbacks and httptools (llhttp, C) on both sides, with
no coroutine, stream buffer or timeout context per request: a request head is parsed,
routed (Host and path prefix to a service), balanced (the service's cluster picks the
endpoint per request, so one keep-alive client is spread over every provider), written
once to a pooled keep-alive provider connection (plugins/http/h1_upstream.py), and the
provider's response head and body chunks are written to the client as the provider's
parser reports them. Header work is one pass per head: hop-by-hop fields out, framing
read. Bodies are forwarded chunk by chunk as they arrive (Content-Length bodies as the
same bytes; chunked bodies re-framed), with backpressure both ways (a side whose socket
buffer fills pauses reading on the other). Only when the agent itself cannot get a
response does it answer with problem details: no endpoint 503, connect failure 502,
timeout 504.

Pipelined requests are answered in order: requests parsed while one is served are
queued, and reading from the client pauses until the queue drains (bounded buffering).

What is not plain request/response is handed to the h11 stream session
(plugins/http/h1_session.py), between requests: the HTTP/2 preface, upgrade requests
(WebSocket, h2c) and CONNECT.

Bad input (a malformed request line or header, a header block over the limit, both
Content-Length and Transfer-Encoding, which llhttp refuses) gets 400/431 and the
connection is closed after a lingering close, with a log line; other connections are
unaffected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from agent.h2.upstream import H2Pool
from agent.runtime.protocols import ListenerContext
from plugins.http.config import HttpConfig
from plugins.http.h1_exchange import ClientSide, ProviderExchange, Request, serialise
from plugins.http.h1_session import H11Connection
from plugins.http.h1_upstream import FastPool
from plugins.http.h2_exchange import new_exchange
from plugins.http.h2_listener import (
    PREFACE,
    H2ClientConnection,
    upgrade_settings,
    upgrade_settings_problem,
)
from plugins.http.headers import (
    Headers,
    comma_tokens,
    end_to_end,
    forwarding,
    header_value,
    split_fields,
)
from plugins.http.routing import Router, problem_body

if TYPE_CHECKING:
    from plugins.http.h11_pool import UpstreamPool

log = logging.getLogger(__name__)

# Lingering close: how long, and how many bytes, to read and discard from a client that
# is still sending after its connection's last response.
_LINGER_S = 2.0
_LINGER_BYTES = 1024 * 1024

# Why reading from the client is paused (bits): requests queued behind the one being
# served, or body bytes waiting for a provider connection; the provider's socket full.
_QUEUED = 1
_UPSTREAM_FULL = 2
_PENDING = 4

_SWITCHING_TO_H2C = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
)


class _HeadTooLarge(Exception):
    pass


class _BadRequest(Exception):
    """A request the listener refuses with 400 and this text (raised in a parser callback)."""


class HttpProxyConnection(ClientSide):
    """One client connection on the listener (HTTP/1.1 fast path): an asyncio protocol by
    its methods (a compiled class has one base, the exchange's ClientSide)."""

    def __init__(
        self,
        context: ListenerContext,
        config: HttpConfig,
        pool: FastPool,
        h2_pool: H2Pool,
        stream_pool: UpstreamPool,
        router: Router,
        sessions: set[asyncio.Task[None]],
    ) -> None:
        self.context = context
        self.stats = context.stats
        self.config = config
        self.pool = pool
        self.h2_pool = h2_pool
        self.stream_pool = stream_pool
        self.router = router
        self.sessions = sessions
        self.transport: asyncio.Transport | None = None
        # Made in the loop (the listener's protocol factory).
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.sniffing = config.http2
        self.sniffed = b""
        # The request the parser is filling, and those parsed and not yet answered (the
        # first is being served).
        self.current: Request | None = None
        self.queue: deque[Request] = deque()
        self.exchange: ProviderExchange | None = None
        self.in_head = False
        self.head_size = 0
        self.url_parts: list[bytes] = []
        self.paused = 0
        self.write_paused = False
        self.client_eof = False
        self.closed = False
        # Bytes to give the h11 session once the queue drains (an upgrade request).
        self.handoff: bytes | None = None
        # Bad input seen while earlier requests are still being answered.
        self.refusal: tuple[int, str] | None = None
        self.discarding = -1
        self.served = 0
        # The agent is draining: the response under way is the last (Connection: close).
        self.draining = False
        self.idle_mark = -1
        self.idle_timer: asyncio.TimerHandle | None = None
        # The response head of the exchange under way is due by then (loop time; 0: none),
        # checked by one timer per connection that is re-armed, not made per request.
        self.deadline = 0.0
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.deadline_timer_at = 0.0
        self._client_ip: str | None = None
        # Writes held while a provider read is handled (see cork).
        self.corked: list[bytes] | None = None

    # -- asyncio.Protocol (client side) --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.stats.accepted += 1
        self.stats.active += 1
        self.context.track(self.transport)
        self.idle_timer = self.loop.call_later(self.config.client_idle_timeout_s, self._idle)

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.discarding >= 0:
            self.discarding += len(data)
            if self.discarding > _LINGER_BYTES:
                self._close()
            return
        if self.sniffing:
            data = self.sniffed + data
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                self.sniffed = data
                return
            self.sniffing = False
            self.sniffed = b""
            if data.startswith(PREFACE):
                self._to_h2(data)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[int(exc.args[0]) :])
            return
        except httptools.HttpParserError as malformed:
            self._bad_input(malformed)
            return
        if len(self.queue) > 1:
            self._pause(_QUEUED)
        request = self.current
        if request is not None and request.pending_bytes > self.config.read_chunk_bytes:
            self._pause(_PENDING)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.in_head or self.sniffed or any(not r.complete for r in self.queue):
            # Gone mid-request: nothing more will come, and nothing can be answered.
            self._abort_exchange()
            return False
        # Answer what was asked, then close.
        return self.exchange is not None or bool(self.queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        self._abort_exchange()
        if self.transport is not None:
            self.stats.active -= 1
            self.context.untrack(self.transport)

    def pause_writing(self) -> None:
        self.write_paused = True
        exchange = self.exchange
        if exchange is not None:
            exchange.pause_response()

    def resume_writing(self) -> None:
        self.write_paused = False
        exchange = self.exchange
        if exchange is not None:
            exchange.resume_response()

    # -- httptools callbacks (requests) ----------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()
        self.in_head = True
        self.head_size = 0
        self.url_parts.clear()

    def on_url(self, url: bytes) -> None:
        # Pieces kept and joined once: ``bytes +=`` would copy the URL again per piece.
        self.url_parts.append(url)
        self.head_size += len(url)
        if self.head_size > self.config.max_header_bytes:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        assert request is not None
        # Trailers count against the same limit as the head they follow.
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.config.max_header_bytes:
            raise _HeadTooLarge
        if self.in_head:
            request.headers.append((name, value))
        else:
            request.trailers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        self.in_head = False
        request.url = b"".join(self.url_parts)
        self.url_parts.clear()
        parser = self.parser
        request.method = method = parser.get_method()
        request.version = parser.get_http_version()
        if request.version not in ("1.0", "1.1"):
            # HTTP/0.9 ("GET /" and no version) has no headers to route or guard by; it
            # is refused, not forwarded (issue 25).
            raise _BadRequest(f"HTTP/{request.version} requests are not served")
        if parser.should_upgrade():
            request.upgrade = True  # the h11 session takes it (_upgrade)
            return
        # HTTP/1.0 clients get one response per connection (as h11 serves them).
        request.keep_alive = parser.should_keep_alive() and request.version == "1.1"
        fields, length, chunked, request.host = split_fields(request.headers, request.incoming)
        request.chunked = chunked
        request.has_body = chunked or (length is not None and length.strip() not in (b"", b"0"))
        if chunked:
            fields.append((b"Transfer-Encoding", b"chunked"))
        if self.config.x_forwarded or self.config.forwarded:
            config = self.config
            fields = forwarding(
                fields, config.x_forwarded, config.forwarded, self.client_ip, request.host
            )
        request.first = method + b" " + request.url + b" HTTP/1.1\r\n"
        request.fields = fields
        self.queue.append(request)
        if request.has_body and len(self.queue) == 1:
            self._begin(request)  # the body streams to the provider as it arrives

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        exchange = self.exchange  # the queue's first request's, if this is that one
        if exchange is not None and exchange.request is request:
            exchange.send_body(body)
        else:
            request.pending.append(body)
            request.pending_bytes += len(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        request.complete = True
        if request.upgrade:
            return
        exchange = self.exchange
        if exchange is not None and exchange.request is request:
            exchange.end_body()
        if (
            not request.has_body
            and self.queue
            and self.queue[0] is request
            and self.exchange is None
        ):
            self._begin(request)

    # -- serving ---------------------------------------------------------------------------

    @property
    def client_ip(self) -> str:
        if self._client_ip is None:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self._client_ip = str(peer[0]) if peer else "unknown"
        return self._client_ip

    def _begin(self, request: Request) -> None:
        self.stats.requests += 1
        target = self.router.route(request.host, request.url)
        exchange = new_exchange(self, request, target, self.router.route_stats(target))
        self.exchange = exchange
        exchange.open()

    def write(self, data: bytes) -> None:
        self.stats.bytes_out += len(data)
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        self.stats.bytes_out += sum(map(len, data))
        if self.corked is not None:
            self.corked += data
        elif self.transport is not None:
            self.transport.writelines(data)

    def cork(self) -> None:
        """Hold writes (a response head and its body chunks read together): a send per
        provider read instead of one per piece, which on loopback is most of the cost."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        held, self.corked = self.corked, None
        if held and self.transport is not None and not self.closed:
            self.transport.writelines(held)

    def respond(
        self, exchange: ProviderExchange, status: int, content_type: bytes, body: bytes
    ) -> None:
        """An answer of the agent's own for the exchange's request; ends it."""
        request = exchange.request
        keep = request.keep_alive and request.complete and not self.draining
        head = serialise(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            [
                (b"Content-Type", content_type),
                (b"Content-Length", b"%d" % len(body)),
                *([] if keep else [(b"Connection", b"close")]),
            ],
        )
        if not self.closed:
            self.writelines([head, body])
            exchange.route.bytes_out += len(head) + len(body)
        self.exchange_done(keep)

    def exchange_done(self, keep: bool) -> None:
        """The response to the first queued request is written: next one, or close."""
        self.exchange = None
        if self.queue:
            self.queue.popleft()
        self.served += 1
        if self.closed:
            return
        if not keep or self.draining:
            self._finish()
            return
        if self.queue:
            following = self.queue[0]
            if following.complete or following.has_body:
                self._begin(following)
            if len(self.queue) <= 1 and self.handoff is None and self.refusal is None:
                self._resume(_QUEUED)
            return
        if self.handoff is not None:
            data, self.handoff = self.handoff, None
            self._hand_over(data)
            return
        if self.refusal is not None:
            self._refuse(*self.refusal)
            return
        if self.client_eof:
            self._close()
            return
        self._resume(_QUEUED)

    # -- the provider's response, framed for HTTP/1.1 (ClientSide) ----------------------

    def informational(
        self, exchange: ProviderExchange, status: int, reason: bytes, fields: Headers
    ) -> None:
        head = serialise(b"HTTP/1.1 %d %s\r\n" % (status, reason), fields)
        exchange.route.bytes_out += len(head)
        self.write(head)

    def response_started(
        self,
        exchange: ProviderExchange,
        status: int,
        reason: bytes,
        fields: Headers,
        chunked: bool,
        until_close: bool,
    ) -> None:
        request = exchange.request
        # A body without framing is chunked for the client (its connection stays), except
        # for an HTTP/1.0 client, which reads it to the close.
        exchange.chunked_out = chunked_out = chunked or (until_close and request.version == "1.1")
        exchange.keep = keep = (
            request.keep_alive
            and request.complete
            and not (until_close and not chunked_out)
            and not self.draining
        )
        if chunked_out:
            fields.append((b"Transfer-Encoding", b"chunked"))
        if not keep:
            fields.append((b"Connection", b"close"))
        head = serialise(b"HTTP/1.1 %d %s\r\n" % (status, reason), fields)
        exchange.route.bytes_out += len(head)
        self.write(head)

    def response_data(self, exchange: ProviderExchange, data: bytes) -> None:
        if exchange.chunked_out:
            size = b"%x\r\n" % len(data)
            exchange.route.bytes_out += len(size) + len(data) + 2
            self.writelines([size, data, b"\r\n"])
        else:
            exchange.route.bytes_out += len(data)
            self.write(data)

    def response_trailers(self, exchange: ProviderExchange, trailers: Headers) -> None:
        if exchange.chunked_out:
            last = serialise(b"0\r\n", end_to_end(trailers))
            exchange.route.bytes_out += len(last)
            self.write(last)
            exchange.chunked_out = False  # the last chunk is written

    def response_done(self, exchange: ProviderExchange) -> None:
        if exchange.chunked_out:
            exchange.route.bytes_out += 5
            self.write(b"0\r\n\r\n")
        self.exchange_done(exchange.keep)

    def response_cut(self, exchange: ProviderExchange) -> None:
        self.exchange = None
        self._close()

    def body_sent(self, exchange: ProviderExchange, size: int) -> None:
        self._resume(_PENDING)

    def upstream_writable(self, exchange: ProviderExchange, writable: bool) -> None:
        if writable:
            self._resume(_UPSTREAM_FULL)
        else:
            self._pause(_UPSTREAM_FULL)

    # -- the end of a connection -----------------------------------------------------------

    def _finish(self) -> None:
        """Close after the last response, without losing it to a client still sending.

        Closing a socket with unread input makes the kernel send RST, which may destroy
        the response before the client reads it. So when the request was not read to its
        end: half-close, then read and discard for a short, bounded while (nginx's
        lingering close).
        """
        request = self.current
        if (request is None or request.complete) and not self.in_head:
            self._close()
            return
        assert self.transport is not None
        self.uncork()
        self.discarding = 0
        self.paused = 0
        self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self._close)

    def _close(self) -> None:
        self.uncork()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _abort_exchange(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.cancel()

    def arm(self, exchange: ProviderExchange, timeout_s: float) -> None:
        """The exchange under way must have its response head within ``timeout_s``.

        A uvloop timer made and cancelled per request costs more than the rest of the
        request's Python work; the connection's one timer, armed for an earlier deadline,
        re-arms itself when it fires instead.
        """
        loop = self.loop
        self.deadline = deadline = loop.time() + timeout_s
        if self.deadline_timer is not None:
            if self.deadline_timer_at <= deadline:
                return
            self.deadline_timer.cancel()
        self.deadline_timer = loop.call_at(deadline, self._check_deadline)
        self.deadline_timer_at = deadline

    def disarm(self, exchange: ProviderExchange) -> None:
        self.deadline = 0.0

    def _check_deadline(self) -> None:
        self.deadline_timer = None
        deadline = self.deadline
        exchange = self.exchange
        if not deadline or exchange is None or self.closed:
            return
        if self.loop.time() >= deadline:
            self.deadline = 0.0
            exchange.timeout()
            return
        self.deadline_timer = self.loop.call_at(deadline, self._check_deadline)
        self.deadline_timer_at = deadline

    def _idle(self) -> None:
        """Close a connection with no request answered for a whole idle period (checked
        once per period: closed between one and two periods after its last request)."""
        if self.closed:
            return
        if self.exchange is None and self.served == self.idle_mark:
            self._close()
            return
        self.idle_mark = self.served
        self.idle_timer = self.loop.call_later(self.config.client_idle_timeout_s, self._idle)

    def drain(self) -> None:
        """The agent is draining: an idle keep-alive connection closes now; a busy one
        after the response under way, which says ``Connection: close`` if its head is
        not sent yet."""
        self.draining = True
        if self.exchange is None and not self.queue and not self.in_head:
            self._close()

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # -- hand-over and bad input -----------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        """An upgrade request (or CONNECT) was parsed: h2c is served here (as the only
        request on the connection); everything else by the h11 session."""
        request = self.current
        assert request is not None
        settings = self._h2c_settings(request)
        if settings is not None and self.exchange is None and not self.queue:
            problem = upgrade_settings_problem(settings)
            if problem is not None:
                self._refuse(400, problem)
                return
            self._upgrade_to_h2(request, settings, rest)
            return
        head = serialise(
            request.method + b" " + request.url + b" HTTP/" + request.version.encode() + b"\r\n",
            request.headers,
        )
        if self.exchange is None and not self.queue:
            self._hand_over(head + rest)
        else:
            self.handoff = head + rest
            self._pause(_QUEUED)

    def _h2c_settings(self, request: Request) -> bytes | None:
        """The HTTP2-Settings of an h2c upgrade this listener takes (RFC 7540 §3.2), or
        None. Only for a request without a body (as curl sends it); with a body, or
        behind pipelined requests, the Upgrade is ignored and the request served over
        HTTP/1.1, which the RFC allows."""
        headers = request.headers
        if not self.config.http2 or request.method == b"CONNECT":
            return None
        settings = header_value(headers, b"http2-settings")
        if (
            settings is None
            or header_value(headers, b"content-length") not in (None, b"0")
            or header_value(headers, b"transfer-encoding") is not None
            or b"h2c" not in comma_tokens(headers, b"upgrade")
            or b"http2-settings" not in comma_tokens(headers, b"connection")
        ):
            return None
        return settings

    def _upgrade_to_h2(self, request: Request, settings: bytes, rest: bytes) -> None:
        """101, then HTTP/2 with this request as stream 1."""
        payload = upgrade_settings(settings)
        assert payload is not None  # checked by upgrade_settings_problem
        authority = header_value(request.headers, b"host") or b""
        headers = [
            (b":method", request.method),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", request.url),
            *(
                (name.lower(), value)
                for name, value in end_to_end(request.headers)
                if name.lower() not in (b"host", b"http2-settings")
            ),
        ]
        self.write(_SWITCHING_TO_H2C)
        self._to_h2(rest, (payload, headers))

    def _to_h2(self, data: bytes, upgrade: tuple[bytes, Headers] | None = None) -> None:
        """The HTTP/2 connection preface (or an h2c upgrade): the engine's connection
        (plugins/http/h2_listener.py) takes the socket, with what was read so far."""
        assert self.transport is not None
        self.uncork()
        for timer in (self.idle_timer, self.deadline_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.deadline_timer = None
        connection = H2ClientConnection(
            self.context, self.config, self.pool, self.h2_pool, self.router
        )
        transport = self.transport
        # From here on the HTTP/2 connection owns the socket, its tracking and its close.
        self.transport = None
        self.closed = True
        transport.set_protocol(cast(asyncio.Protocol, connection))
        connection.connection_made(transport)
        if upgrade is not None:
            connection.upgraded(*upgrade)
        # Counted once already, as this connection read them.
        self.stats.bytes_in -= len(data)
        if data:
            connection.data_received(data)
        transport.resume_reading()

    def _hand_over(self, data: bytes) -> None:
        assert self.transport is not None
        self.uncork()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        session = H11Connection(
            self.context, self.config, self.stream_pool, self.router, self.sessions
        )
        transport = self.transport
        # From here on the h11 session owns the connection, its tracking and its close.
        self.transport = None
        self.closed = True
        transport.set_protocol(session)
        session.connection_made(transport)
        # Counted once already, as this connection read them.
        self.stats.bytes_in -= len(data)
        session.data_received(data)
        if self.client_eof:
            session.eof_received()
        transport.resume_reading()

    def _bad_input(self, exc: Exception) -> None:
        if self.head_size > self.config.max_header_bytes:
            limit = self.config.max_header_bytes
            refusal = (431, f"request head (or trailers) over {limit} bytes")
        elif isinstance(exc.__context__, _BadRequest):
            refusal = (400, str(exc.__context__))
        else:
            refusal = (400, str(exc) or type(exc).__name__)
        request = self.current
        if not self.in_head and request is not None and request in self.queue:
            # A body that breaks framing mid-request (a bad chunk size).
            log.warning(
                "bad request body from client: %s",
                refusal[1],
                extra={"listener": self.context.listener.display_name},
            )
            self._abort_exchange()
            self._close()
            return
        self.in_head = False
        if self.exchange is None and not self.queue:
            self._refuse(*refusal)
        else:
            self.refusal = refusal
            self._pause(_QUEUED)

    def _refuse(self, status: int, reason: str) -> None:
        log.warning(
            "bad request from client: %s",
            reason,
            extra={"listener": self.context.listener.display_name, "client": self.client_ip},
        )
        self.stats.rejected += 1
        body = problem_body(status, reason, self.router.default.service.name)
        head = serialise(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            [
                (b"Content-Type", b"application/problem+json"),
                (b"Content-Length", b"%d" % len(body)),
                (b"Connection", b"close"),
            ],
        )
        self.writelines([head, body])
        self.current = None
        self.in_head = True  # unread input may follow: linger
        self._finish()


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    508: b"Loop Detected",
}
