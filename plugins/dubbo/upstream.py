"""Pooled, multiplexed connections to Dubbo providers.

One TCP connection per provider (Dubbo's own default: ``connections=0`` shares one) carries
many requests at once; each gets a fresh request id on that connection, and the response
is matched back by id. A provider's heartbeat requests are answered; an idle connection
sends its own, as Dubbo's HeaderExchangeClient does, so neither side drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Protocol, cast

from agent.cluster.host import Host
from agent.codec import NEED_DATA
from agent.errors import ConnectError, RemoteProtocolError, UpstreamError, UpstreamTimeout
from plugins.dubbo.body import HESSIAN_NULL, heartbeat_request, heartbeat_response
from plugins.dubbo.frame import (
    DEFAULT_MAX_BODY,
    Frame,
    FrameDecoder,
    frame_with_id,
    with_request_id,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 60.0

# Called once per request with the provider's response frame, or the UpstreamError that
# ended the wait (connection lost, malformed response). Timeouts are the caller's: it
# stops waiting with ``cancel``.
Waiter = Callable[[Frame | UpstreamError], None]


class WriteBatch:
    """Write coalescing across the connections of one pool (one event loop).

    While one ``data_received`` runs (a client's read of several requests, or a provider's
    read of several answers), the frames it produces are queued on the connection they go
    to instead of written one by one; when the read is handled, each connection that got
    frames writes them with one ``write``/``writelines``, i.e. one send syscall instead of
    one per frame. Order on each connection is the order the frames were produced.
    Outside a read (timers, connect tasks) writes go straight to the transport.
    """

    __slots__ = ("active", "dirty")

    def __init__(self) -> None:
        self.active = False
        self.dirty: list[Flushable] = []

    def finish(self) -> None:
        """End the batch: every connection written to flushes its queue, in that order."""
        self.active = False
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for writer in dirty:
                writer.flush()


class Flushable(Protocol):
    """A connection that queues its frames while a :class:`WriteBatch` is active."""

    def flush(self) -> None: ...


def write_all(transport: asyncio.Transport, out: list[bytes]) -> None:
    if len(out) == 1:
        transport.write(out[0])
    else:
        transport.writelines(out)


class UpstreamConnection(asyncio.Protocol):
    def __init__(
        self, host: Host, max_body: int = DEFAULT_MAX_BODY, batch: WriteBatch | None = None
    ) -> None:
        self.host = host
        # Shared with the pool's other connections and its proxies (see WriteBatch).
        self.batch = batch if batch is not None else WriteBatch()
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_body)
        self.pending: dict[int, Waiter] = {}
        self._ids = itertools.count(1)
        self.closed = False
        # Set by the provider's READONLY event (sent on graceful shutdown): requests in
        # flight still get their answers, new ones go to another connection.
        self.readonly = False
        self.close_reason = ""
        self._writable = asyncio.Event()
        self._writable.set()
        self._on_writable: list[Callable[[], None]] = []
        self.last_read = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # Kept: asyncio.get_running_loop() costs a getpid() syscall per call on Linux.
        self._loop = asyncio.get_running_loop()
        self.last_read = self._loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_read = self._loop.time()
        self.decoder.receive_data(data)
        batch = self.batch
        outer = not batch.active
        batch.active = True
        try:
            while (frame := self.decoder.next_event()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                self._frame_received(frame)
        except RemoteProtocolError as exc:
            log.warning(
                "provider sent a malformed frame; closing: %s",
                exc,
                extra={"endpoint": self.host.id},
            )
            self._fail_all(f"malformed frame from provider: {exc}")
            assert self.transport is not None
            self._out.clear()
            self.transport.abort()
        finally:
            if outer:
                batch.finish()

    def _frame_received(self, frame: Frame) -> None:
        header = frame.header
        if header.request:
            if header.event:
                if frame.body == HESSIAN_NULL:
                    # A heartbeat (event data null); Dubbo answers only these events.
                    if header.two_way and self.transport is not None:
                        self._write(heartbeat_response(header.request_id, header.serialization))
                else:
                    # The only other event is READONLY ("R"): the provider is shutting down.
                    self.readonly = True
                    log.info("provider is going away (readonly)", extra={"endpoint": self.host.id})
            return  # a provider sends no other requests on a consumer connection
        waiter = self.pending.pop(header.request_id, None)
        if waiter is not None:
            waiter(frame)

    @property
    def writable(self) -> bool:
        """False while the provider's socket buffer is over its high-water mark."""
        return self._writable.is_set()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the write buffer drains (or the connection is gone)."""
        if self._writable.is_set():
            callback()
        else:
            self._on_writable.append(callback)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
        callbacks, self._on_writable = self._on_writable, []
        for callback in callbacks:
            callback()

    def eof_received(self) -> bool | None:
        # The provider closed its side: nothing new may be sent here from now on, even
        # before connection_lost runs (a request written now would be lost for sure).
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(self.close_reason or f"connection to {self.host.id} lost: {exc or 'closed'}")
        self.resume_writing()  # wake writers and paused clients: they will see `closed`

    def _fail_all(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        pending, self.pending = self.pending, {}
        error = UpstreamError(reason)
        for waiter in pending.values():
            waiter(error)

    # -- writes ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        batch = self.batch
        if batch.active:
            out = self._out
            if not out:
                batch.dirty.append(self)
            out.append(data)
        else:
            assert self.transport is not None
            self.transport.write(data)

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            write_all(transport, out)
        # else: lost while queued; connection_lost fails the waiters of these requests.

    # -- requests ----------------------------------------------------------------------

    def send_request(self, frame: bytes, waiter: Waiter) -> int:
        """Send a two-way request frame under a fresh request id (returned); ``waiter`` gets
        the answer. No coroutine and no future per request: this is the proxy's hot path.
        The caller minds backpressure (``writable``) and its own deadline (``cancel``)."""
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        request_id = next(self._ids)
        self.pending[request_id] = waiter
        self._write(with_request_id(frame, request_id))
        return request_id

    def send_frame(self, frame: Frame, waiter: Waiter) -> int:
        """:meth:`send_request` for a decoded frame: packs it once under the new id."""
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        request_id = next(self._ids)
        self.pending[request_id] = waiter
        self._write(frame_with_id(frame, request_id))
        return request_id

    def send_oneway_frame(self, frame: Frame) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        self._write(frame_with_id(frame, next(self._ids)))

    def cancel(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (timed out): a late answer is dropped."""
        self.pending.pop(request_id, None)

    async def request(self, frame: bytes, timeout_s: float) -> Frame:
        """Send a two-way request frame (any request id: it is replaced) and await the answer."""
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        request_id = next(self._ids)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()

        def settle(outcome: Frame | UpstreamError) -> None:
            if future.done():
                return
            if isinstance(outcome, Frame):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

        self.pending[request_id] = settle
        try:
            async with asyncio.timeout(timeout_s):
                # Backpressure: wait while the provider's socket buffer is over high water.
                await self._writable.wait()
                if self.closed:
                    raise UpstreamError(self.close_reason or f"connection to {self.host.id} lost")
                self.transport.write(with_request_id(frame, request_id))
                return await future
        except TimeoutError:
            raise UpstreamTimeout(
                f"{self.host.id} did not answer within {timeout_s * 1000:.0f} ms"
            ) from None
        finally:
            self.pending.pop(request_id, None)

    def send_oneway(self, frame: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        self.transport.write(with_request_id(frame, next(self._ids)))

    def send_heartbeat(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(heartbeat_request(next(self._ids)))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.close_reason = "connection closed by the agent"
            self.transport.close()


class UpstreamPool:
    """One live connection per provider, made on first use and replaced when it dies."""

    def __init__(
        self,
        connect_timeout_s: float = 1.0,
        max_body: int = DEFAULT_MAX_BODY,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_body = max_body
        self.heartbeat_s = heartbeat_s
        self._connections: dict[tuple[str, int], UpstreamConnection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[UpstreamConnection]] = {}
        self._heartbeats: asyncio.Task[None] | None = None
        self.batch = WriteBatch()

    def connections(self) -> list[UpstreamConnection]:
        return list(self._connections.values())

    def live(self, host: Host) -> UpstreamConnection | None:
        """The usable connection to ``host`` if one is open: the synchronous fast path."""
        connection = self._connections.get((host.instance.host, host.instance.port))
        if connection is None or connection.closed or connection.readonly:
            return None
        return connection

    async def get(self, host: Host) -> UpstreamConnection:
        key = (host.instance.host, host.instance.port)
        connection = self._connections.get(key)
        if connection is not None and not connection.closed and not connection.readonly:
            return connection
        # Concurrent callers share one connect attempt instead of opening several.
        waiting = self._connecting.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        attempt: asyncio.Future[UpstreamConnection] = loop.create_future()
        self._connecting[key] = attempt
        try:
            connection = await self._connect(host)
        except BaseException as exc:
            attempt.set_exception(exc)
            attempt.exception()  # retrieved: no "never retrieved" warning when unshared
            raise
        finally:
            self._connecting.pop(key, None)
        attempt.set_result(connection)
        self._connections[key] = connection
        if self._heartbeats is None:
            self._heartbeats = loop.create_task(self._keep_alive())
        return connection

    async def _connect(self, host: Host) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _transport, connection = await loop.create_connection(
                    lambda: UpstreamConnection(host, self.max_body, self.batch),
                    host.instance.host,
                    host.instance.port,
                )
        except TimeoutError:
            raise ConnectError(f"connect to {host.id} timed out") from None
        except OSError as exc:
            raise ConnectError(f"connect to {host.id} failed: {exc.strerror or exc}") from None
        return connection

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_s / 2)
            now = loop.time()
            for key, connection in list(self._connections.items()):
                if connection.closed:
                    del self._connections[key]
                elif now - connection.last_read >= self.heartbeat_s:
                    connection.send_heartbeat()

    async def close(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
            self._heartbeats = None
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
