"""Pooled, multiplexed connections to Thrift providers.

One connection per (provider, protocol, transport) carries the calls of every client: each
call goes out under a fresh seqid of that connection and its reply is matched back by
seqid. Thrift servers answer a connection's calls in order, but matching by seqid keeps
the pool correct for servers that do not (and lets a timed-out call's late reply be
dropped). Providers speak one protocol per port, so clients of another wire form get
their own connection rather than a translation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from agent.cluster.host import Host
from agent.codec import NEED_DATA
from agent.errors import ConnectError, RemoteProtocolError, UpstreamError, UpstreamTimeout
from plugins.thrift.codec import Message, MessageDecoder, Proto, Transport, next_seqid, with_seqid

log = logging.getLogger(__name__)

# Called once per call with the provider's reply, or the UpstreamError that ended the wait.
Waiter = Callable[[Message | UpstreamError], None]


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, host: Host, proto: Proto, transport: Transport, max_size: int) -> None:
        self.host = host
        self.wire = transport
        self.transport: asyncio.Transport | None = None
        self.decoder = MessageDecoder(proto, transport, max_size)
        self.pending: dict[int, Waiter] = {}
        self._seqid = 0
        self.closed = False
        self.close_reason = ""
        self._on_writable: list[Callable[[], None]] = []
        self.writable = True
        # Calls sent in one loop iteration (a client's read often holds many) go out in one
        # write: a syscall per message cost more than everything else on the path.
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.decoder.receive_data(data)
        try:
            while (message := self.decoder.next_event()) is not NEED_DATA:
                assert isinstance(message, Message)
                waiter = self.pending.pop(message.header.seqid, None)
                if waiter is not None:
                    waiter(message)
        except RemoteProtocolError as exc:
            log.warning(
                "provider sent a malformed message; closing: %s",
                exc,
                extra={"endpoint": self.host.id},
            )
            self._fail_all(f"malformed message from provider: {exc}")
            assert self.transport is not None
            self.transport.abort()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        callbacks, self._on_writable = self._on_writable, []
        for callback in callbacks:
            callback()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the write buffer drains (or the connection is gone)."""
        if self.writable:
            callback()
        else:
            self._on_writable.append(callback)

    def eof_received(self) -> bool | None:
        # Nothing new may go out from now on, even before connection_lost runs.
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(self.close_reason or f"connection to {self.host.id} lost: {exc or 'closed'}")
        self.resume_writing()

    def _fail_all(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        pending, self.pending = self.pending, {}
        error = UpstreamError(reason)
        for waiter in pending.values():
            waiter(error)

    def _next_seqid(self) -> int:
        if self.closed or self.transport is None:
            raise UpstreamError(self.close_reason or f"connection to {self.host.id} is closed")
        self._seqid = next_seqid(self._seqid)
        return self._seqid

    def send(self, message: Message, waiter: Waiter) -> int:
        """Send a call under a fresh seqid (returned); ``waiter`` gets the reply. No future
        per call: this is the proxy's hot path. The caller minds its own deadline."""
        seqid = self._next_seqid()
        self.pending[seqid] = waiter
        self._queue(with_seqid(message, seqid, self.wire))
        return seqid

    def send_oneway(self, message: Message) -> None:
        self._queue(with_seqid(message, self._next_seqid(), self.wire))

    def _queue(self, data: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def cancel(self, seqid: int) -> None:
        """Stop waiting for ``seqid`` (timed out): a late reply is dropped."""
        self.pending.pop(seqid, None)

    async def request(self, message: Message, timeout_s: float) -> Message:
        """Send a call and await its reply (the invoker's path)."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def settle(outcome: Message | UpstreamError) -> None:
            if future.done():
                return
            if isinstance(outcome, Message):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

        seqid = self.send(message, settle)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise UpstreamTimeout(
                f"{self.host.id} did not answer within {timeout_s * 1000:.0f} ms"
            ) from None
        finally:
            self.cancel(seqid)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.close_reason = "connection closed by the agent"
            self.flush()
            self.transport.close()


Key = tuple[str, int, Proto, Transport]


class UpstreamPool:
    """One live connection per provider and wire form, made on first use, replaced when it dies."""

    def __init__(self, connect_timeout_s: float, max_size: int) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_size = max_size
        self._connections: dict[Key, UpstreamConnection] = {}
        self._connecting: dict[Key, asyncio.Future[UpstreamConnection]] = {}

    def live(self, host: Host, proto: Proto, transport: Transport) -> UpstreamConnection | None:
        """The open connection for this wire form, if any: the synchronous fast path."""
        key = (host.instance.host, host.instance.port, proto, transport)
        connection = self._connections.get(key)
        return None if connection is None or connection.closed else connection

    async def get(self, host: Host, proto: Proto, transport: Transport) -> UpstreamConnection:
        connection = self.live(host, proto, transport)
        if connection is not None:
            return connection
        key = (host.instance.host, host.instance.port, proto, transport)
        # Concurrent callers share one connect attempt instead of opening several.
        waiting = self._connecting.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        attempt: asyncio.Future[UpstreamConnection] = loop.create_future()
        self._connecting[key] = attempt
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _t, connection = await loop.create_connection(
                        lambda: UpstreamConnection(host, proto, transport, self.max_size),
                        host.instance.host,
                        host.instance.port,
                    )
            except TimeoutError:
                raise ConnectError(f"connect to {host.id} timed out") from None
            except OSError as exc:
                raise ConnectError(f"connect to {host.id} failed: {exc.strerror or exc}") from None
        except BaseException as exc:
            attempt.set_exception(exc)
            attempt.exception()  # retrieved: no "never retrieved" warning when unshared
            raise
        finally:
            self._connecting.pop(key, None)
        attempt.set_result(connection)
        # Dead connections are replaced under their key, so the map holds one per key.
        self._connections[key] = connection
        return connection

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
