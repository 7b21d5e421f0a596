"""The Thrift-aware outbound listener: one client connection, many calls, each routed.

Per message the proxy reads the header only (name, type, seqid). It picks a provider
through the cluster for *each* call, so one long-lived client connection is balanced over
all providers, sends the call on the shared multiplexed connection to that provider (the
pool rewrites the seqid) and writes the reply back under the client's own seqid. Replies
and provider exceptions (declared ones and TApplicationExceptions alike) pass through
unread.

The agent answers with a TApplicationException of its own: no provider, no provider
reachable, no answer within the timeout, the provider's connection lost mid-call, too
many calls in flight (INTERNAL_ERROR); a message that is not a CALL or ONEWAY
(INVALID_MESSAGE_TYPE, then the connection closes). Broken framing (garbage, a frame over
the limit, a message truncated at EOF) closes the connection, after a PROTOCOL_ERROR
exception when the call's header was read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from agent.calls import Call, CallRejected, Outcome
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.codec import NEED_DATA
from agent.errors import ConnectError, RemoteProtocolError, UpstreamError
from agent.runtime.protocols import ListenerContext
from plugins.thrift import governance
from plugins.thrift.codec import (
    AppError,
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    application_exception,
    with_seqid,
)
from plugins.thrift.protocol import ThriftConfig
from plugins.thrift.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)

_PROTOS: dict[str, Proto | None] = {"binary": Proto.BINARY, "compact": Proto.COMPACT, "auto": None}
_TRANSPORTS: dict[str, Transport | None] = {
    "framed": Transport.FRAMED,
    "buffered": Transport.BUFFERED,
    "auto": None,
}


class _Call:
    """One two-way call from the client, from dispatch to its answer."""

    __slots__ = (
        "connection",
        "done",
        "header",
        "host",
        "message",
        "proxy",
        "record",
        "seqid",
        "timer",
    )

    def __init__(self, proxy: ThriftProxyConnection, message: Message) -> None:
        self.proxy = proxy
        self.message = message
        self.header = message.header
        self.done = False
        self.host: Host | None = None
        self.connection: UpstreamConnection | None = None
        self.seqid = 0
        self.timer: asyncio.TimerHandle | None = None
        self.record: Call | None = None  # the call record (agent/calls.py)

    def settle(self, outcome: Message | UpstreamError) -> None:
        if self.done:
            return
        host = self.host
        assert host is not None
        self._finish()
        proxy = self.proxy
        if self.record is not None:
            self.record.finish(
                Outcome.OK if isinstance(outcome, Message) else Outcome.UPSTREAM_ERROR
            )
        if isinstance(outcome, Message):
            proxy.context.cluster.report_success(host)
            proxy.write(with_seqid(outcome, self.header.seqid, proxy.wire))
        else:
            proxy.context.cluster.report_failure(host)
            proxy.answer_error(
                self.header, f"meshagent: call {self.header.name} to {host.id} failed: {outcome}"
            )

    def expire(self) -> None:
        if self.done:
            return
        host, connection = self.host, self.connection
        self._finish()
        if self.record is not None:
            self.record.finish(Outcome.TIMEOUT)
        proxy = self.proxy
        timeout_ms = proxy.config.timeout_ms
        if connection is not None and host is not None:
            connection.cancel(self.seqid)
            proxy.context.cluster.report_failure(host)
            proxy.answer_error(
                self.header,
                f"meshagent: provider {host.id} did not answer {self.header.name} "
                f"within {timeout_ms} ms",
            )
        else:
            proxy.answer_error(
                self.header,
                f"meshagent: no connection to a provider of {proxy.service_name} "
                f"within {timeout_ms} ms",
            )

    def _finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        if self.connection is not None and self.host is not None:
            self.host.active_requests -= 1
        self.proxy.call_done(self)

    def abandon(self) -> None:
        """The client went away: stop waiting, say nothing."""
        if self.done:
            return
        self.done = True
        if self.record is not None:
            self.record.finish(Outcome.CANCELLED)
        if self.timer is not None:
            self.timer.cancel()
        if self.connection is not None:
            self.connection.cancel(self.seqid)
            if self.host is not None:
                self.host.active_requests -= 1


class ThriftProxyConnection(asyncio.Protocol):
    """A client's connection to a Thrift listener."""

    def __init__(self, context: ListenerContext, config: ThriftConfig, pool: UpstreamPool) -> None:
        self.context = context
        self.config = config
        self.pool = pool
        self.service_name = context.service.name
        self.decoder = MessageDecoder(
            _PROTOS[config.protocol], _TRANSPORTS[config.transport], config.max_message_bytes
        )
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.calls: set[_Call] = set()
        self.closed = False
        self.lost = False
        self.eof = False
        self.peer = ""
        self._upstream_paused = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Replies that arrive in one loop iteration go out in one write (see upstream.py).
        self._out: list[bytes] = []

    @property
    def wire(self) -> Transport:
        # Known once the first message is decoded (the only time it is asked).
        assert self.decoder.transport is not None
        return self.decoder.transport

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        stats = self.context.stats
        stats.accepted += 1
        stats.active += 1
        self.context.track(self.transport)

    def data_received(self, data: bytes) -> None:
        self.context.stats.bytes_in += len(data)
        decoder = self.decoder
        decoder.receive_data(data)
        try:
            while not self.closed:
                message = decoder.next_event()
                if message is NEED_DATA:
                    return
                assert isinstance(message, Message)
                self._message_received(message)
        except RemoteProtocolError as exc:
            self._refuse_stream(str(exc), AppError.PROTOCOL_ERROR)

    def eof_received(self) -> bool:
        self.eof = True
        if self.decoder.buffered:
            self._refuse_stream(
                f"connection ended inside a message ({self.decoder.buffered} bytes buffered)",
                AppError.PROTOCOL_ERROR,
            )
            return False
        # Half-closed by the client: answer what is in flight, then close.
        return bool(self.calls)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.closed = True
        self.context.stats.active -= 1
        assert self.transport is not None
        self.context.untrack(self.transport)
        calls, self.calls = self.calls, set()
        for call in calls:
            call.abandon()
        for task in self._tasks:
            task.cancel()

    # -- calls ---------------------------------------------------------------------------

    def _message_received(self, message: Message) -> None:
        header = message.header
        self.context.stats.requests += 1
        if header.type == MessageType.ONEWAY:
            self._send_oneway(message)
            return
        if header.type != MessageType.CALL:
            # Clients send calls only; anything else means the two sides disagree on what
            # this connection is, so nothing after it can be trusted either.
            self._refuse_stream(
                f"message type {header.type} is not CALL or ONEWAY",
                AppError.INVALID_MESSAGE_TYPE,
                header,
            )
            return
        if len(self.calls) >= self.config.max_in_flight:
            self.answer_error(
                header,
                f"meshagent: {self.config.max_in_flight} calls already in flight on this "
                "connection (thrift listener max_in_flight)",
            )
            return
        record = governance.start(self.context, header.name, self.config.timeout_ms)
        if isinstance(record, CallRejected):
            self.answer_error(header, f"meshagent: {record.reason}: {record}")
            return
        call = _Call(self, message)
        call.record = record
        host = self.context.cluster.choose(governance.pick_context(self.context, record))
        if host is None:
            if record is not None:
                record.finish(Outcome.NO_ENDPOINT)
            self._no_provider(header)
            return
        self.calls.add(call)
        call.timer = self.loop.call_later(self.config.timeout_ms / 1000, call.expire)
        connection = self.pool.live(host, header.proto, self.wire)
        if connection is None:
            self._spawn(self._connect_and_send(call, host))
        else:
            self._send(call, host, connection)

    def _send(self, call: _Call, host: Host, connection: UpstreamConnection) -> None:
        if call.record is not None:
            call.record.begin_attempt(host.id)
        call.seqid = connection.send(call.message, call.settle)
        call.host = host
        call.connection = connection
        host.active_requests += 1
        if not connection.writable and not self._upstream_paused:
            # Backpressure: stop reading this client until the provider's socket drains.
            self._upstream_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
            connection.when_writable(self._upstream_drained)

    def _upstream_drained(self) -> None:
        self._upstream_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def _connect_and_send(self, call: _Call, host: Host) -> None:
        """The slow path: connect failures move on to other providers (up to the service's
        connect_attempts) and count against the provider in the cluster."""
        cluster = self.context.cluster
        tried: set[str] = set()
        last_error = ""
        chosen: Host | None = host
        while chosen is not None and not call.done:
            try:
                connection = await self.pool.get(chosen, call.header.proto, self.wire)
                if not call.done:
                    self._send(call, chosen, connection)
                return
            except ConnectError as exc:
                cluster.report_failure(chosen, connect=True)
                last_error = str(exc)
                log.info(
                    "connect to provider failed: %s",
                    exc,
                    extra={"listener": self.context.listener.display_name, "endpoint": chosen.id},
                )
            except UpstreamError as exc:  # closed between connect and send
                last_error = str(exc)
            tried.add(chosen.id)
            if len(tried) >= self.context.service.connect_attempts:
                break
            chosen = cluster.choose(PickContext(exclude=frozenset(tried)))
        if call.done:
            return
        call.done = True
        if call.timer is not None:
            call.timer.cancel()
        if call.record is not None:
            call.record.finish(Outcome.CONNECT_ERROR)
        self.call_done(call)
        self.answer_error(
            call.header,
            f"meshagent: no provider of {self.service_name} reachable "
            f"({len(tried)} tried): {last_error}",
        )

    def _send_oneway(self, message: Message) -> None:
        host = self.context.cluster.choose(NO_CONTEXT)
        if host is None:
            self._dropped(message, "no provider")
            return
        connection = self.pool.live(host, message.header.proto, self.wire)
        if connection is not None:
            connection.send_oneway(message)
        else:
            self._spawn(self._connect_and_send_oneway(message, host))

    async def _connect_and_send_oneway(self, message: Message, host: Host) -> None:
        try:
            connection = await self.pool.get(host, message.header.proto, self.wire)
            connection.send_oneway(message)
        except UpstreamError as exc:
            if isinstance(exc, ConnectError):
                self.context.cluster.report_failure(host, connect=True)
            self._dropped(message, str(exc))

    def _dropped(self, message: Message, reason: str) -> None:
        # A oneway call has no reply to carry an error: the log line is all there is.
        self.context.stats.request_errors += 1
        log.warning(
            "oneway call dropped: %s",
            reason,
            extra={"listener": self.context.listener.display_name, "method": message.header.name},
        )

    # -- answers -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None:
            return
        self.context.stats.bytes_out += len(data)
        if not self._out:
            self.loop.call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.lost and self.transport is not None:
            self.transport.write(b"".join(out))

    def _close(self) -> None:
        """Close after what is queued (close() lets written data flush, not queued data)."""
        self.flush()
        assert self.transport is not None
        self.transport.close()

    def answer_error(
        self, header: Header, message: str, kind: AppError = AppError.INTERNAL_ERROR
    ) -> None:
        self.context.stats.request_errors += 1
        self.write(
            application_exception(
                header.name, header.seqid, kind, message, header.proto, self.wire, header.strict
            )
        )

    def call_done(self, call: _Call) -> None:
        self.calls.discard(call)
        if self.eof and not self.calls and self.transport is not None:
            self._close()

    def _no_provider(self, header: Header) -> None:
        log.warning(
            "no provider available",
            extra={"listener": self.context.listener.display_name, "service": self.service_name},
        )
        self.answer_error(header, f"meshagent: no provider available for {self.service_name}")

    def _refuse_stream(self, reason: str, kind: AppError, header: Header | None = None) -> None:
        """The byte stream cannot be read on (Thrift has no resynchronisation point). The
        client hears why when the message's header was read (and so its seqid is known)."""
        self.context.stats.rejected += 1
        header = header or self.decoder.pending
        log.warning(
            "closing client connection: %s",
            reason,
            extra={
                "listener": self.context.listener.display_name,
                "client": self.peer,
                "method": header.name if header is not None else None,
            },
        )
        if header is not None and self.decoder.transport is not None:
            self.answer_error(header, f"meshagent: {reason}", kind)
        self.closed = True  # read no further messages; connection_lost still runs
        if self.transport is not None:
            # The exception is flushed first; calls in flight are abandoned.
            self._close()

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
