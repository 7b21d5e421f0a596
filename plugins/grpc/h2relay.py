"""The gRPC listener as an HTTP/2 frame relay (``relay: h2``), below grpc.aio.

Each client stream (one gRPC call) gets an endpoint of its own (LB per call) and a stream
on that endpoint's pooled, multiplexed HTTP/2 connection; the stream id is the upstream
connection's own, the mapping lives in :class:`_Call`. Headers, DATA and trailers are
passed on as they come, messages undecoded (plugins/grpc/framing.py only counts their
sizes), under HTTP/2 flow control both ways: bytes read from one side are acknowledged
(their window given back) only once the other side took them, so a slow reader slows its
writer instead of filling the agent's memory.

What the agent adds per call: ``grpc-timeout`` honoured (the agent ends the call with
DEADLINE_EXCEEDED at the client's deadline and resets the upstream stream; the header
goes upstream as sent, the microseconds spent here not taken off); the Triple selector
headers (plugins/grpc/triple.py); RESOURCE_EXHAUSTED for a message over
``max_message_bytes`` either way; INTERNAL for a request stream that ends inside a
message; UNAVAILABLE when no endpoint is there or its connection fails. A client reset
resets the upstream stream.

Each stream is a call on the agent's Calls hub, as on the grpcio relay (tracing, metrics,
the hop count and budget sent on, governance): refusals are answered with the status of
plugins/grpc/governance.py, an injected delay holds the upstream stream back, traffic
splits use the request headers. Not on this relay: retries (a stream's bytes are passed
on as they come, not kept to be sent again) and fallback values (no reflection here: a
degradation is answered UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import quote

from agent.calls import Call, CallRejected, Direction, Outcome
from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.governance.policy import decision_of
from agent.h2.connection import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    HEAD,
    NO_ERROR,
    REFUSED_STREAM,
    TRAILERS,
    Connection,
    Handler,
    ProtocolError,
    Settings,
    StreamGone,
    StreamLimit,
)
from agent.runtime.protocols import ListenerContext
from agent.telemetry.propagation import INCOMING, TIMEOUT_MS
from plugins.grpc.channels import target
from plugins.grpc.framing import MessageSizes, MessageTooLarge
from plugins.grpc.triple import triple_headers

log = logging.getLogger(__name__)

# Receive windows we advertise: large enough that a 1 MB message flows without waiting for
# WINDOW_UPDATEs, small enough to bound what one stream can make the agent buffer.
_STREAM_WINDOW = 4 * 1024 * 1024
_CONNECTION_WINDOW = 16 * 1024 * 1024

# Request headers that do not go upstream: per-hop, or set by the relay itself.
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"host"})

_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}

OK, CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = 0, 1, 4, 8, 13, 14

# gRPC status names by code, for call records (the grpcio relay records code.name).
_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_OUTCOMES = {OK: Outcome.OK, CANCELLED: Outcome.CANCELLED, DEADLINE_EXCEEDED: Outcome.TIMEOUT}


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (``100m``, ``5S``: at most 8 digits and a unit) in seconds."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


def _settings() -> Settings:
    # Streams per client connection: the HTTP listener's default (nginx and Envoy: 100).
    return Settings(stream_window=_STREAM_WINDOW, connection_window=_CONNECTION_WINDOW)


class _Buffer:
    """Bytes waiting for the other side's flow-control window, as the chunks they came in
    (a bytearray would move its whole tail on every frame taken from its head)."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the head (one chunk, or a slice of it)."""
        chunk = self._chunks.popleft()
        if len(chunk) > limit:
            self._chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self.size -= len(chunk)
        return chunk

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0


class _Call:
    """One relayed gRPC call: a client stream and its upstream stream."""

    __slots__ = (
        "client",
        "client_id",
        "down_sizes",
        "ended",
        "headers_sent",
        "host",
        "record",
        "request_ended",
        "status",
        "timer",
        "to_client",
        "to_client_end",
        "to_up",
        "up",
        "up_id",
        "up_sizes",
    )

    def __init__(self, client: _Client, client_id: int, host: Host, limit: int) -> None:
        self.client = client
        self.client_id = client_id
        self.host = host
        self.up: _Upstream | None = None
        self.up_id = 0
        self.to_up = _Buffer()
        self.request_ended = False
        self.to_client = _Buffer()
        # Trailers to send once to_client is out (None: not yet received).
        self.to_client_end: list[tuple[bytes, bytes]] | None = None
        self.headers_sent = False
        self.ended = False
        self.status: int | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.up_sizes = MessageSizes(limit)  # requests
        self.down_sizes = MessageSizes(limit)  # replies
        self.record: Call | None = None  # the call record (agent/calls.py)

    # client -> upstream

    def request_data(self, data: bytes, flow: int) -> None:
        if self.ended:
            self.client.ack(self.client_id, flow)
            return
        if flow > len(data):  # padding: nothing to relay, give it back now
            self.client.ack(self.client_id, flow - len(data))
        try:
            self.up_sizes.feed(data)
        except MessageTooLarge as exc:
            self.fail(RESOURCE_EXHAUSTED, f"meshagent: request {exc}")
            return
        self.to_up.append(data)
        self.flush_up()

    def request_end(self) -> None:
        if self.ended:
            return
        if self.up_sizes.partial:
            self.fail(INTERNAL, "meshagent: the request stream ended inside a message")
            return
        self.request_ended = True
        self.flush_up()

    def flush_up(self) -> None:
        up = self.up
        if up is None or self.ended:
            return
        conn = up.conn
        try:
            while self.to_up:
                size = conn.window(self.up_id)
                if size <= 0:
                    return
                chunk = self.to_up.take(size)
                end = self.request_ended and not self.to_up
                conn.send_data(self.up_id, chunk, end_stream=end)
                self.client.ack(self.client_id, len(chunk))
                if end:
                    self.request_ended = False
            if self.request_ended:
                conn.end_stream(self.up_id)
                self.request_ended = False
        except StreamGone:
            # The provider already ended the call; its status is on its way.
            self.to_up.clear()
        up.dirty = True

    # upstream -> client

    def response_headers(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        if self.ended:
            return
        if ended:  # trailers-only: the status is in these headers
            self.to_client_end = headers
            self.flush_client()
            return
        self.client.conn.send_headers(self.client_id, headers)
        self.headers_sent = True
        self.client.dirty = True

    def response_data(self, data: bytes, flow: int) -> None:
        up = self.up
        if self.ended or up is None:
            if up is not None:
                up.ack(self.up_id, flow)
            return
        if flow > len(data):
            up.ack(self.up_id, flow - len(data))
        try:
            self.down_sizes.feed(data)
        except MessageTooLarge as exc:
            self.fail(RESOURCE_EXHAUSTED, f"meshagent: response {exc}")
            return
        self.to_client.append(data)
        self.flush_client()

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if not self.ended:
            self.to_client_end = trailers
            self.flush_client()

    def flush_client(self) -> None:
        if self.ended:
            return
        conn = self.client.conn
        try:
            while self.to_client:
                size = conn.window(self.client_id)
                if size <= 0:
                    return
                chunk = self.to_client.take(size)
                conn.send_data(self.client_id, chunk)
                if self.up is not None:
                    self.up.ack(self.up_id, len(chunk))
            if self.to_client_end is not None:
                trailers = self.to_client_end
                conn.send_headers(self.client_id, trailers, end_stream=True)
                self.client.dirty = True
                self.finish(_status_of(trailers))
        except StreamGone:
            self.finish(CANCELLED)
        self.client.dirty = True

    # ends

    def fail(self, code: int, message: str) -> None:
        """End the call with a status of the agent's, and the upstream stream with it."""
        if self.ended:
            return
        self.reset_up()
        trailers = [(b"grpc-status", str(code).encode()), (b"grpc-message", _encode(message))]
        if not self.headers_sent:
            trailers = [(b":status", b"200"), (b"content-type", b"application/grpc"), *trailers]
        with contextlib.suppress(StreamGone):
            self.client.conn.send_headers(self.client_id, trailers, end_stream=True)
        self.client.dirty = True
        self.finish(code)

    def reset_up(self, code: int = CANCEL) -> None:
        up = self.up
        if up is not None and not self.ended:
            up.conn.reset(self.up_id, code)
            up.dirty = True

    def client_reset(self) -> None:
        if not self.ended:
            self.reset_up()
            self.finish(CANCELLED)

    def upstream_reset(self, error_code: int) -> None:
        if self.ended:
            return
        if error_code == REFUSED_STREAM:
            self.fail(UNAVAILABLE, "meshagent: the provider refused the stream")
        else:
            self.fail(
                CANCELLED if error_code == CANCEL else INTERNAL,
                f"meshagent: the provider reset the stream ({error_code})",
            )

    def finish(self, status: int) -> None:
        if self.ended:
            return
        self.ended = True
        self.status = status
        if self.timer is not None:
            self.timer.cancel()
        self.client.calls.pop(self.client_id, None)
        conn = self.client.conn
        stream = conn.streams.get(self.client_id)
        if stream is not None and not stream.local_open:
            # Answered while the client is still sending: tell it to stop (RFC 9113 §8.1).
            conn.reset(self.client_id, NO_ERROR)
        if self.up is not None:
            self.up.calls.pop(self.up_id, None)
        self.host.active_requests -= 1
        cluster = self.client.context.cluster
        if status == UNAVAILABLE:
            cluster.report_failure(self.host)
        else:
            cluster.report_success(self.host)
        # What was read and never relayed: its window goes back all the same.
        if self.up is not None and self.to_client:
            self.up.ack(self.up_id, self.to_client.size)
        if self.to_up:
            self.client.ack(self.client_id, self.to_up.size)
        self.to_up.clear()
        self.to_client.clear()
        record = self.record
        if record is not None:
            outcome = _OUTCOMES.get(status, Outcome.APP_ERROR)
            name = _STATUS_NAMES[status] if 0 <= status < len(_STATUS_NAMES) else str(status)
            if record.attempts:
                record.end_attempt(record.attempts[-1], outcome, name)
            record.finish(outcome, name)


def _status_of(headers: list[tuple[bytes, bytes]]) -> int:
    for key, value in headers:
        if key == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return INTERNAL
    return INTERNAL


def _encode(message: str) -> bytes:
    # grpc-message is percent-encoded (gRPC over HTTP/2 spec).
    return quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()


class _Upstream(Handler):
    """One HTTP/2 connection to an endpoint, shared by the calls relayed to it: an asyncio
    protocol by its methods (a compiled class has one base: the connection's Handler)."""

    def __init__(self, pool: UpstreamPool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.conn = Connection(self, client=True, settings=_settings())
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.closed = False
        self.touched: set[_Client] = set()  # clients whose calls this read moved

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flush()

    def ack(self, stream_id: int, size: int) -> None:
        if size > 0 and not self.closed:
            self.conn.ack(stream_id, size)
            self.dirty = True

    def flush(self) -> None:
        self.dirty = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
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
        touched = self.touched
        if touched:
            self.touched = set()
            for client in touched:
                client.flush()

    # The connection's events (agent/h2/connection.py Handler).

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        if kind == HEAD:
            call.response_headers(headers, end_stream)
        elif kind == TRAILERS:
            call.response_trailers(headers)
        self.touched.add(call.client)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            self.ack(stream_id, flow)
            return
        call.response_data(data, flow)
        if end_stream:
            call.response_trailers([])  # ended without trailers: no grpc-status
        self.touched.add(call.client)

    def stream_reset(self, stream_id: int, code: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            call.upstream_reset(code)
            self.touched.add(call.client)

    def window_opened(self, stream_id: int) -> None:
        call = self.calls.get(stream_id) if stream_id else None
        for each in [call] if call is not None else list(self.calls.values()):
            each.flush_up()
            # What was sent is acknowledged to its client: that one needs a flush.
            self.touched.add(each.client)

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        # No new calls here; those the provider will not process end UNAVAILABLE (nothing
        # of them was run), the others finish on this connection.
        self.pool.forget(self)
        for stream_id, call in list(self.calls.items()):
            if stream_id > last_stream_id:
                call.fail(UNAVAILABLE, "meshagent: the provider is going away (GOAWAY)")
                self.touched.add(call.client)
        if not self.calls and self.transport is not None:
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
        self.pool.forget(self)
        for call in list(self.calls.values()):
            call.fail(UNAVAILABLE, f"meshagent: {why}")
            call.client.flush()
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """One HTTP/2 connection per endpoint address, made on first use."""

    def __init__(self, connect_timeout_s: float = 5.0) -> None:
        self._connections: dict[str, _Upstream] = {}
        self._connecting: dict[str, asyncio.Future[_Upstream]] = {}
        self._timeout = connect_timeout_s

    def ready(self, address: str) -> _Upstream | None:
        return self._connections.get(address)

    async def connect(self, host: str, port: int) -> _Upstream:
        address = target(host, port)
        existing = self._connections.get(address)
        if existing is not None:
            return existing
        pending = self._connecting.get(address)
        if pending is None:
            pending = asyncio.ensure_future(self._dial(address, host, port))
            self._connecting[address] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(address, None))
        return await asyncio.shield(pending)

    async def _dial(self, address: str, host: str, port: int) -> _Upstream:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, upstream = await loop.create_connection(
                lambda: cast(asyncio.Protocol, _Upstream(self, address)), host, port
            )
        made = cast(_Upstream, upstream)
        self._connections[address] = made
        return made

    def retire_gone(self, live: set[str]) -> None:
        """Close idle connections to endpoints no longer in the cluster."""
        for address, upstream in list(self._connections.items()):
            if address not in live and not upstream.calls:
                del self._connections[address]
                if upstream.transport is not None:
                    upstream.transport.close()

    def forget(self, upstream: _Upstream) -> None:
        if self._connections.get(upstream.address) is upstream:
            del self._connections[upstream.address]

    def close(self) -> None:
        for upstream in list(self._connections.values()):
            if upstream.transport is not None:
                upstream.transport.close()
        self._connections.clear()


class _Client(Handler):
    """One client's HTTP/2 connection to the listener (an asyncio protocol by its methods)."""

    def __init__(self, context: ListenerContext, pool: UpstreamPool, limit: int) -> None:
        self.context = context
        self.pool = pool
        self.limit = limit
        # Rapid reset and control-frame floods are counted by the connection
        # (agent/h2/connection.py), at the HTTP listener's default limits.
        self.conn = Connection(self, client=False, settings=_settings())
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.closed = False
        self.upstreams: set[_Upstream] = set()  # upstreams this read touched

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.context.track(self.transport)  # type: ignore[arg-type]
        self.context.stats.accepted += 1
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstreams = {call.up for call in self.calls.values() if call.up is not None}
        for call in list(self.calls.values()):
            call.client_reset()
        for upstream in upstreams:
            upstream.flush()
        if self.transport is not None:
            self.context.untrack(self.transport)

    def eof_received(self) -> bool | None:
        return None  # close: HTTP/2 has no half-closed connections

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None

    def ack(self, stream_id: int, size: int) -> None:
        if size > 0 and not self.closed:
            self.conn.ack(stream_id, size)
            self.dirty = True

    def flush(self) -> None:
        self.dirty = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.context.stats.bytes_out += len(data)
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.context.stats.bytes_in += len(data)
        try:
            self.conn.receive(data)
        except ProtocolError as exc:
            # A client that breaks HTTP/2 loses its connection (GOAWAY), nobody else.
            if exc.code == ENHANCE_YOUR_CALM:
                log.warning(
                    "http/2 connection refused: %s",
                    exc,
                    extra={"listener": self.context.listener.display_name},
                )
                self.context.stats.rejected += 1
            else:
                log.info("client broke HTTP/2", extra={"error": str(exc)})
            self.flush()
            if self.transport is not None:
                self.transport.close()  # connection_lost resets the calls still open
            return
        upstreams = self.upstreams
        if upstreams:
            self.upstreams = set()
            for upstream in upstreams:
                upstream.flush()
        self.flush()

    # The connection's events (agent/h2/connection.py Handler).

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if kind == HEAD:
            call = self._start(stream_id, headers, end_stream)
        else:  # trailers from a client: gRPC has none to pass on; they end the request
            call = self.calls.get(stream_id)
            if call is not None:
                call.request_end()
        if call is not None and call.up is not None:
            self.upstreams.add(call.up)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            self.ack(stream_id, flow)
            return
        call.request_data(data, flow)
        if end_stream:
            call.request_end()
        if call.up is not None:
            self.upstreams.add(call.up)

    def stream_reset(self, stream_id: int, code: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            up = call.up
            call.client_reset()
            if up is not None:
                self.upstreams.add(up)

    def window_opened(self, stream_id: int) -> None:
        call = self.calls.get(stream_id) if stream_id else None
        for each in [call] if call is not None else list(self.calls.values()):
            each.flush_client()
            if each.up is not None:
                self.upstreams.add(each.up)

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        # The client opens no more streams; those open finish, then it closes.
        return

    def _start(
        self, stream_id: int, received: list[tuple[bytes, bytes]], ended: bool
    ) -> _Call | None:
        context = self.context
        context.stats.requests += 1
        cluster: Cluster = context.cluster
        headers = [(k, v) for k, v in received if k not in _HOP]
        timeout: float | None = None
        path = b""
        for key, value in headers:
            if key == b"grpc-timeout":
                timeout = parse_timeout(value)
            elif key == b":path":
                path = value
        record: Call | None = None
        pick = NO_CONTEXT
        calls = context.calls
        if calls.policies or calls.observers:
            fields = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _INCOMING
            }
            route = calls.outbound_route(context.service.name, path.decode("latin-1").lstrip("/"))
            try:
                record = calls.start("grpc", Direction.OUTBOUND, route, fields, timeout)
            except CallRejected as exc:
                context.stats.request_errors += 1
                code = RESOURCE_EXHAUSTED if exc.reason == "rate_limited" else UNAVAILABLE
                self._refuse(stream_id, f"meshagent: {exc.reason}: {exc}", code)
                return None
            pick = _pick_context(cluster, record, headers)
        host = cluster.choose(pick)
        if host is None:
            context.stats.request_errors += 1
            if record is not None:
                record.finish(Outcome.NO_ENDPOINT, _STATUS_NAMES[UNAVAILABLE])
            self._refuse(
                stream_id, f"meshagent: no provider of {context.service.name} is available"
            )
            return None
        host.active_requests += 1
        call = _Call(self, stream_id, host, self.limit)
        self.calls[stream_id] = call
        sent = [(k.decode("latin-1"), v) for k, v in headers]
        for name, text in triple_headers(host.instance.metadata, sent, context.service.attributes):
            headers.append((name.encode(), text.encode()))
        delay = 0.0
        if record is not None:
            call.record = record
            headers = _with_outgoing(headers, record.outgoing(record.begin_attempt(host.id)))
            remaining = record.remaining_s()
            if remaining is not None and (timeout is None or remaining < timeout):
                # A shorter budget (a rule's timeout, one that arrived): the agent's own
                # timer ends the call then; grpc-timeout goes upstream as the client sent it.
                timeout = remaining
            decision = decision_of(record)
            if decision is not None:
                delay = decision.delay_s
        loop = asyncio.get_running_loop()
        if timeout is not None:
            call.timer = loop.call_later(timeout, self._expire, call)
        if ended:
            call.request_ended = True
        if delay > 0:
            # An injected delay: the request waits in the call's buffer meanwhile.
            loop.call_later(delay, self._go_upstream, call, headers, True)
        else:
            self._go_upstream(call, headers)
        return call

    def _go_upstream(
        self, call: _Call, headers: list[tuple[bytes, bytes]], later: bool = False
    ) -> None:
        """Open the upstream stream. ``later``: from a timer, so flush here (else the read
        that started the call flushes what it touched)."""
        if call.ended:
            return
        host = call.host
        upstream = self.pool.ready(target(host.instance.host, host.instance.port))
        if upstream is not None and not upstream.closed:
            self._attach(call, upstream, headers)
            if later:
                upstream.flush()
                self.flush()
        else:
            task = asyncio.get_running_loop().create_task(self._connect(call, headers))
            task.add_done_callback(_log_failure)

    async def _connect(self, call: _Call, headers: list[tuple[bytes, bytes]]) -> None:
        host = call.host
        # Checked only when a connection is made: endpoints come and go far less often
        # than calls, and a stale idle connection costs a socket, not correctness.
        self.pool.retire_gone(
            {target(h.instance.host, h.instance.port) for h in self.context.cluster.hosts()}
        )
        try:
            upstream = await self.pool.connect(host.instance.host, host.instance.port)
        except (OSError, TimeoutError) as exc:
            if not call.ended:
                call.fail(UNAVAILABLE, f"meshagent: cannot connect to {host.id}: {exc}")
                self.flush()
            return
        if call.ended:
            return
        self._attach(call, upstream, headers)
        upstream.flush()
        self.flush()

    def _attach(self, call: _Call, upstream: _Upstream, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            stream_id = upstream.conn.open_stream()
            end = call.request_ended and not call.to_up
            upstream.conn.send_headers(stream_id, headers, end_stream=end)
        except StreamLimit as exc:
            call.fail(UNAVAILABLE, f"meshagent: no stream to {call.host.id}: {exc}")
            return
        if end:
            call.request_ended = False
        call.up = upstream
        call.up_id = stream_id
        upstream.calls[stream_id] = call
        upstream.dirty = True
        call.flush_up()

    def _expire(self, call: _Call) -> None:
        if not call.ended:
            call.fail(DEADLINE_EXCEEDED, "meshagent: deadline exceeded")
            if call.up is not None:
                call.up.flush()
            self.flush()

    def _refuse(self, stream_id: int, message: str, code: int = UNAVAILABLE) -> None:
        headers = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(code).encode()),
            (b"grpc-message", _encode(message)),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=True)


_INCOMING = frozenset(name.encode() for name in INCOMING)


def _pick_context(
    cluster: Cluster, record: Call, headers: list[tuple[bytes, bytes]]
) -> PickContext:
    """The endpoints a rule's traffic split leaves to this call (request headers)."""
    decision = decision_of(record)
    if decision is None or not decision.splits:
        return NO_CONTEXT
    lookup = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    excluded = decision.excluded(cluster.hosts(), lambda h: h.instance.metadata, lookup.get)
    return PickContext(exclude=excluded) if excluded else NO_CONTEXT


def _with_outgoing(
    headers: list[tuple[bytes, bytes]], outgoing: dict[str, str]
) -> list[tuple[bytes, bytes]]:
    """What observers send (trace context, hop count, path) replaces the client's field of
    that name; the budget travels as grpc-timeout, not as a header of ours."""
    if not outgoing:
        return headers
    mine = {k.encode(): v.encode() for k, v in outgoing.items() if k != TIMEOUT_MS}
    kept = [(k, v) for k, v in headers if k not in mine]
    return kept + list(mine.items())


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("h2 relay: upstream setup failed", exc_info=task.exception())


def protocol_factory(
    context: ListenerContext, pool: UpstreamPool, max_message_bytes: int
) -> Callable[[], asyncio.Protocol]:
    def make() -> asyncio.Protocol:
        return cast(asyncio.Protocol, _Client(context, pool, max_message_bytes))

    return make
