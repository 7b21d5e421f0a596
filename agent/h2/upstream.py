"""HTTP/2 connections to providers, pooled per endpoint, for any relay that opens streams on
them (the gRPC listener's relay, plugins/grpc/h2relay.py). Compiled.

A connection carries many streams; each stream's owner is a :class:`StreamSink`, told
what the provider sends on it. The pool keeps, per endpoint address, the connections
open to it and hands out one that can take another stream: when every connection has
as many streams open as its provider allows (SETTINGS_MAX_CONCURRENT_STREAMS), another
is made, up to ``max_connections_per_endpoint``. A connection the provider is closing
(GOAWAY) takes no new streams; its streams above the GOAWAY's last stream id were not
processed, and their owners hear so (they may send them elsewhere).

Liveness: a connection with streams open on which nothing has been read for
``ping_interval_s`` gets a PING; when nothing at all (the ACK included) has been read
``ping_timeout_s`` after it, the provider is taken for gone (a host that froze, or a
network that dropped the connection without a reset) and the connection is closed, its
streams' owners told so. Idle connections are not pinged, as gRPC's own keepalive does
not by default (``permit_without_stream``): grpc-go servers answer pings more frequent
than their enforcement policy allows (by default one per 5 minutes) with GOAWAY.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from mypy_extensions import mypyc_attr

from agent.h2.connection import HEAD, TRAILERS, Connection, Handler, ProtocolError, Settings

log = logging.getLogger(__name__)


class EndpointBusy(Exception):
    """Every connection to the endpoint is at its provider's stream limit, and there are
    as many as the pool makes."""


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamSink:
    """The owner of one stream on an upstream connection (subclassed by compiled relays,
    and by tests)."""

    def response_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """The response's head (HEAD; with ``end_stream``, a head-only answer)."""
        raise NotImplementedError

    def response_data(self, data: bytes, flow: int) -> None:
        """Body bytes; ``flow`` is to be given back with :meth:`H2Upstream.ack`."""
        raise NotImplementedError

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The response ended: its trailers, or ``[]`` when DATA ended it."""
        raise NotImplementedError

    def upstream_reset(self, code: int) -> None:
        """The provider reset the stream (or broke the protocol on it)."""
        raise NotImplementedError

    def upstream_writable(self) -> None:
        """The stream's send window opened: more request bytes may go."""
        raise NotImplementedError

    def upstream_unprocessed(self) -> None:
        """GOAWAY named an earlier last stream: the provider did not process this one."""
        raise NotImplementedError

    def upstream_lost(self, why: str) -> None:
        """The connection is gone (closed, broken, or silent past its ping timeout)."""
        raise NotImplementedError

    def flush_downstream(self) -> None:
        """Send what the events above queued for the stream's client (once per read)."""
        raise NotImplementedError


class H2Upstream(Handler):
    """One HTTP/2 connection to an endpoint, shared by the streams relayed to it: an asyncio
    protocol by its methods (a compiled class has one base: the connection's Handler)."""

    def __init__(self, pool: H2Pool, address: str, settings: Settings) -> None:
        self.pool = pool
        self.address = address
        self.conn = Connection(self, client=True, settings=settings)
        self.streams: dict[int, StreamSink] = {}
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.flush_scheduled = False
        self.closed = False
        self.loop = asyncio.get_running_loop()
        # Sinks whose client this read moved (flushed once the read is handled).
        self.touched: list[StreamSink] = []
        # Liveness: when a byte was last read, and when our unanswered PING went (0: none).
        self.last_read = self.loop.time()
        self.ping_sent = 0.0
        self.ping_timer: asyncio.TimerHandle | None = None
        # Resolved once the provider's SETTINGS arrive: a connection is used only then,
        # when its stream limit is known (as grpc-go's client waits for the server's
        # preface), or the first burst of streams would meet REFUSED_STREAM.
        self.preface_done: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flush()
        if self.pool.ping_interval_s > 0:
            self.ping_timer = self.loop.call_later(self.pool.ping_interval_s, self._check_alive)

    @property
    def available(self) -> bool:
        """Open, not going away, and below the provider's stream limit."""
        return not self.closed and self.conn.can_open()

    def ack(self, stream_id: int, size: int) -> None:
        if size > 0 and not self.closed:
            self.conn.ack(stream_id, size)
            self.dirty = True

    def schedule_flush(self) -> None:
        """Flush on the loop's next turn: every stream started or fed in this turn goes
        out in one send."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.dirty = False
        self.flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        self.ping_sent = 0.0
        try:
            self.conn.receive(data)
        except ProtocolError as exc:
            log.warning(
                "provider broke HTTP/2", extra={"endpoint": self.address, "error": str(exc)}
            )
            self.flush()
            self._lost(f"the provider broke HTTP/2: {exc}")
            return
        self.flush()
        if self.conn.peer_settings_received and not self.preface_done.done():
            self.preface_done.set_result(None)
        touched = self.touched
        if touched:
            self.touched = []
            for sink in touched:
                sink.flush_downstream()

    # -- liveness ----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        self.ping_timer = None
        if self.closed:
            return
        pool = self.pool
        now = self.loop.time()
        if self.ping_sent:
            if now - self.ping_sent >= pool.ping_timeout_s:
                log.warning(
                    "provider silent past its ping timeout: connection closed",
                    extra={"endpoint": self.address, "timeout_s": pool.ping_timeout_s},
                )
                self._lost(f"no answer to a ping within {pool.ping_timeout_s:g}s")
                return
            delay = self.ping_sent + pool.ping_timeout_s - now
        elif now - self.last_read >= pool.ping_interval_s and self.streams:
            self.conn.ping()
            self.flush()
            self.ping_sent = now
            delay = pool.ping_timeout_s
        else:
            delay = max(self.last_read + pool.ping_interval_s - now, pool.ping_interval_s / 4)
        self.ping_timer = self.loop.call_later(delay, self._check_alive)

    # -- the connection's events (agent/h2/connection.py Handler) ----------------------------

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        sink = self.streams.get(stream_id)
        if sink is None:
            return
        if kind == HEAD:
            sink.response_headers(headers, end_stream)
        elif kind == TRAILERS:
            sink.response_trailers(headers)
        self.touched.append(sink)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        sink = self.streams.get(stream_id)
        if sink is None:
            self.ack(stream_id, flow)
            return
        sink.response_data(data, flow)
        if end_stream:
            sink.response_trailers([])
        self.touched.append(sink)

    def stream_reset(self, stream_id: int, code: int) -> None:
        sink = self.streams.get(stream_id)
        if sink is not None:
            sink.upstream_reset(code)
            self.touched.append(sink)

    def window_opened(self, stream_id: int) -> None:
        sink = self.streams.get(stream_id) if stream_id else None
        for each in [sink] if sink is not None else list(self.streams.values()):
            each.upstream_writable()
            self.touched.append(each)

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        # No new streams here; those the provider will not process are its owners' to
        # send elsewhere, the others finish on this connection.
        self.pool.forget(self)
        for stream_id, sink in list(self.streams.items()):
            if stream_id > last_stream_id:
                self.touched.append(sink)
                sink.upstream_unprocessed()
        if not self.streams and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost("the connection to the provider was lost")

    def eof_received(self) -> bool | None:
        return None  # close: HTTP/2 has no half-closed connections

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        if not self.preface_done.done():
            self.preface_done.set_exception(ConnectionError(why))
        self.pool.forget(self)
        for sink in list(self.streams.values()):
            sink.upstream_lost(f"meshagent: {why}")
            sink.flush_downstream()
        if self.transport is not None:
            self.transport.close()


class H2Pool:
    """The HTTP/2 connections open to each endpoint address, made on first use and when
    every one has reached its provider's stream limit."""

    def __init__(
        self,
        settings: Settings,
        connect_timeout_s: float = 5.0,
        max_connections_per_endpoint: int = 8,
        ping_interval_s: float = 300.0,
        ping_timeout_s: float = 20.0,
    ) -> None:
        self.settings = settings
        self.max_per_endpoint = max_connections_per_endpoint
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self._connections: dict[str, list[H2Upstream]] = {}
        self._connecting: dict[str, asyncio.Future[H2Upstream]] = {}
        self._timeout = connect_timeout_s

    def ready(self, address: str) -> H2Upstream | None:
        """A connection to ``address`` that can take another stream now, if any."""
        for upstream in self._connections.get(address, ()):
            if upstream.available:
                return upstream
        return None

    def full(self, address: str) -> bool:
        """Connections to ``address`` are at their most, and none can take a stream."""
        return (
            len(self._connections.get(address, ())) >= self.max_per_endpoint
            and self.ready(address) is None
        )

    async def connect(self, host: str, port: int, address: str) -> H2Upstream:
        """A connection to ``address`` with room for a stream: one being made is awaited
        (several streams waiting for the same connection share it), or a new one made.
        Raises OSError, TimeoutError, or EndpointBusy when no more can be made."""
        while True:
            ready = self.ready(address)
            if ready is not None:
                return ready
            pending = self._connecting.get(address)
            if pending is not None and pending.done():
                # Made already, and taken by others (its callback, which forgets it, has
                # not run: awaiting a done future does not yield). Awaiting it again would
                # spin this loop forever without ever letting the event loop run.
                self._connecting.pop(address, None)
                pending = None
            if pending is None:
                if len(self._connections.get(address, ())) >= self.max_per_endpoint:
                    raise EndpointBusy(
                        f"{self.max_per_endpoint} connections to {address}, each at the "
                        "provider's stream limit"
                    )
                pending = asyncio.ensure_future(self._dial(address, host, port))
                self._connecting[address] = pending
                pending.add_done_callback(lambda _: self._connecting.pop(address, None))
            made = await asyncio.shield(pending)
            # Others may have filled it between its preface and this task's turn (a
            # request arriving meanwhile finds it ready): then another one.
            if made.available:
                return made

    async def _dial(self, address: str, host: str, port: int) -> H2Upstream:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, upstream = await loop.create_connection(
                lambda: cast(asyncio.Protocol, H2Upstream(self, address, self.settings)),
                host,
                port,
            )
            made = cast(H2Upstream, upstream)
            try:
                await made.preface_done
            except BaseException:
                if made.transport is not None:
                    made.transport.close()
                raise
        self._connections.setdefault(address, []).append(made)
        return made

    def open_to(self, addresses: list[str]) -> int:
        """Connections open to ``addresses``."""
        connections = self._connections
        return sum(len(connections.get(address, ())) for address in addresses)

    def retire_gone(self, live: set[str]) -> None:
        """Close idle connections to endpoints no longer in the cluster."""
        for address, upstreams in list(self._connections.items()):
            if address in live:
                continue
            for upstream in list(upstreams):
                if not upstream.streams:
                    self.forget(upstream)
                    if upstream.transport is not None:
                        upstream.transport.close()

    def forget(self, upstream: H2Upstream) -> None:
        """No new streams on ``upstream`` (going away, closed)."""
        upstreams = self._connections.get(upstream.address)
        if upstreams is not None and upstream in upstreams:
            upstreams.remove(upstream)
            if not upstreams:
                del self._connections[upstream.address]

    def close(self) -> None:
        for upstreams in list(self._connections.values()):
            for upstream in upstreams:
                if upstream.transport is not None:
                    upstream.transport.close()
        self._connections.clear()
