"""Provider connections of the HTTP/1.1 listener's fast path: asyncio Protocols that parse
responses with httptools (llhttp, C callbacks), and their keep-alive pool.

No coroutine and no stream buffer per response: the parser's callbacks go straight to the
exchange that owns the connection (plugins/http/h1_listener.py), which writes the head and the
body chunks to the client as they arrive. Idle connections are watched by their protocol:
a provider closing one (EOF, or any unsolicited byte) takes it out of the pool at once.

Invocation and HTTP/2 streams keep the h11 stream pool (plugins/http/h11_pool.py): their
caller is a coroutine anyway, and they are not the per-request hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, cast

import httptools

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import PickContext
from agent.config import ServiceConfig
from agent.errors import ConnectError, NoEndpointError

log = logging.getLogger(__name__)

# A provider's response head (status line, headers, trailers) larger than this fails the
# request (502) instead of growing without bound (Envoy's default is 60 KiB).
MAX_RESPONSE_HEAD = 64 * 1024


class _HeadTooLarge(Exception):
    pass


class ResponseSink(Protocol):
    """What an upstream connection reports to the exchange using it (the listener's)."""

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """A response head (1xx included); called while the parser runs. True: its body
        has neither Content-Length nor chunking, and ends when the provider closes."""

    def response_body(self, data: bytes) -> None: ...

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None: ...

    def response_end(self) -> None:
        """The final response ended (not after a 1xx)."""

    def upstream_failed(self, reason: str) -> None:
        """The connection failed or closed before the response ended."""

    def upstream_writable(self, writable: bool) -> None:
        """Flow control of the request body: the provider's socket buffer filled/drained."""

    def cork(self) -> None:
        """Hold writes to the client until ``uncork``: one send per provider read."""

    def uncork(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a provider; serves one exchange at a time."""

    def __init__(self, host: Host, pool: FastPool) -> None:
        self.host = host
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        # The request was HEAD: its response has a head only (llhttp cannot be told so).
        self.head_only = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.status = 0
        # The final response ended in this read; acted on after the parser returns, so
        # that releasing the connection never runs inside its own parser.
        self.ended = False
        self.unsolicited = False
        self.closed = False
        self.idle_since = 0.0
        # Taken from the idle list: the provider may have closed it meanwhile.
        self.reused = False
        self.keep_alive = True
        self.until_close = False
        self.head_size = 0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: nothing was asked, so it cannot be reused.
            self.close()
            return
        # The response head and the body chunks of one read go to the client in one send.
        sink.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("unexpected 101 from the provider")
        except httptools.HttpParserError as exc:
            if self.head_size > MAX_RESPONSE_HEAD:
                self._fail(f"response head over {MAX_RESPONSE_HEAD} bytes")
            else:
                self._fail(f"bad response: {exc}")
        else:
            if self.ended:
                self.ended = False
                self.sink = None
                if self.head_only:
                    # llhttp still expects the body a HEAD response announced: start afresh.
                    self.parser = httptools.HttpResponseParser(self)
                sink.response_end()
        finally:
            sink.uncork()

    def eof_received(self) -> bool:
        sink = self.sink
        if sink is not None and self.until_close and not self.ended:
            # A response without Content-Length or chunking ends when the provider closes.
            self.keep_alive = False
            self.sink = None
            sink.response_end()
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_failed(str(exc) if exc else "connection closed by the provider")

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(True)

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.headers = []
        self.head_size = 0
        self.reason = b""
        self.status = 0

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self.head_size += len(reason)
        if self.head_size > MAX_RESPONSE_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_RESPONSE_HEAD:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.status = status = self.parser.get_status_code()
        headers, self.headers = self.headers, []
        if self.sink is None:
            return
        self.until_close = self.sink.response_head(status, self.reason, headers)
        if status >= 200 and self.head_only:
            self.ended = True

    def on_body(self, body: bytes) -> None:
        if self.ended:
            self.unsolicited = True  # past a HEAD response's head: not ours to relay
        elif self.sink is not None:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        if self.status < 200 or self.ended:
            return  # 100 Continue / 103 (the final response follows), or a HEAD's end
        if self.headers and self.sink is not None:
            # Headers after the body: the chunked response's trailers.
            self.sink.response_trailers(self.headers)
            self.headers = []
        self.keep_alive = self.parser.should_keep_alive()
        self.ended = True

    # -- used by the exchange ------------------------------------------------------------

    def start(self, sink: ResponseSink, head_only: bool) -> None:
        self.sink = sink
        self.head_only = head_only
        self.ended = False
        self.until_close = False
        self.status = 0

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def detach(self) -> None:
        """The exchange is done with it without a complete response: never reused."""
        self.sink = None
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)

    def abort(self) -> None:
        self.sink = None
        if self.transport is not None:
            self.closed = True
            self.transport.abort()
        self.pool.forget(self)

    def _fail(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        self.close()
        if sink is not None:
            sink.upstream_failed(reason)

    @property
    def reusable(self) -> bool:
        return self.keep_alive and not self.unsolicited and not self.closed


def pick_endpoint(cluster: Cluster, exclude: frozenset[str], subset_out: frozenset[str]) -> Host:
    """The endpoint the cluster picks for an attempt: outside ``exclude`` (endpoints earlier
    attempts failed on) while others are left, never in ``subset_out`` (outside the call's
    traffic-splitting subset). Raises NoEndpointError."""
    avoid = exclude | subset_out if subset_out else exclude
    host = cluster.choose(PickContext(None, avoid)) if avoid else cluster.choose()
    if host is None and exclude:
        # Every endpoint was tried by earlier tries: one of them again beats none.
        host = cluster.choose(PickContext(None, subset_out)) if subset_out else cluster.choose()
    if host is None:
        raise NoEndpointError(f"no endpoint available for service {cluster.name!r}")
    return host


class FastPool:
    """Idle keep-alive connections per endpoint (bounded, aged out), and connecting.

    The endpoint is picked by the cluster first, per request; the pool only supplies a
    connection to it.
    """

    def __init__(self, max_idle_per_endpoint: int, idle_timeout_s: float) -> None:
        self.max_idle = max_idle_per_endpoint
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[str, list[UpstreamConnection]] = {}

    def choose(
        self,
        cluster: Cluster,
        exclude: frozenset[str],
        fresh: bool,
        subset_out: frozenset[str] = frozenset(),
    ) -> UpstreamConnection | Host:
        """An idle connection to the endpoint the cluster picks, or that endpoint to
        connect to. ``exclude``: endpoints earlier tries failed on (avoided while others
        are left); ``subset_out``: endpoints outside the call's traffic-splitting subset
        (never chosen). Raises NoEndpointError."""
        host = pick_endpoint(cluster, exclude, subset_out)
        if not fresh:
            idle = self._take_idle(host)
            if idle is not None:
                return idle
        return host

    async def connect(
        self, cluster: Cluster, service: ServiceConfig, host: Host, exclude: frozenset[str]
    ) -> UpstreamConnection:
        """Connect to ``host``, then to other endpoints while ``connect_attempts`` last.
        Connect failures are passive health signals. Raises ConnectError/NoEndpointError."""
        loop = asyncio.get_running_loop()
        tried = set(exclude)
        errors: list[str] = []
        candidate: Host | None = host
        for _ in range(service.connect_attempts):
            if candidate is None:
                break
            tried.add(candidate.id)
            try:
                async with asyncio.timeout(service.connect_timeout_s):
                    _, protocol = await loop.create_connection(
                        lambda h=candidate: UpstreamConnection(h, self),  # type: ignore[misc]
                        candidate.instance.host,
                        candidate.instance.port,
                    )
                return protocol
            except (OSError, TimeoutError, ValueError) as exc:
                # ValueError: a host the resolver refuses (UnicodeError from IDNA).
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                errors.append(f"{candidate.id}: {reason or type(exc).__name__}")
                log.warning(
                    "upstream connect failed",
                    extra={"cluster": cluster.name, "endpoint": candidate.id, "error": reason},
                )
                cluster.report_failure(candidate, connect=True)
            candidate = cluster.choose(PickContext(None, frozenset(tried)))
            if candidate is not None:
                idle = self._take_idle(candidate)
                if idle is not None:
                    return idle
        if not errors:
            raise NoEndpointError(f"no endpoint available for service {cluster.name!r}")
        raise ConnectError(f"could not connect to service {cluster.name!r}: " + "; ".join(errors))

    def _take_idle(self, host: Host) -> UpstreamConnection | None:
        idle = self._idle.get(host.id)
        if not idle:
            return None
        deadline = time.monotonic() - self.idle_timeout_s
        while idle:
            connection = idle.pop()
            if connection.closed or connection.idle_since < deadline:
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    def release(self, connection: UpstreamConnection) -> None:
        """Keep ``connection`` for the next request if its exchange ended cleanly."""
        if not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.host.id, [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connection.reused = False
        idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.host.id)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            connection.close()
