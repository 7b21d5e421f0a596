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

from agent.calls import Attempt, Call, CallRejected, Outcome
from agent.cluster.host import Host
from agent.errors import ConnectError, NoEndpointError, UpstreamError, UpstreamTimeout
from agent.exchange import GIVE_UP, Action, Exchange, Next
from agent.governance.policy import decision_of
from agent.governance.retry import Failure, FailureKind
from agent.runtime.protocols import ListenerContext, RouteStats
from plugins.http.calls import (
    RETRYABLE_STATUSES,
    chain_of,
    exchange_for,
    outcome_of_status,
    refusal,
    with_outgoing,
)
from plugins.http.config import HttpConfig
from plugins.http.h1_session import H11Connection
from plugins.http.h1_upstream import FastPool, UpstreamConnection
from plugins.http.h2_listener import PREFACE
from plugins.http.headers import Headers, end_to_end, forwarding, split_fields
from plugins.http.routing import Router, Target, problem_body

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

_NO_BODY_STATUSES = frozenset({204, 304})
_NONE: frozenset[str] = frozenset()


class _HeadTooLarge(Exception):
    pass


class _BadRequest(Exception):
    """A request the listener refuses with 400 and this text (raised in a parser callback)."""


class _Request:
    """One request as parsed; its body chunks wait in ``pending`` until a provider
    connection takes them (then they are written as they arrive)."""

    __slots__ = (
        "chunked",
        "complete",
        "exchange",
        "fields",
        "first",
        "has_body",
        "headers",
        "host",
        "incoming",
        "keep_alive",
        "method",
        "pending",
        "pending_bytes",
        "trailers",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.trailers: Headers = []
        self.method = b""
        self.version = "1.1"
        self.host: bytes | None = None
        # The request line and end-to-end fields to send (serialised per attempt, with
        # what the call's observers add), and the propagation fields that arrived.
        self.first = b""
        self.fields: Headers = []
        self.incoming: dict[str, str] = {}
        self.keep_alive = True
        self.chunked = False
        self.has_body = False
        self.complete = False
        self.upgrade = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.exchange: _Exchange | None = None


class HttpProxyConnection(asyncio.Protocol):
    """One client connection on the listener (HTTP/1.1 fast path)."""

    def __init__(
        self,
        context: ListenerContext,
        config: HttpConfig,
        pool: FastPool,
        stream_pool: UpstreamPool,
        router: Router,
        sessions: set[asyncio.Task[None]],
    ) -> None:
        self.context = context
        self.stats = context.stats
        self.config = config
        self.pool = pool
        self.stream_pool = stream_pool
        self.router = router
        self.sessions = sessions
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.sniffing = config.http2
        self.sniffed = b""
        # The request the parser is filling, and those parsed and not yet answered (the
        # first is being served).
        self.current: _Request | None = None
        self.queue: deque[_Request] = deque()
        self.exchange: _Exchange | None = None
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
        self.loop = asyncio.get_running_loop()
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
                self._hand_over(data, sniff=True)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[int(exc.args[0]) :])
            return
        except httptools.HttpParserError as exc:
            self._bad_input(exc)
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
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

    # -- httptools callbacks (requests) ----------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = _Request()
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
        framed = [b"%x\r\n" % len(body), body, b"\r\n"] if request.chunked else [body]
        exchange = request.exchange
        if exchange is not None and exchange.sending:
            exchange.send_body(framed)
        else:
            request.pending += framed
            request.pending_bytes += len(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        request.complete = True
        if request.upgrade:
            return
        if request.chunked:
            end = (
                _serialise(b"0\r\n", end_to_end(request.trailers))
                if request.trailers
                else b"0\r\n\r\n"
            )
            exchange = request.exchange
            if exchange is not None and exchange.sending:
                exchange.send_body([end])
            else:
                request.pending.append(end)
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

    def _begin(self, request: _Request) -> None:
        self.stats.requests += 1
        target = self.router.route(request.host, request.url)
        exchange = _Exchange(self, request, target, self.stats.route(target.service.name))
        self.exchange = exchange
        request.exchange = exchange
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

    def answer(
        self,
        exchange: _Exchange,
        status: int,
        detail: str,
        extensions: dict[str, object] | None = None,
    ) -> None:
        """The agent's own error for the exchange's request (problem details); ends it."""
        body = problem_body(status, detail, exchange.target.service.name, extensions)
        self.stats.request_errors += 1
        self.respond(exchange, status, b"application/problem+json", body)

    def respond(self, exchange: _Exchange, status: int, content_type: bytes, body: bytes) -> None:
        """An answer of the agent's own for the exchange's request; ends it."""
        request = exchange.request
        keep = request.keep_alive and request.complete and not self.draining
        head = _serialise(
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
            self._hand_over(data, sniff=False)
            return
        if self.refusal is not None:
            self._refuse(*self.refusal)
            return
        if self.client_eof:
            self._close()
            return
        self._resume(_QUEUED)

    def upstream_writable(self, writable: bool) -> None:
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
        assert self.transport is not None and self.loop is not None
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

    def arm(self, timeout_s: float) -> None:
        """The exchange under way must have its response head within ``timeout_s``.

        A uvloop timer made and cancelled per request costs more than the rest of the
        request's Python work; the connection's one timer, armed for an earlier deadline,
        re-arms itself when it fires instead.
        """
        loop = self.loop
        assert loop is not None
        self.deadline = deadline = loop.time() + timeout_s
        if self.deadline_timer is not None:
            if self.deadline_timer_at <= deadline:
                return
            self.deadline_timer.cancel()
        self.deadline_timer = loop.call_at(deadline, self._check_deadline)
        self.deadline_timer_at = deadline

    def _check_deadline(self) -> None:
        self.deadline_timer = None
        deadline = self.deadline
        exchange = self.exchange
        if not deadline or exchange is None or self.closed:
            return
        assert self.loop is not None
        if self.loop.time() >= deadline:
            self.deadline = 0.0
            exchange.timeout()
            return
        self.deadline_timer = self.loop.call_at(deadline, self._check_deadline)
        self.deadline_timer_at = deadline

    def _idle(self) -> None:
        """Close a connection with no request answered for a whole idle period (checked
        once per period: closed between one and two periods after its last request)."""
        assert self.loop is not None
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
        """An upgrade request (or CONNECT) was parsed: the h11 session serves it."""
        request = self.current
        assert request is not None
        head = _serialise(
            request.method + b" " + request.url + b" HTTP/" + request.version.encode() + b"\r\n",
            request.headers,
        )
        if self.exchange is None and not self.queue:
            self._hand_over(head + rest, sniff=False)
        else:
            self.handoff = head + rest
            self._pause(_QUEUED)

    def _hand_over(self, data: bytes, sniff: bool) -> None:
        assert self.transport is not None
        self.uncork()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        session = H11Connection(
            self.context, self.config, self.stream_pool, self.router, self.sessions, sniff=sniff
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
        head = _serialise(
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


class _Exchange:
    """One request's way to a provider and its response's way back.

    The request is one call on the agent's Calls hub (metrics, traces, governance): opened
    when it is routed, an attempt per provider tried, finished when the response's last
    byte is written (or the client or provider goes away).
    """

    __slots__ = (
        "call",
        "chunked_out",
        "conn",
        "connecting",
        "discarding",
        "done",
        "driver",
        "host",
        "keep",
        "record",
        "request",
        "responded",
        "retry_step",
        "route",
        "sending",
        "status",
        "target",
        "timeout_s",
        "timer",
        "upstream",
    )

    def __init__(
        self, conn: HttpProxyConnection, request: _Request, target: Target, route: RouteStats
    ) -> None:
        self.conn = conn
        self.request = request
        self.target = target
        self.route = route
        route.requests += 1
        # The call's attempts (agent/exchange.py): which providers, retries, deadline.
        # Made when first needed (a rule in force, a failure): until then one shared and
        # never changed, so that a request that succeeds at once allocates no driver.
        self.driver = _NO_DRIVER
        self.upstream: UpstreamConnection | None = None
        self.host: Host | None = None
        self.connecting: asyncio.Task[None] | None = None
        # A delayed attempt (an injected delay, a retry's backoff).
        self.timer: asyncio.TimerHandle | None = None
        # The request head went out: body chunks are written as they arrive.
        self.sending = False
        self.responded = False
        # A provider's retryable answer being read to its end and dropped (a retry follows).
        self.discarding = False
        self.retry_step = GIVE_UP  # the driver's step after a dropped answer
        self.chunked_out = False
        self.keep = False
        self.done = False
        self.status = 0
        self.timeout_s = target.timeout_s
        self.call: Call | None = None
        self.record: Attempt | None = None

    # -- the call ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the call (policies may refuse it), then send, or wait an injected delay."""
        conn = self.conn
        request = self.request
        service = self.target.service.name
        try:
            self.call = call = conn.context.calls.start(
                "http",
                conn.router.direction,
                conn.router.call_routes.route(service, request.method),
                request.incoming,
            )
        except CallRejected as exc:
            self.done = True
            status, content_type, body = refusal(exc, service)
            if status >= 400:
                conn.stats.request_errors += 1
            conn.respond(self, status, content_type, body)
            return
        remaining = call.remaining_s()
        if remaining is not None and remaining < self.timeout_s:
            self.timeout_s = remaining  # never wait past the call's deadline
        if decision_of(call) is None:
            # No rule: the driver is made at the first failure, if any (nothing per call).
            self.attempt()
            return
        self._step(self._driver().begin())  # an injected delay, or the first attempt now

    def _driver(self) -> Exchange:
        """The call's driver, made now if it was not (a failure, or a rule in force)."""
        driver = self.driver
        if driver is _NO_DRIVER:
            request = self.request
            driver = self.driver = exchange_for(
                self.call, self.target, request.method, request.has_body, request.headers
            )
        return driver

    def _attempt_later(self) -> None:
        self.timer = None
        if not self.done:
            self.attempt()

    def _end_attempt(self, outcome: Outcome, status: str = "") -> None:
        record, self.record = self.record, None
        if record is not None and self.call is not None:
            self.call.end_attempt(record, outcome, status)

    def _step(self, step: Next) -> bool:
        """Do what the driver says: attempt now or after a wait (True), or nothing (False:
        the caller answers with the failure)."""
        if step.action is Action.GIVE_UP:
            return False
        if step.action is Action.WAIT:
            assert self.conn.loop is not None
            self.timer = self.conn.loop.call_later(step.delay_s, self._attempt_later)
        else:
            self.attempt()
        return True

    # -- getting a provider connection ------------------------------------------------------

    def attempt(self) -> None:
        driver = self.driver
        tried = driver.tried
        try:
            got = self.conn.pool.choose(
                self.target.cluster,
                tried,
                fresh=driver.stale_resent,
                subset_out=driver.subset_out,
            )
        except NoEndpointError as exc:
            self._fail_before_response(503, exc)
            return
        if isinstance(got, UpstreamConnection):
            self._send(got)
            return
        assert self.conn.loop is not None
        self.connecting = self.conn.loop.create_task(self._connect(got))

    async def _connect(self, host: Host) -> None:
        target = self.target
        try:
            upstream = await self.conn.pool.connect(
                target.cluster, target.service, host, self.driver.excluded
            )
        except UpstreamError as exc:
            self.connecting = None
            if self.done:
                return
            call = self.call
            if call is not None and isinstance(exc, ConnectError):
                call.end_attempt(call.begin_attempt(host.id), Outcome.CONNECT_ERROR)
            connect_failed = Failure(FailureKind.CONNECT, sent=False)
            if isinstance(exc, ConnectError) and self._step(
                self._driver().failed(host.id, connect_failed)
            ):
                return
            status = 503 if isinstance(exc, NoEndpointError) else 502
            self._fail_before_response(status, exc)
            return
        self.connecting = None
        if self.done:
            self.conn.pool.release(upstream)
            return
        self._send(upstream)

    def _send(self, upstream: UpstreamConnection) -> None:
        request = self.request
        self.upstream = upstream
        self.host = host = upstream.host
        host.active_requests += 1
        fields = request.fields
        call = self.call
        if call is not None:
            self.record = record = call.begin_attempt(host.id)
            outgoing = call.outgoing(record)
            if outgoing:
                fields = with_outgoing(fields, outgoing)
        head = _serialise(request.first, fields)
        upstream.start(self, head_only=request.method == b"HEAD")
        if self.conn.write_paused:
            upstream.pause_reading()
        self.route.bytes_in += len(head) + sum(map(len, request.pending))
        if request.pending:
            upstream.writelines([head, *request.pending])
            request.pending = []
            request.pending_bytes = 0
            self.conn._resume(_PENDING)
        else:
            upstream.write(head)
        self.sending = True
        timeout_s = self.timeout_s
        if call is not None and call.deadline is not None:
            timeout_s = min(timeout_s, call.remaining_s() or 0.0)  # a retry's share
        self.conn.arm(timeout_s)

    def send_body(self, framed: list[bytes]) -> None:
        upstream = self.upstream
        if upstream is not None:
            self.route.bytes_in += sum(map(len, framed))
            upstream.writelines(framed)

    # -- ResponseSink (called by the provider connection) ----------------------------------

    def response_head(self, status: int, reason: bytes, headers: Headers) -> bool:
        conn = self.conn
        request = self.request
        fields, length, chunked, _ = split_fields(headers)
        if status < 200:
            # 100 Continue (the client's Expect was forwarded) and 103 Early Hints.
            head = _serialise(b"HTTP/1.1 %d %s\r\n" % (status, reason), fields)
            self.route.bytes_out += len(head)
            conn.write(head)
            return False
        self.conn.deadline = 0.0
        assert self.host is not None
        if status >= 500:
            self.target.cluster.report_failure(self.host)
        else:
            self.target.cluster.report_success(self.host)
        no_body = request.method == b"HEAD" or status in _NO_BODY_STATUSES
        until_close = not no_body and length is None and not chunked
        driver = self.driver
        if status in RETRYABLE_STATUSES and driver.decision is not None and request.complete:
            # Under a retry rule (whose driver exists since the call opened), a gateway
            # error may be retried: read it to its end and drop it (response_end tries
            # again), unless the rule or budget says no.
            step = driver.failed(self.host.id, Failure(FailureKind.STATUS, True))
            if step.action is not Action.GIVE_UP:
                self.discarding = True
                self.status = status
                self._end_attempt(Outcome.APP_ERROR, str(status))
                self.retry_step = step
                return until_close
        # Once responded the driver is not asked again (upstream_failed cuts the client);
        # the shared no-driver is left alone.
        if driver is not _NO_DRIVER:
            driver.answer_started()
        self.responded = True
        self.status = status
        self._end_attempt(outcome_of_status(status), str(status))
        # A body without framing is chunked for the client (its connection stays), except
        # for an HTTP/1.0 client, which reads it to the close.
        self.chunked_out = chunked or (until_close and request.version == "1.1")
        self.keep = (
            request.keep_alive
            and request.complete
            and not (until_close and not self.chunked_out)
            and not conn.draining
        )
        if self.chunked_out:
            fields.append((b"Transfer-Encoding", b"chunked"))
        if not self.keep:
            fields.append((b"Connection", b"close"))
        head = _serialise(b"HTTP/1.1 %d %s\r\n" % (status, reason), fields)
        self.route.bytes_out += len(head)
        conn.write(head)
        return until_close

    def response_body(self, data: bytes) -> None:
        if self.discarding:
            return
        if self.chunked_out:
            size = b"%x\r\n" % len(data)
            self.route.bytes_out += len(size) + len(data) + 2
            self.conn.writelines([size, data, b"\r\n"])
        else:
            self.route.bytes_out += len(data)
            self.conn.write(data)

    def response_trailers(self, trailers: Headers) -> None:
        if self.chunked_out and not self.discarding:
            last = _serialise(b"0\r\n", end_to_end(trailers))
            self.route.bytes_out += len(last)
            self.conn.write(last)
            self.chunked_out = False  # the last chunk is written

    def response_end(self) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.host.active_requests -= 1
        if self.discarding:
            # The dropped answer is read: the connection goes back, the retry goes out.
            self.discarding = False
            self.upstream = None
            self.sending = False
            self.conn.pool.release(upstream)
            self._step(self.retry_step)
            return
        if self.chunked_out:
            self.route.bytes_out += 5
            self.conn.write(b"0\r\n\r\n")
        self.done = True
        if self.request.complete:
            if self.conn.write_paused:
                upstream.resume_reading()
            self.conn.pool.release(upstream)
        else:
            # The provider answered before the client finished sending: neither
            # connection can carry another request.
            upstream.detach()
        if self.call is not None:
            self.call.finish(outcome_of_status(self.status), str(self.status))
        self.conn.exchange_done(self.keep)

    def upstream_failed(self, reason: str) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.upstream = None
        self.sending = False
        self.host.active_requests -= 1
        upstream.detach()
        self._end_attempt(Outcome.UPSTREAM_ERROR)
        if self.responded:
            # Mid-body: the status is sent, so the only honest signal is a cut.
            log.warning(
                "http upstream failed mid-response: %s", reason, extra={"endpoint": self.host.id}
            )
            self.done = True
            self.conn.exchange = None
            if self.call is not None:
                self.call.finish(Outcome.UPSTREAM_ERROR, str(self.status))
            self.conn._close()
            return
        self.discarding = False
        self.conn.deadline = 0.0
        driver = self._driver()
        if upstream.reused:
            # A kept-alive connection the provider closed as we reused it: the request
            # never reached it, and without a body it can be sent again (once).
            step = driver.stale(self.host.id)
            if step.action is Action.RESEND:
                self.attempt()
                return
        else:
            step = driver.failed(self.host.id, Failure(FailureKind.RESET, True))
        self.target.cluster.report_failure(self.host)
        if self._step(step):
            return
        name = self.target.service.name
        log.warning("http upstream failed: %s", reason, extra={"service": name})
        self._fail_before_response(
            502,
            UpstreamError(f"service {name!r}: endpoint {self.host.id} failed: {reason}"),
            logged=True,
        )

    def upstream_writable(self, writable: bool) -> None:
        self.conn.upstream_writable(writable)

    def cork(self) -> None:
        self.conn.cork()

    def uncork(self) -> None:
        self.conn.uncork()

    # -- ends ------------------------------------------------------------------------------

    def timeout(self) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.upstream = None
        self.host.active_requests -= 1
        upstream.detach()
        self._end_attempt(Outcome.TIMEOUT)
        self.target.cluster.report_failure(self.host)
        detail = (
            f"service {self.target.service.name!r}: endpoint {self.host.id} sent no "
            f"response within {self.timeout_s:g}s"
        )
        log.warning(
            "http upstream timeout: %s", detail, extra={"service": self.target.service.name}
        )
        self._fail_before_response(504, UpstreamTimeout(detail), logged=True)

    def _fail_before_response(
        self, status: int, error: UpstreamError, *, logged: bool = False
    ) -> None:
        self.done = True
        if not logged:
            log.warning(
                "http request not forwarded: %s",
                error,
                extra={"service": self.target.service.name},
            )
        call = self.call
        if call is not None:
            call.fail(error, str(status))
        self.conn.answer(self, status, str(error), chain_of(call))

    def cancel(self) -> None:
        """The client went away: drop the provider side (never reused)."""
        self.done = True
        self.conn.deadline = 0.0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None and self.host is not None:
            self.host.active_requests -= 1
            upstream.abort()
        self._end_attempt(Outcome.CANCELLED)
        if self.call is not None:
            self.call.finish(Outcome.CANCELLED, str(self.status) if self.responded else "")


_NO_DRIVER = Exchange(None)


def _serialise(first_line: bytes, fields: Headers) -> bytes:
    parts = [first_line]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


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
