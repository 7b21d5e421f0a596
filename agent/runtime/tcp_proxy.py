"""The raw TCP relay: protocol ``tcp``, the built-in outbound listener.

Each accepted connection goes to an endpoint chosen by the service's policy (keyed by the
client's address for consistent hashing). Backpressure both ways: when one side's write
buffer is over its high-water mark, reading from the other side pauses until it drains.
Half-close is relayed: EOF from one side becomes ``write_eof`` on the other, and the pair
closes when both directions are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from agent.cluster.host import Host
from agent.errors import UpstreamError
from agent.plugins import EmptyConfig, Plugin, PluginKind
from agent.runtime.protocols import ListenerContext, ProtocolSupport
from agent.runtime.upstream import connect_upstream

log = logging.getLogger(__name__)


class _Downstream(asyncio.Protocol):
    """The client's connection to our listener."""

    # Slots: one of these lives per connection, and the data path reads them per chunk.
    __slots__ = (
        "_connecting",
        "_pending",
        "_send",
        "bytes_in",
        "closed",
        "context",
        "eof",
        "host",
        "transport",
        "upstream",
    )

    def __init__(self, context: ListenerContext) -> None:
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.host: Host | None = None
        self.eof = False
        self.closed = False
        self.bytes_in = 0
        # Where the client's bytes go: held here until the upstream is connected, then
        # straight to the upstream transport's write, so the data path is one call.
        self._send: Callable[[bytes], object] = self._hold
        self._pending: list[bytes] = []
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        stats = self.context.stats
        stats.accepted += 1
        stats.active += 1
        self.context.track(self.transport)
        # uvloop starts reading *after* connection_made returns, so a pause_reading() here
        # would be undone: bytes that arrive before the upstream exists go to _hold, which
        # pauses reading until the upstream is connected.
        # Held so the loop (which keeps only weak references) cannot drop it mid-connect.
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def _hold(self, data: bytes) -> None:
        assert self.transport is not None
        self._pending.append(data)
        self.transport.pause_reading()

    async def _connect(self) -> None:
        assert self.transport is not None
        context = self.context
        service = context.service
        peer = self.transport.get_extra_info("peername")
        hash_key = str(peer[0]).encode() if peer else None
        try:
            host, transport, upstream = await connect_upstream(
                context.cluster,
                lambda _host: _Upstream(self),
                service.connect_timeout_s,
                service.connect_attempts,
                hash_key,
            )
        except UpstreamError as exc:
            context.stats.rejected += 1
            log.warning(
                "connection refused to client: %s",
                exc,
                extra={"listener": context.listener.display_name},
            )
            self.transport.abort()
            return
        finally:
            self._connecting = None
        if self.closed:
            transport.close()
            return
        self.upstream = upstream
        self.host = host
        host.active_requests += 1
        self._send = transport.write
        if self._pending:
            transport.write(b"".join(self._pending))
            self._pending.clear()
        if self.eof:
            transport.write_eof()
        elif not upstream.paused:
            # Unless flushing what was held already filled the upstream's buffer.
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        # Per chunk: one int add and one call. Stats are folded in per connection.
        self.bytes_in += len(data)
        self._send(data)

    def eof_received(self) -> bool:
        self.eof = True
        upstream = self.upstream
        if upstream is None:
            # Still connecting: _connect relays the half-close once the upstream exists.
            return True
        if upstream.eof:
            self._close_both()
            return False
        assert upstream.transport is not None
        upstream.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        stats = self.context.stats
        stats.active -= 1
        stats.bytes_in += self.bytes_in
        if self.upstream is not None:
            stats.bytes_out += self.upstream.bytes_in
        assert self.transport is not None
        self.context.untrack(self.transport)
        if self.host is not None:
            self.host.active_requests -= 1
            self.host = None
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            # An error on our side resets the other; a clean close lets its data flush.
            if exc is None:
                upstream.transport.close()
            else:
                upstream.transport.abort()

    def _close_both(self) -> None:
        assert self.transport is not None
        self.transport.close()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


class _Upstream(asyncio.Protocol):
    """Our connection to the chosen endpoint."""

    __slots__ = ("_send", "bytes_in", "downstream", "eof", "paused", "transport")

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream
        self.transport: asyncio.Transport | None = None
        self.eof = False
        # Whether our write buffer is over its high-water mark (reading downstream paused).
        self.paused = False
        self.bytes_in = 0
        # The client's transport exists before we are made: bind its write once.
        assert downstream.transport is not None
        self._send: Callable[[bytes], object] = downstream.transport.write

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._send(data)

    def eof_received(self) -> bool:
        self.eof = True
        downstream = self.downstream
        if downstream.eof or downstream.transport is None:
            downstream._close_both()
            return False
        downstream.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        self.paused = True
        if self.downstream.transport is not None:
            self.downstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.downstream.transport is not None:
            self.downstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        downstream = self.downstream.transport
        if downstream is None or self.downstream.closed:
            return
        if exc is None:
            downstream.close()
        else:
            downstream.abort()


class TcpProtocol(ProtocolSupport):
    name = "tcp"

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        return lambda: _Downstream(context)


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL, "tcp", EmptyConfig, lambda _config: TcpProtocol()
)
