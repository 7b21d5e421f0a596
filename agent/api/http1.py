"""The API port's HTTP/1.1 server: httptools (llhttp, C) callbacks in the agent's loop.

One :class:`ApiConnection` per client connection. A request is parsed whole (head and
body, both bounded), queued, and handed to the server's handler, which answers with a
:class:`Reply` at once (probes, metrics: no coroutine, no task) or with an awaitable one
(invocations, the management app). Replies go out in request order, so pipelined
requests are answered as HTTP/1.1 requires; reading pauses while too many wait.

Bounds on every connection, after h11 and Envoy's HTTP connection manager:

- a head over ``max_head_bytes`` is answered 431, a body over ``max_body_bytes`` 413
  (declared by Content-Length: before it is read), malformed input 400; each closes the
  connection after its answer, with one log line, and touches no other connection;
- a request not received whole within ``request_timeout_s`` of its first byte (a
  slowloris client) is answered 408 and closed; a keep-alive connection idle for
  ``idle_timeout_s`` is closed. One sweep a second over the open connections checks
  both, so no request arms or cancels a timer;
- HTTP/1.0 and ``Connection: close`` are answered and closed as asked; a streamed reply
  to an HTTP/1.0 client is delimited by the close instead of chunked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol, cast

import httptools

from agent.api.problem_details import PROBLEM_JSON, problem_body
from agent.runtime.admission import Refusals

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

_SWEEP_S = 1.0
_NO_BODY_STATUSES = frozenset({204, 304})
_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (int(s), s.phrase.encode("latin-1")) for s in HTTPStatus
}


# The header a worker adds when it forwards a request to its supervisor (the client's
# "HOST PORT"); honoured only where ``Http1Limits.trust_forwarded_client`` says so.
FORWARDED_CLIENT = b"x-meshagent-client"


@dataclass(frozen=True)
class Http1Limits:
    max_body_bytes: int = 1024 * 1024
    max_head_bytes: int = 64 * 1024
    request_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    # Parsed requests waiting behind the one being answered before reading pauses.
    max_queued: int = 16
    # Open connections at most; more are closed as they are accepted (admission.py).
    max_connections: int = 256
    # Take the client's address from ``x-meshagent-client: HOST PORT``: only for the
    # supervisor's Unix socket, where its workers forward what they do not answer
    # (agent/api/forward.py; the socket is the supervisor's and its workers' alone).
    trust_forwarded_client: bool = False


class Connection(Protocol):
    """What a request needs of its connection (an :class:`ApiConnection`)."""

    @property
    def peer(self) -> tuple[str, int] | None: ...

    async def writable(self) -> None: ...

    def waiter_closed(self) -> asyncio.Future[None]: ...


class ApiRequest:
    """One request, received whole. ``path`` is the raw (still percent-encoded) path."""

    __slots__ = (
        "body",
        "client",
        "connection",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "version",
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.method = ""
        self.path = b""
        self.query = b""
        self.headers: list[Header] = []  # names lower-cased, in arrival order
        self.body = b""
        self.keep_alive = True
        self.version = "1.1"
        self.client: tuple[str, int] | None = connection.peer

    def header(self, name: bytes) -> bytes | None:
        """The first field named ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Reply:
    """A response: a whole ``body``, or a ``stream`` of byte chunks written as they come."""

    __slots__ = ("body", "content_type", "headers", "status", "stream", "wire")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"application/json",
        headers: tuple[Header, ...] | list[Header] = (),
        stream: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.stream = stream
        # A reply made once and sent many times (the health probe) keeps its bytes.
        self.wire: bytes | None = None

    def constant(self) -> Reply:
        """Keep this reply's keep-alive bytes, for a reply answered to many requests."""
        self.wire = _head(self, len(self.body), True) + self.body
        return self


Handler = Callable[[ApiRequest], "Reply | Awaitable[Reply]"]


def problem_reply(status: int, detail: str, title: str | None = None) -> Reply:
    return Reply(status, problem_body(status, detail, title), PROBLEM_JSON.encode())


def _head(reply: Reply, length: int | None, keep_alive: bool) -> bytes:
    """Status line and fields. ``length`` None: chunked (or, closing, close-delimited);
    negative: the reply's own fields say it (a HEAD answer's Content-Length)."""
    status = reply.status
    parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
    if reply.content_type:
        parts.append(b"content-type: " + reply.content_type + b"\r\n")
    for name, value in reply.headers:
        parts.append(name + b": " + value + b"\r\n")
    if length is not None:
        if length >= 0:
            parts.append(b"content-length: %d\r\n" % length)
    elif keep_alive:
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return b"".join(parts)


# %00-%1F and %7F, in either case.
_ESCAPED_CONTROL = re.compile(rb"%(?:[01][0-9A-Fa-f]|7[Ff])")


class _Reject(Exception):
    """Answer ``reply`` and close: the request cannot be read any further."""

    def __init__(self, reply: Reply, why: str) -> None:
        super().__init__(why)
        self.reply = reply


class ApiConnection(asyncio.Protocol):
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop  # set by connection_made
        self.peer: tuple[str, int] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._request: ApiRequest | None = None  # being received
        self._url: list[bytes] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: deque[ApiRequest] = deque()
        self._busy = False  # a request is being answered
        self._closing = False
        self._paused = False
        self._can_write: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._stream_task: asyncio.Task[None] | None = None
        # For the sweep: when the request being received began, and since when idle.
        self.receiving_since = 0.0
        self.idle_since = server.clock

    # transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        server = self.server
        if len(server.connections) >= self.limits.max_connections:
            self._closing = True
            server.refusals.refuse(
                transport, "admin.max_connections are open", self.limits.max_connections
            )
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        self._queue.clear()
        if self._stream_task is not None:
            self._stream_task.cancel()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The API speaks HTTP/1.1 only: an upgrade request is answered as a plain one,
            # and the connection closes after it (the parser reads nothing past it).
            if self._request is None and self._queue:
                self._queue[-1].keep_alive = False
        except httptools.HttpParserError as exc:
            # A callback's refusal reaches here wrapped (HttpParserCallbackError).
            refusal = exc.__context__ if isinstance(exc.__context__, _Reject) else None
            if isinstance(exc, _Reject):
                refusal = exc
            if refusal is not None:
                self._reject(refusal.reply, str(refusal))
            else:
                self._reject(problem_reply(400, f"malformed request: {exc}"), f"malformed: {exc}")
        except _Reject as refused:
            self._reject(refused.reply, str(refused))

    def eof_received(self) -> bool | None:
        # A half-closed client still gets the answers it asked for; then the connection ends.
        if not self._busy and not self._queue:
            return False
        for request in self._queue:
            request.keep_alive = False
        return True

    # parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = ApiRequest(self)
        self._url = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0
        # The server's clock, advanced by its sweep once a second: timeouts are checked at
        # that grain anyway, and a request then reads no clock.
        self.receiving_since = self.server.clock

    def on_url(self, url: bytes) -> None:
        # Pieces kept and joined once: ``bytes +=`` would copy the URL again per piece.
        self._url.append(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        assert self._request is not None
        self._request.headers.append((name.lower(), value))

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            raise _Reject(
                problem_reply(
                    431, f"request head over the limit of {self.limits.max_head_bytes} bytes"
                ),
                "head too large",
            )

    def on_headers_complete(self) -> None:
        request = self._request
        assert request is not None
        parser = self._parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        path, _, query = b"".join(self._url).partition(b"?")
        request.path, request.query = path.partition(b"#")[0], query.partition(b"#")[0]
        if _ESCAPED_CONTROL.search(request.path) is not None:
            # No route takes a control character (a newline would also split a log line
            # or a forwarded request line): refused here, whatever the route.
            raise _Reject(
                problem_reply(400, "request path holds an escaped control character"),
                "control character in path",
            )
        if self.limits.trust_forwarded_client:
            forwarded = request.header(FORWARDED_CLIENT)
            host, _, port = (forwarded or b"").decode("latin-1").rpartition(" ")
            request.client = (host, int(port)) if host and port.isdigit() else None
        limit = self.limits.max_body_bytes
        declared = request.header(b"content-length")
        # llhttp has already refused a malformed Content-Length.
        if declared is not None and int(declared) > limit:
            raise _Reject(
                problem_reply(
                    413,
                    f"body of {int(declared)} bytes is over the limit of {limit}"
                    " (admin.max_body_bytes)",
                    "Content Too Large",
                ),
                "body too large",
            )
        expect = request.header(b"expect")
        # Only when nothing is answered before it: a 100 must not overtake a response.
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and not self._busy
            and not self._queue
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Reject(
                problem_reply(
                    413,
                    f"body is over the limit of {self.limits.max_body_bytes} bytes"
                    " (admin.max_body_bytes)",
                    "Content Too Large",
                ),
                "body too large",
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        self._request = None
        self.receiving_since = 0.0
        if self._body:
            request.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
        self._queue.append(request)
        if len(self._queue) >= self.limits.max_queued and not self._paused:
            self._paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        if not self._busy:
            self._next()

    # answering -------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer queued requests, in order, until one must be awaited."""
        while self._queue and not self._closing:
            request = self._queue.popleft()
            self._busy = True
            try:
                answer = self.server.handler(request)
            except Exception:
                log.exception("api: %s %s failed", request.method, request.path[:200])
                answer = problem_reply(500, "internal error (logged by the agent)")
            if isinstance(answer, Reply):
                if not self._write(request, answer):
                    return
                continue
            if isinstance(answer, Coroutine):
                # The connection's loop, kept: asyncio.get_running_loop() and
                # ensure_future() cost a getpid() syscall each (7 % of a one-caller
                # invocation's samples, py-spy --native).
                future: asyncio.Future[Reply] = self._loop.create_task(answer)
            else:
                future = asyncio.ensure_future(answer, loop=self._loop)
            future.add_done_callback(functools.partial(self._answered, request))
            return
        self._busy = False
        self.idle_since = self.server.clock
        if self._paused and not self._closing:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def _answered(self, request: ApiRequest, done: asyncio.Future[Reply]) -> None:
        if self._closing:
            return
        if done.cancelled():
            reply = problem_reply(503, "the agent is stopping")
        elif done.exception() is not None:
            error = done.exception()
            log.error(
                "api: %s %s failed: %r", request.method, request.path[:200], error, exc_info=error
            )
            reply = problem_reply(500, "internal error (logged by the agent)")
        else:
            reply = done.result()
        if self._write(request, reply):
            self._next()

    def _write(self, request: ApiRequest, reply: Reply) -> bool:
        """Write ``reply``; True when the next request may be answered now."""
        transport = self.transport
        if transport is None or self._closing:
            return False
        keep_alive = request.keep_alive and not self.server.stopping
        if reply.wire is not None and keep_alive and request.method == "GET":
            transport.write(reply.wire)
            return True
        bodyless = request.method == "HEAD" or reply.status in _NO_BODY_STATUSES
        if request.method == "HEAD" and any(n == b"content-length" for n, _ in reply.headers):
            # The length a GET would have, as the app said it; no body follows.
            transport.write(_head(reply, -1, keep_alive))
            if reply.stream is not None:
                self._stream_task = self._loop.create_task(_discard(reply.stream))
            if not keep_alive:
                self._close_after_write()
                return False
            return True
        if reply.stream is None:
            body = reply.body
            head = _head(reply, len(body), keep_alive)
            transport.write(head if bodyless else head + body)
            if not keep_alive:
                self._close_after_write()
                return False
            return True
        chunked = keep_alive and request.version != "1.0"
        keep_alive = chunked  # a close-delimited stream ends its connection
        transport.write(_head(reply, None, keep_alive))
        if bodyless:
            self._stream_task = self._loop.create_task(_discard(reply.stream))
            if not keep_alive:
                self._close_after_write()
                return False
            return True
        self._stream_task = self._loop.create_task(self._send_stream(reply.stream, chunked))
        return False

    async def _send_stream(self, stream: AsyncIterator[bytes], chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        # No ``await`` in a ``finally``: compiled by mypyc, an exception pending there can be
        # lost when the coroutine suspends (seen in the Dubbo forking strategy). Caught,
        # the stream closed, raised again.
        interrupted: BaseException | None = None
        try:
            async for chunk in stream:
                if self._closing:
                    break
                if chunk:
                    transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._can_write is not None and not self._can_write.done():
                    await asyncio.shield(self._can_write)
        except Exception:
            # The status line is out: all that is left is to end the connection.
            log.exception("api: a streamed reply failed")
            self._closing = True
            transport.close()
        except BaseException as exc:
            interrupted = exc
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        self._stream_task = None
        if interrupted is not None:
            raise interrupted
        if self._closing:
            return
        if chunked:
            transport.write(b"0\r\n\r\n")
            self._next()
        else:
            self._close_after_write()

    # closing ---------------------------------------------------------------------------

    def _reject(self, reply: Reply, why: str) -> None:
        log.warning("api: closing connection from %s: %s", self.peer[0] if self.peer else "?", why)
        self._queue.clear()
        if self._busy:
            # An answer is being made for an earlier request: it is dropped with the
            # connection, since this one's answer would otherwise overtake it.
            self._close_after_write()
            return
        if self.transport is not None:
            self.transport.write(_head(reply, len(reply.body), False) + reply.body)
        self._close_after_write()

    def _close_after_write(self) -> None:
        self._closing = True
        if self.transport is not None:
            # close() flushes what is buffered, then closes; reading stops now.
            self.transport.close()

    async def writable(self) -> None:
        """Returns when the client's socket buffer has room (or the connection is gone)."""
        if self._can_write is not None and not self._can_write.done():
            # Shielded: a waiter cancelled (a client's stream given up) must not cancel
            # the future every other waiter shares.
            await asyncio.shield(self._can_write)

    def waiter_closed(self) -> asyncio.Future[None]:
        """A future done when the connection is lost (the ASGI bridge's disconnect); await it
        shielded, since it is shared by every waiter of the connection."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self.transport is None or self.transport.is_closing():
                self._closed.set_result(None)
        return self._closed

    def sweep(self, now: float) -> None:
        """Called once a second: 408 for a request too slow to arrive, close when idle."""
        if self._closing:
            return
        if self.receiving_since and now - self.receiving_since > self.limits.request_timeout_s:
            self._queue.clear()
            if not self._busy and self.transport is not None:
                reply = problem_reply(408, "the request was not received in time")
                self.transport.write(_head(reply, len(reply.body), False) + reply.body)
            log.warning(
                "api: closing connection from %s: request not received within %.0f s",
                self.peer[0] if self.peer else "?",
                self.limits.request_timeout_s,
            )
            self._close_after_write()
        elif (
            not self._busy
            and not self._queue
            and not self.receiving_since
            and now - self.idle_since > self.limits.idle_timeout_s
        ):
            self._close_after_write()

    def close_if_idle(self) -> bool:
        if not self._busy and not self._queue and not self.receiving_since:
            self._close_after_write()
            return True
        return False

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


async def _discard(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class ApiServer:
    """Serves ``handler`` on a bound, listening socket in the running loop."""

    def __init__(self, handler: Handler, sock: socket.socket, limits: Http1Limits) -> None:
        self.handler = handler
        self.socket = sock
        self.limits = limits
        # Over ``limits.max_connections``, connections are closed as accepted. The API's
        # descriptors are kept out of the listeners' budget (admission.py): a flooded
        # listener must not take the probes and the management API down with it.
        self.refusals = Refusals("api")
        self.connections: set[ApiConnection] = set()
        self.accepted = 0
        self.stopping = False
        # Seconds (monotonic), advanced once a second while there are connections.
        self.clock = time.monotonic()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def address(self) -> tuple[str, int]:
        name = self.socket.getsockname()
        return str(name[0]), int(name[1])

    def _connection(self) -> ApiConnection:
        self.accepted += 1
        if self._sweeper is None:
            self.clock = time.monotonic()
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)
        return ApiConnection(self)

    def _sweep(self) -> None:
        self._sweeper = None
        if not self.connections:
            return  # an idle agent with no API clients wakes for nothing
        now = self.clock = time.monotonic()
        for connection in list(self.connections):
            connection.sweep(now)
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, sock=self.socket)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop accepting; close idle connections; give the others ``grace_s`` to finish."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        deadline = time.monotonic() + grace_s
        while True:
            busy = [c for c in list(self.connections) if not c.close_if_idle()]
            if not busy or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
