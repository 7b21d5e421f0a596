"""The gRPC listener as an HTTP/2 frame relay (``relay: h2``), on the agent's own HTTP/2
engine (agent/h2) and compiled: no grpc.aio and no python-h2 on the path.

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
plugins/grpc/governance.py, a degradation's fallback value as the reply
(plugins/grpc/fallback.py), an injected delay holds the upstream stream back, traffic
splits use the request headers, ``max_connections`` is checked when a provider
connection is to be made. Another attempt is the call driver's (agent/exchange.py): a
request of up to ``_KEEP`` bytes is kept until the provider answers, so a connect
failure (within the service's ``connect_attempts``, or a rule's), a stream the provider
refused or did not process before its GOAWAY (sent again once), or a rule's retryable
status in a trailers-only answer goes to another provider; never once part of the
answer reached the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import quote, unquote

from agent.calls import Call, CallRejected, Direction, Outcome
from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.errors import MeshAgentError
from agent.exchange import Action, Exchange
from agent.governance.policy import Degraded, connection_refusal, decision_of
from agent.governance.retry import Failure, FailureKind
from agent.h2.connection import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    HEAD,
    REFUSED_STREAM,
    Connection,
    Handler,
    ProtocolError,
    Settings,
    StreamGone,
    StreamLimit,
)
from agent.h2.upstream import EndpointBusy, H2Pool, H2Upstream, StreamSink
from agent.runtime.protocols import ListenerContext
from agent.telemetry.propagation import INCOMING, TIMEOUT_MS
from plugins.grpc.channels import target
from plugins.grpc.fallback import encode_fallback
from plugins.grpc.framing import MessageSizes, MessageTooLarge
from plugins.grpc.reflection import DescriptorCache
from plugins.grpc.triple import triple_headers

log = logging.getLogger(__name__)

# Receive windows we advertise: large enough that a 1 MB message flows without waiting for
# WINDOW_UPDATEs, small enough to bound what one stream can make the agent buffer.
_STREAM_WINDOW = 4 * 1024 * 1024
_CONNECTION_WINDOW = 16 * 1024 * 1024
# A request up to this size is kept until the provider answers, so that another attempt
# can send it again (a unary call's one message, a short client stream).
_KEEP = 64 * 1024
_CONNECT_ONLY = frozenset({FailureKind.CONNECT})
# How long a client connection refused for a protocol error lingers before it closes.
_LINGER_S = 1.0

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


def upstream_settings() -> Settings:
    """What the relay's provider connections announce (the pool's, agent/h2/upstream.py)."""
    return _settings()


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


class _Call(StreamSink):
    """One relayed gRPC call: a client stream and its upstream stream (the owner of the
    stream on the provider's connection, agent/h2/upstream.py)."""

    __slots__ = (
        "base_headers",
        "client",
        "client_id",
        "down_sizes",
        "driver",
        "ended",
        "headers_sent",
        "host",
        "kept",
        "kept_ended",
        "kept_size",
        "last_failure",
        "record",
        "request_ended",
        "resent",
        "status",
        "subset_out",
        "timer",
        "to_client",
        "to_client_end",
        "to_up",
        "up",
        "up_id",
        "up_sizes",
        "waiting",
    )

    def __init__(self, client: _Client, client_id: int, host: Host, limit: int) -> None:
        self.client = client
        self.client_id = client_id
        self.host = host
        self.up: H2Upstream | None = None
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
        # For another attempt: the request's headers before the per-endpoint ones, and
        # its bytes as they came (None once past _KEEP or once the provider answered).
        self.base_headers: list[tuple[bytes, bytes]] = []
        self.kept: list[bytes] | None = []
        self.kept_size = 0
        self.kept_ended = False
        self.resent = 0  # bytes at the head of to_up whose window the client already has
        self.driver: Exchange | None = None  # made at the first failed attempt
        self.subset_out: frozenset[str] = frozenset()
        self.last_failure = (UNAVAILABLE, "")
        # Headers to open the first attempt with once the request's first bytes arrive
        # (None: opened, or not waiting).
        self.waiting: list[tuple[bytes, bytes]] | None = None

    # client -> upstream

    def start_when_read(self) -> None:
        """The request's first bytes (or its end) arrived: open the first attempt now. The
        agent's own answers (no provider could be reached) then come after the client has
        written its message: grpc core's client fails a message it is still sending when
        the status arrives first, as INTERNAL, whatever the status said."""
        headers = self.waiting
        if headers is not None:
            self.waiting = None
            self.client.go_upstream(self, headers)

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
        kept = self.kept
        if kept is not None:
            if self.kept_size + len(data) <= _KEEP:
                kept.append(data)
                self.kept_size += len(data)
            else:
                self.kept = None  # a stream too long to send again: no more attempts
        self.to_up.append(data)
        if self.waiting is not None:
            self.start_when_read()
        else:
            self.flush_up()

    def request_end(self) -> None:
        if self.ended:
            return
        if self.up_sizes.partial:
            self.fail(INTERNAL, "meshagent: the request stream ended inside a message")
            return
        self.request_ended = True
        self.kept_ended = True
        if self.waiting is not None:
            self.start_when_read()
        else:
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
                fresh = len(chunk)
                if self.resent:  # sent again: the client had this window back already
                    again = fresh if fresh < self.resent else self.resent
                    self.resent -= again
                    fresh -= again
                self.client.ack(self.client_id, fresh)
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
            status = _status_of(headers)
            if status in (UNAVAILABLE, RESOURCE_EXHAUSTED):
                # gRPC's retryable statuses (gRFC A6): the call driver may try elsewhere.
                failure = Failure(FailureKind.STATUS, sent=True)
                self.last_failure = (status, _message_of(headers))
                if self.retry(failure, unsent=False, code=status):
                    return
            self.to_client_end = headers
            self.flush_client()
            return
        self.kept = None  # the provider answers: this attempt is the call's last
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
            # The provider did not process the stream (RFC 9113 §8.7): safe to send again.
            self.attempt_failed(
                Failure(FailureKind.RESET, sent=False),
                UNAVAILABLE,
                "meshagent: the provider refused the stream",
                unsent=True,
            )
        else:
            self.attempt_failed(
                Failure(FailureKind.RESET, sent=True),
                CANCELLED if error_code == CANCEL else INTERNAL,
                f"meshagent: the provider reset the stream ({error_code})",
            )

    # the provider's connection (StreamSink)

    def upstream_writable(self) -> None:
        self.flush_up()

    def upstream_unprocessed(self) -> None:
        # Not processed (RFC 9113 §6.8): sent again elsewhere, once.
        self.attempt_failed(
            Failure(FailureKind.RESET, sent=False),
            UNAVAILABLE,
            "meshagent: the provider is going away (GOAWAY)",
            unsent=True,
        )

    def upstream_lost(self, why: str) -> None:
        self.attempt_failed(Failure(FailureKind.RESET, sent=True), UNAVAILABLE, why)

    def flush_downstream(self) -> None:
        self.client.flush()

    # another attempt (agent/exchange.py decides)

    def attempt_failed(
        self, failure: Failure, code: int, message: str, unsent: bool = False
    ) -> None:
        """This attempt failed: another one, if the call driver says so, else the end."""
        self.last_failure = (code, message)
        if not self.retry(failure, unsent, code):
            self.fail(code, message)

    def retry(self, failure: Failure, unsent: bool, code: int) -> bool:
        """Whether the call goes on to another attempt. Never once part of the answer
        reached the client, nor when the request's bytes were not all kept. ``unsent``:
        the provider said it did not process the stream (sent again once, at once)."""
        if self.ended or self.headers_sent or self.kept is None:
            return False
        driver = self.driver
        if driver is None:
            # Without a rule: connect failures move on while connect_attempts last.
            service = self.client.context.service
            driver = self.driver = Exchange(
                self.record, retries=service.connect_attempts - 1, retry_on=_CONNECT_ONLY
            )
            driver.exclude_subset(self.subset_out)
        host = self.host
        step = driver.stale(host.id) if unsent else driver.failed(host.id, failure)
        if step.action is Action.GIVE_UP:
            return False
        self.client.context.cluster.report_failure(host)
        self._leave_upstream()
        record = self.record
        if record is not None and record.attempts:
            record.end_attempt(record.attempts[-1], Outcome.UPSTREAM_ERROR, _name(code))
        if step.action is Action.WAIT:
            # Not cancelled when the call ends first: reattempt then does nothing.
            self.client.loop.call_later(step.delay_s, self.reattempt, True)
        else:
            # Flushed here: the next provider's connection is not the one being read.
            self.reattempt(True)
        return True

    def _leave_upstream(self) -> None:
        up = self.up
        if up is None:
            return
        up.streams.pop(self.up_id, None)
        if self.up_id in up.conn.streams:
            up.conn.reset(self.up_id, CANCEL)
            up.dirty = True
        # What the provider sent on this attempt and was not relayed: its window back.
        if self.to_client:
            up.ack(self.up_id, self.to_client.size)
            self.to_client.clear()
        self.up = None
        self.up_id = 0

    def reattempt(self, later: bool) -> None:
        """The next attempt: another provider (outside those tried), the kept request."""
        if self.ended:
            return
        client = self.client
        driver = self.driver
        assert driver is not None and self.kept is not None
        excluded = driver.excluded
        host = client.context.cluster.choose(
            PickContext(exclude=excluded) if excluded else NO_CONTEXT
        )
        if host is None:
            code, message = self.last_failure
            self.fail(code, message)  # every provider tried: the last failure is the answer
            if later:
                client.flush()
            return
        self.host.active_requests -= 1
        host.active_requests += 1
        self.host = host
        waiting = self.to_up.size  # never sent, so never acknowledged to the client
        self.to_up = _Buffer()
        for chunk in self.kept:
            self.to_up.append(chunk)
        self.resent = self.kept_size - waiting
        self.request_ended = self.kept_ended
        client.go_upstream(self, self.headers_for(host), later)

    def headers_for(self, host: Host) -> list[tuple[bytes, bytes]]:
        """The request's headers for an attempt on ``host``: the Triple selectors its
        metadata asks for, what observers send (opening the attempt's record)."""
        headers = list(self.base_headers)
        context = self.client.context
        sent = [(k.decode("latin-1"), v) for k, v in headers]
        for name, text in triple_headers(host.instance.metadata, sent, context.service.attributes):
            headers.append((name.encode(), text.encode()))
        record = self.record
        if record is not None:
            headers = _with_outgoing(headers, record.outgoing(record.begin_attempt(host.id)))
        return headers

    def finish(self, status: int) -> None:
        if self.ended:
            return
        self.ended = True
        self.status = status
        if self.timer is not None:
            self.timer.cancel()
        # A client still sending when answered is not reset (RFC 9113 §8.1 allows
        # RST_STREAM NO_ERROR, but grpc core's client then fails its pending send as
        # INTERNAL): what it still sends is read and dropped, its window given back.
        client = self.client
        client.calls.pop(self.client_id, None)
        if client.draining and not client.calls:
            client.loop.call_soon(client.close_if_drained)
        if self.up is not None:
            self.up.streams.pop(self.up_id, None)
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
            self.client.ack(self.client_id, self.to_up.size - self.resent)
        self.to_up.clear()
        self.to_client.clear()
        self.kept = None
        record = self.record
        if record is not None:
            outcome = _OUTCOMES.get(status, Outcome.APP_ERROR)
            name = _name(status)
            if record.attempts:
                record.end_attempt(record.attempts[-1], outcome, name)
            record.finish(outcome, name)


def _name(status: int) -> str:
    return _STATUS_NAMES[status] if 0 <= status < len(_STATUS_NAMES) else str(status)


def _message_of(headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == b"grpc-message":
            return unquote(value.decode("latin-1"))
    return ""


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


class _Client(Handler):
    """One client's HTTP/2 connection to the listener (an asyncio protocol by its methods)."""

    def __init__(
        self,
        context: ListenerContext,
        pool: H2Pool,
        limit: int,
        descriptors: DescriptorCache | None,
    ) -> None:
        self.context = context
        self.pool = pool
        self.limit = limit
        self.descriptors = descriptors  # fallback values: the reply type by reflection
        self.draining = False
        # Made in the loop (the listener's protocol factory); kept, since each
        # get_running_loop() costs a getpid() syscall (2.9 % of a relayed call's samples).
        self.loop = asyncio.get_running_loop()
        # Rapid reset and control-frame floods are counted by the connection
        # (agent/h2/connection.py), at the HTTP listener's default limits.
        self.conn = Connection(self, client=False, settings=_settings())
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.closed = False
        self.upstreams: set[H2Upstream] = set()  # upstreams this read touched

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
            self._linger()
            return
        upstreams = self.upstreams
        if upstreams:
            self.upstreams = set()
            for upstream in upstreams:
                upstream.flush()
        self.flush()

    def _linger(self) -> None:
        """After a connection error's GOAWAY: end our side (FIN) and close a second later
        or at the client's end, whichever is first; what it sends meanwhile is dropped
        (the connection reads no more). Closed at once with unread bytes, the socket
        would answer with a reset, which can reach the client before the GOAWAY."""
        transport = self.transport
        if transport is None:
            return
        upstreams = {call.up for call in self.calls.values() if call.up is not None}
        for call in list(self.calls.values()):
            call.client_reset()  # the calls end now, not when the socket closes
        for upstream in upstreams:
            upstream.flush()
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER_S, transport.close)

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

    def drain(self) -> None:
        """The agent is draining: GOAWAY (the calls open finish, the client opens new ones
        elsewhere), and the connection closes once its last call has finished."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.conn.goaway()
        self.flush()
        self.close_if_drained()

    def close_if_drained(self) -> None:
        if self.draining and not self.calls and self.transport is not None:
            self.flush()
            self.transport.close()

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
            except Degraded as degraded:
                if degraded.has_value:
                    task = asyncio.get_running_loop().create_task(
                        self._fallback(stream_id, path.decode("latin-1"), degraded.value)
                    )
                    task.add_done_callback(_log_failure)
                    return None
                context.stats.request_errors += 1
                self._refuse(stream_id, f"meshagent: {degraded.reason}: {degraded}")
                return None
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
        call.base_headers = headers
        call.subset_out = pick.exclude
        call.record = record
        headers = call.headers_for(host)
        delay = 0.0
        if record is not None:
            remaining = record.remaining_s()
            if remaining is not None and (timeout is None or remaining < timeout):
                # A shorter budget (a rule's timeout, one that arrived): the agent's own
                # timer ends the call then; grpc-timeout goes upstream as the client sent it.
                timeout = remaining
            decision = decision_of(record)
            if decision is not None:
                delay = decision.delay_s
        loop = self.loop
        if timeout is not None:
            call.timer = loop.call_later(timeout, self._expire, call)
        if ended:
            call.request_ended = True
        if delay > 0:
            # An injected delay: the request waits in the call's buffer meanwhile.
            loop.call_later(delay, self.go_upstream, call, headers, True)
        elif ended:
            self.go_upstream(call, headers)
        else:
            call.waiting = headers  # opened by the request's first bytes (start_when_read)
        return call

    async def _fallback(self, stream_id: int, method: str, value: object) -> None:
        """Answer a degradation's fallback value as the method's one reply."""
        context = self.context
        try:
            reply = await encode_fallback(context, self.descriptors, method, value)
        except MeshAgentError as exc:
            log.warning(
                "fallback value not answered: %s",
                exc,
                extra={"listener": context.listener.display_name, "method": method},
            )
            context.stats.request_errors += 1
            if stream_id in self.conn.streams:
                self._refuse(
                    stream_id, f"meshagent: degraded: the fallback value cannot be encoded: {exc}"
                )
                self.flush()
            return
        if stream_id not in self.conn.streams or self.closed:
            return  # the client gave up meanwhile
        message = b"\x00" + len(reply).to_bytes(4, "big") + reply
        if self.conn.window(stream_id) < len(message):
            self._refuse(stream_id, "meshagent: degraded: no window for the fallback value")
        else:
            self.conn.send_headers(
                stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")]
            )
            self.conn.send_data(stream_id, message)
            self.conn.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
        self.flush()

    def go_upstream(
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
        elif self._over_connection_limit(call):
            if later:
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
            upstream = await self.pool.connect(
                host.instance.host,
                host.instance.port,
                target(host.instance.host, host.instance.port),
            )
        except (OSError, TimeoutError, EndpointBusy) as exc:
            if not call.ended:
                call.attempt_failed(
                    Failure(FailureKind.CONNECT, sent=False),
                    UNAVAILABLE,
                    f"meshagent: cannot connect to {host.id}: {exc}",
                )
                self.flush()
            return
        if call.ended:
            return
        self._attach(call, upstream, headers)
        upstream.flush()
        self.flush()

    def _over_connection_limit(self, call: _Call) -> bool:
        """Refuse the call when a connection to its provider would pass the cluster's
        ``max_connections`` (asked only when a connection is to be made)."""
        record = call.record
        if record is None:
            return False
        cluster = self.context.cluster
        pool = self.pool
        refused = connection_refusal(
            record,
            cluster.name,
            lambda: pool.open_to(
                [target(h.instance.host, h.instance.port) for h in cluster.hosts()]
            ),
        )
        if refused is None:
            return False
        self.context.stats.request_errors += 1
        record.fail(CallRejected("overloaded", refused))
        call.fail(UNAVAILABLE, f"meshagent: overloaded: {refused}")
        return True

    def _attach(
        self, call: _Call, upstream: H2Upstream, headers: list[tuple[bytes, bytes]]
    ) -> None:
        try:
            stream_id = upstream.conn.open_stream()
            end = call.request_ended and not call.to_up
            upstream.conn.send_headers(stream_id, headers, end_stream=end)
        except StreamLimit as exc:
            call.attempt_failed(
                Failure(FailureKind.CONNECT, sent=False),
                UNAVAILABLE,
                f"meshagent: no stream to {call.host.id}: {exc}",
            )
            return
        if end:
            call.request_ended = False
        call.up = upstream
        call.up_id = stream_id
        upstream.streams[stream_id] = call
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


def drain_connection(protocol: object) -> None:
    """Drain one of the listener's client connections (a capture listener's set may hold
    other protocols' connections too)."""
    if isinstance(protocol, _Client):
        protocol.drain()


def protocol_factory(
    context: ListenerContext,
    pool: H2Pool,
    max_message_bytes: int,
    descriptors: DescriptorCache | None = None,
) -> Callable[[], asyncio.Protocol]:
    def make() -> asyncio.Protocol:
        return cast(asyncio.Protocol, _Client(context, pool, max_message_bytes, descriptors))

    return make
