"""The Dubbo-aware outbound listener: one client connection, many requests, each routed.

Per request frame the proxy reads the 16-byte header and the invocation head (dubbo
version, service path, service version, method: the first five hessian2 strings of the
body), never the arguments. It picks a provider through the cluster for *each* request
(so one long-lived Dubbo client connection is balanced over all providers), sends the
frame on the shared multiplexed connection to that provider (the pool rewrites the
request id) and writes the answer back under the client's own id.

What is read, and what it costs:

- header + head: O(head), always.
- ``timeout``: an attachment, i.e. at the *end* of the body after every argument. It is
  found by a backwards byte search for the hessian2 key (see ``body.timeout_attachment``),
  not by decoding the arguments.
- ``group``: also an attachment. Only when the service config names a group is the whole
  body decoded (arguments included, O(body)) to check it; without one, no group check.

The agent answers itself, with a Dubbo error response the Java client turns into an
RpcException: heartbeats (answered, never forwarded); no provider (SERVICE_NOT_FOUND);
no connection within the deadline (CLIENT_TIMEOUT); no answer within it (SERVER_TIMEOUT);
connection lost mid-call (SERVICE_ERROR); no provider reachable (SERVER_ERROR); too many
requests in flight on this connection (SERVER_THREADPOOL_EXHAUSTED_ERROR); a body the
agent cannot read (BAD_REQUEST). Broken framing (bad magic, negative or oversized length,
a truncated frame at EOF) closes the connection, after an error response when the request
id is known.
"""

from __future__ import annotations

import asyncio
import logging

from agent.calls import Attempt, Call, CallRejected, Direction, Outcome, Route
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.codec import NEED_DATA
from agent.errors import (
    ConnectError,
    NoEndpointError,
    RemoteProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from agent.exchange import Action, Exchange
from agent.governance.policy import Decision, Degraded, decision_of
from agent.governance.retry import Failure, FailureKind
from agent.runtime.client_connection import (
    PAUSE_CLIENT_WRITE,
    PAUSE_UPSTREAM,
    BatchedClientConnection,
)
from agent.runtime.deadlines import Deadlines
from agent.runtime.protocols import ListenerContext
from agent.telemetry.propagation import HOPS, PATH, TRACEPARENT, TRACESTATE
from plugins.dubbo.body import (
    GENERIC_METHODS,
    InvocationHead,
    decode_invocation,
    decode_invocation_head_sized,
    error_response_frame,
    generic_method,
    heartbeat_response,
    string_attachments,
    timeout_attachment,
    value_response_frame,
    with_attachments,
)
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.frame import (
    HESSIAN2,
    BodyTooLarge,
    Frame,
    FrameDecoder,
    Status,
    frame_with_id,
)
from plugins.dubbo.governance import over_connection_limit, rejection_status
from plugins.dubbo.strategies import status_failure
from plugins.dubbo.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)

# Provider answers that say the provider itself is in trouble (passive outlier detection
# counts them); any other answer, an application exception included, is a working provider.
_FAILURE_STATUSES = frozenset(
    {Status.SERVER_TIMEOUT, Status.SERVER_ERROR, Status.SERVER_THREADPOOL_EXHAUSTED_ERROR}
)

# Why reading from the client is paused (a bit each; reading resumes when none is left).

# Invocation heads by their leading body bytes: a client sends the same few
# (service, version, method) heads over and over, so most requests skip the decode.
# Bounded in entries and in key size, so a hostile client cannot grow it much.
_HEAD_CACHE_MAX = 256
_HEAD_CACHE_KEY_MAX = 512

# The propagation attachments read from a client's request (agent/telemetry/propagation.py).
_PROPAGATED = (TRACEPARENT, TRACESTATE, HOPS, PATH)
# How a provider's response status counts (metrics, spans): OK may still carry an
# exception (an answer, counted ok: the proxy does not decode the result).
_OUTCOMES: dict[int, Outcome] = {
    Status.OK: Outcome.OK,
    Status.CLIENT_TIMEOUT: Outcome.TIMEOUT,
    Status.SERVER_TIMEOUT: Outcome.TIMEOUT,
    Status.SERVICE_NOT_FOUND: Outcome.APP_ERROR,
    Status.SERVICE_ERROR: Outcome.APP_ERROR,
    Status.BAD_REQUEST: Outcome.APP_ERROR,
    Status.BAD_RESPONSE: Outcome.UPSTREAM_ERROR,
    Status.SERVER_ERROR: Outcome.UPSTREAM_ERROR,
    Status.CLIENT_ERROR: Outcome.APP_ERROR,
    Status.SERVER_THREADPOOL_EXHAUSTED_ERROR: Outcome.UPSTREAM_ERROR,
}
# Routes cached per client connection (see DubboProxyConnection._route).
_ROUTES_MAX = 256


class _HeadCache:
    """Heads keyed by the exact bytes they were decoded from.

    The head's length is only known after decoding it, so the cache remembers which
    lengths it has seen (a handful per service) and tries each as a prefix.
    """

    def __init__(self) -> None:
        self.heads: dict[bytes, InvocationHead] = {}
        self.lengths: list[int] = []

    def get(self, body: bytes) -> InvocationHead:
        heads = self.heads
        for length in self.lengths:
            head = heads.get(body[:length])
            if head is not None:
                return head
        head, length = decode_invocation_head_sized(body)
        if len(heads) < _HEAD_CACHE_MAX and length <= _HEAD_CACHE_KEY_MAX:
            heads[body[:length]] = head
            if length not in self.lengths:
                self.lengths.append(length)
        return head


def _method_of(head: InvocationHead, body: bytes) -> str:
    # A generic call ($invoke) is counted and traced under the method it calls.
    if head.method in GENERIC_METHODS:
        return generic_method(body) or head.method
    return head.method


_NONE: frozenset[str] = frozenset()


class _Call:
    """One two-way request from the client, from dispatch to its answer."""

    __slots__ = (
        "attempt",
        "client_id",
        "connection",
        "deadline",
        "done",
        "exchange",
        "frame",
        "host",
        "method",
        "proxy",
        "record",
        "timeout_ms",
        "upstream_id",
    )

    def __init__(
        self,
        proxy: DubboProxyConnection,
        frame: Frame,
        method: str,
        timeout_ms: int,
        deadline: float,
        record: Call,
    ) -> None:
        self.proxy = proxy
        # The call as the Calls hub sees it (metrics, tracing), and its current attempt.
        self.record = record
        self.attempt: Attempt | None = None
        # Its attempts' driver (agent/exchange.py), made at its first retryable failure
        # under a governance retry rule (the listener has no retries of its own).
        self.exchange: Exchange | None = None
        self.frame = frame
        self.client_id = frame.header.request_id
        self.method = method
        self.timeout_ms = timeout_ms
        self.done = False
        self.host: Host | None = None
        self.connection: UpstreamConnection | None = None
        self.upstream_id = 0
        self.deadline = deadline  # loop time; the connection's Deadlines expire it

    def settle(self, outcome: Frame | UpstreamError) -> None:
        """The provider answered, or its connection failed under this call."""
        if self.done:
            return
        proxy = self.proxy
        host = self.host
        assert host is not None
        cluster = proxy.context.cluster
        if self._retry(outcome, host):
            return
        self._finish()
        if isinstance(outcome, Frame):
            status = outcome.header.status
            if status in _FAILURE_STATUSES:
                cluster.report_failure(host)
            else:
                cluster.report_success(host)
            self._record(_OUTCOMES.get(status, Outcome.UPSTREAM_ERROR), str(status))
            proxy.write(frame_with_id(outcome, self.client_id))
        else:
            cluster.report_failure(host)
            self._record(Outcome.UPSTREAM_ERROR, "", outcome)
            proxy.answer_error(
                self.client_id,
                Status.SERVICE_ERROR,
                f"meshagent: call {self.method} to {host.id} failed: {outcome}",
            )

    def expire(self) -> None:
        """The deadline passed."""
        if self.done:
            return
        proxy = self.proxy
        host, connection = self.host, self.connection
        self._finish()
        if connection is not None and host is not None:
            connection.cancel(self.upstream_id)
            proxy.context.cluster.report_failure(host)
            self._record(Outcome.TIMEOUT, str(Status.SERVER_TIMEOUT))
            proxy.answer_error(
                self.client_id,
                Status.SERVER_TIMEOUT,
                f"meshagent: provider {host.id} did not answer {self.method} "
                f"within {self.timeout_ms} ms",
            )
        else:
            self._record(Outcome.TIMEOUT, str(Status.CLIENT_TIMEOUT))
            proxy.answer_error(
                self.client_id,
                Status.CLIENT_TIMEOUT,
                f"meshagent: no connection to a provider of {proxy.service_name} "
                f"within {self.timeout_ms} ms",
            )

    def _retry(self, outcome: Frame | UpstreamError, host: Host) -> bool:
        """Under a governance retry rule: after a retryable status or a lost connection,
        send again (to another provider when there is one) after the rule's backoff,
        within the call's deadline. True when a retry is under way."""
        decision = decision_of(self.record)
        if decision is None or decision.retry_attempts is None:
            return False
        failure: Failure | None
        if isinstance(outcome, Frame):
            status = outcome.header.status
            failure = status_failure(status) if status != Status.OK else None
        else:
            status, failure = Status.SERVICE_ERROR, Failure(FailureKind.RESET, sent=True)
        if failure is None:
            return False
        exchange = self.exchange
        if exchange is None:
            exchange = self.exchange = Exchange(self.record)
        step = exchange.failed(host.id, failure)
        if step.action is Action.GIVE_UP:
            return False
        proxy = self.proxy
        if self.attempt is not None:
            self.record.end_attempt(
                self.attempt, _OUTCOMES.get(status, Outcome.UPSTREAM_ERROR), str(int(status))
            )
            self.attempt = None
        if status in _FAILURE_STATUSES or not isinstance(outcome, Frame):
            proxy.context.cluster.report_failure(host)
        # Off the provider that failed: the call waits for its retry holding no upstream.
        host.active_requests -= 1
        self.connection = None
        self.host = None
        proxy.retry_later(self, step.delay_s)
        return True

    def _record(self, outcome: Outcome, status: str, error: BaseException | None = None) -> None:
        record = self.record
        if self.attempt is not None:
            record.end_attempt(self.attempt, outcome, status)
        if error is None and outcome is Outcome.TIMEOUT:
            error = UpstreamTimeout(f"{self.method}: no answer within {self.timeout_ms} ms")
        record.finish(outcome, status, error)

    def _finish(self) -> None:
        self.done = True
        if self.connection is not None and self.host is not None:
            self.host.active_requests -= 1
        self.proxy.call_done(self)

    def abandon(self) -> None:
        """The client went away: stop waiting, say nothing."""
        if self.done:
            return
        self.done = True
        self._record(Outcome.CANCELLED, "")
        if self.connection is not None:
            self.connection.cancel(self.upstream_id)
            if self.host is not None:
                self.host.active_requests -= 1


class DubboProxyConnection(BatchedClientConnection):
    """A client's connection to a Dubbo listener."""

    def __init__(self, context: ListenerContext, config: DubboConfig, pool: UpstreamPool) -> None:
        super().__init__(context, pool.batch)
        self.config = config
        self.pool = pool
        self.service_name = context.service.name
        # On the inbound listener: every interface the local app serves is taken.
        self.inbound = context.direction is Direction.INBOUND
        attributes = context.service.attributes
        version = attributes.get("version", "")
        self.version = "" if version == "*" else version
        group = attributes.get("group", "")
        # Only a configured group makes the proxy read the attachments (the whole body).
        self.groups: frozenset[str] | None = None
        if group not in ("", "*"):
            self.groups = frozenset(g.strip() for g in group.split(","))
        self.decoder = FrameDecoder(config.max_body_bytes)
        self.heads = _HeadCache()
        self.loop = asyncio.get_running_loop()
        self.calls: set[_Call] = set()
        # closed: the stream is refused or gone, read nothing more; lost: connection_lost ran.
        self.closed = False
        self.eof = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent_to: set[UpstreamConnection] = set()  # written to in the current read
        # Deadlines without a timer per request (one timer for the earliest deadline).
        self.deadlines = Deadlines(self.loop, self.batch)
        self._routes: dict[tuple[str, str], Route] = {}

    # -- asyncio.Protocol --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.context.stats.bytes_in += len(data)
        decoder = self.decoder
        decoder.receive_data(data)
        batch = self.batch
        outer = not batch.active
        batch.active = True
        try:
            while not self.closed:
                frame = decoder.next_event()
                if frame is NEED_DATA:
                    break
                assert isinstance(frame, Frame)
                self._frame_received(frame)
        except RemoteProtocolError as exc:
            request_id = exc.header.request_id if isinstance(exc, BodyTooLarge) else None
            self._refuse_stream(str(exc), request_id)
        finally:
            if outer:
                batch.finish()
                if self._sent_to:
                    self._check_upstreams()
        if not self.closed:
            self.hold(decoder.buffered)

    def partial_timed_out(self, held_s: float) -> None:
        pending = self.decoder.pending_header
        self._refuse_stream(
            f"frame not received whole within {self.context.listener.request_timeout_s:g} s "
            f"({self.decoder.buffered} bytes in {held_s:.1f} s)",
            pending.request_id if pending is not None and pending.request else None,
        )

    def _check_upstreams(self) -> None:
        """After the read's frames went out: pause reading while a provider is over high water."""
        sent_to = self._sent_to
        if not self.paused & PAUSE_UPSTREAM:
            for connection in sent_to:
                if not connection.writable:
                    self.pause(PAUSE_UPSTREAM)
                    connection.when_writable(self._upstream_drained)
                    break
        sent_to.clear()

    def eof_received(self) -> bool:
        self.eof = True
        pending = self.decoder.pending_header
        if pending is not None or self.decoder.buffered:
            self._refuse_stream(
                f"connection ended inside a frame ({self.decoder.buffered} bytes buffered)",
                pending.request_id if pending is not None and pending.request else None,
            )
            return False
        # Half-closed by the client: answer what is in flight, then close.
        return bool(self.calls)

    def pause_writing(self) -> None:
        self.pause(PAUSE_CLIENT_WRITE)

    def resume_writing(self) -> None:
        self.resume(PAUSE_CLIENT_WRITE)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.closed = True
        stats = self.context.stats
        stats.active -= 1
        assert self.transport is not None
        self.context.untrack(self.transport)
        self.release_held()
        calls, self.calls = self.calls, set()
        for call in calls:
            call.abandon()
        self.deadlines.clear()
        for task in self._tasks:
            task.cancel()

    # -- requests ----------------------------------------------------------------------

    def _frame_received(self, frame: Frame) -> None:
        header = frame.header
        if not header.request:
            return  # a client answers only our heartbeats, and we send none
        if header.event:
            # Heartbeats are between the client and us; the pool keeps its own alive.
            if header.two_way:
                self.write(heartbeat_response(header.request_id, header.serialization))
            return
        self.context.stats.requests += 1
        request_id = header.request_id
        if header.serialization != HESSIAN2:
            self._bad_request(
                request_id,
                f"serialization id {header.serialization} is not supported by the agent; "
                f"use hessian2 ({HESSIAN2})",
            )
            return
        try:
            head = self.heads.get(frame.body)
            if self.groups is not None:
                group = decode_invocation(frame.body).group
                if group not in self.groups:
                    self.answer_error(
                        request_id,
                        Status.SERVICE_NOT_FOUND,
                        f"meshagent: this listener serves {self.service_name} in group(s) "
                        f"{','.join(sorted(self.groups))}, not group {group!r}",
                    )
                    return
        except RemoteProtocolError as exc:
            self._bad_request(request_id, f"malformed request body: {exc}")
            return
        if self.inbound:
            pass  # in front of the local app, which serves whatever it serves
        elif head.path != self.service_name or (self.version and head.version != self.version):
            self.answer_error(
                request_id,
                Status.SERVICE_NOT_FOUND,
                f"meshagent: this listener serves {self.service_name}"
                f"{':' + self.version if self.version else ''}, not {head.path}:{head.version}",
            )
            return
        if not header.two_way:
            self._send_oneway(frame, head)
            return
        if len(self.calls) >= self.config.max_in_flight:
            self.answer_error(
                request_id,
                Status.SERVER_THREADPOOL_EXHAUSTED_ERROR,
                f"meshagent: {self.config.max_in_flight} requests already in flight on this "
                "connection (dubbo listener max_in_flight)",
            )
            return
        calls = self.context.calls
        timeout_ms = timeout_attachment(frame.body) or self.config.timeout_ms
        try:
            record = calls.start(
                "dubbo",
                self.context.direction,
                self._route(head.path, _method_of(head, frame.body)),
                string_attachments(frame.body, _PROPAGATED),
                timeout_ms / 1000,
            )
        except CallRejected as rejected:
            self._refused(request_id, rejected)
            return
        decision = decision_of(record)
        if record.deadline is not None:
            budget_ms = (record.deadline - record.started) * 1000
            if budget_ms < timeout_ms - 0.5:
                # A shorter budget came with the call (or a rule's timeout). Whole 10 ms
                # steps, rounded down: deadline queues are per distinct timeout; the agent
                # never waits past it.
                timeout_ms = max(1, int(budget_ms / 10) * 10)
        deadline = self.loop.time() + timeout_ms / 1000
        call = _Call(self, frame, head.method, timeout_ms, deadline, record)
        if decision is not None and decision.delay_s > 0:  # an injected delay
            self._track_deadline(call, timeout_ms, deadline)
            self.loop.call_later(decision.delay_s, self._dispatch, call, decision)
            return
        host = self._choose(call, decision)
        if host is None:
            record.fail(NoEndpointError(f"no provider available for {self.service_name}"))
            self._no_provider(request_id)
            return
        self._track_deadline(call, timeout_ms, deadline)
        self._send_or_connect(call, host)

    def _choose(self, call: _Call, decision: Decision | None) -> Host | None:
        cluster = self.context.cluster
        tried = call.exchange.tried if call.exchange is not None else _NONE
        if decision is None or not decision.splits:
            return cluster.choose(NO_CONTEXT if not tried else PickContext(exclude=tried))
        header = None
        if decision.uses_headers:
            # Canary matches read attachments: the whole body is decoded (O(body)), only
            # for rules that match on them.
            try:
                attachments = decode_invocation(call.frame.body).attachments
            except RemoteProtocolError:
                attachments = {}
            lowered = {str(k).lower(): str(v) for k, v in attachments.items()}
            header = lowered.get
        excluded = decision.excluded(
            cluster.hosts(), lambda h: h.instance.metadata, header or (lambda name: None)
        )
        host = cluster.choose(PickContext(exclude=excluded | tried))
        if host is None and tried:
            host = cluster.choose(PickContext(exclude=excluded))  # round again, as failover
        return host

    def _dispatch(self, call: _Call, decision: Decision | None) -> None:
        """Send a call that waited (an injected delay, a retry's backoff)."""
        if call.done or self.lost:
            return
        host = self._choose(call, decision)
        if host is None:
            call.done = True
            self.calls.discard(call)
            call.record.fail(NoEndpointError(f"no provider available for {self.service_name}"))
            self._no_provider(call.client_id)
            self._maybe_close()
            return
        self._send_or_connect(call, host)

    def retry_later(self, call: _Call, delay_s: float) -> None:
        decision = decision_of(call.record)
        if delay_s > 0:
            self.loop.call_later(delay_s, self._dispatch, call, decision)
        else:
            self._dispatch(call, decision)

    def _refused(self, request_id: int, rejected: CallRejected) -> None:
        """A policy answered instead of a provider (governance, loop protection)."""
        if isinstance(rejected, Degraded) and rejected.has_value:
            try:
                self.write(value_response_frame(request_id, rejected.value))
                return
            except Exception as exc:  # a value hessian2 cannot carry: say so, as an error
                rejected = CallRejected("degraded", f"fallback value not encodable: {exc}")
        self.answer_error(
            request_id, rejection_status(rejected), f"meshagent: {rejected.reason}: {rejected}"
        )

    def _track_deadline(self, call: _Call, timeout_ms: int, deadline: float) -> None:
        self.calls.add(call)
        self.deadlines.add(call, timeout_ms)

    def _send_or_connect(self, call: _Call, host: Host) -> None:
        connection = self.pool.live(host)
        if connection is None:
            refused = over_connection_limit(call.record, self.context.cluster, self.pool)
            if refused is not None:
                call.done = True
                self.calls.discard(call)
                rejection = CallRejected("overloaded", refused)
                call.record.fail(rejection)
                self._refused(call.client_id, rejection)
                self._maybe_close()
                return
            self._spawn(self._connect_and_send(call, host))
        else:
            self._send(call, host, connection)

    def _route(self, interface: str, method: str) -> Route:
        # A client calls the same few methods over and over: one Route each (bounded).
        # Inbound, the local app may serve several interfaces: the method names its own.
        key = (interface if self.inbound else "", method)
        route = self._routes.get(key)
        if route is None:
            name = f"{interface}.{method}" if self.inbound else method
            route = self.context.call_route(self.service_name, name)
            if len(self._routes) < _ROUTES_MAX:
                self._routes[key] = route
        return route

    def _send(self, call: _Call, host: Host, connection: UpstreamConnection) -> None:
        record = call.record
        attempt = call.attempt = record.begin_attempt(host.id)
        frame = call.frame
        outgoing = record.outgoing(attempt)
        if outgoing:
            # What observers want sent (trace context, hop count) as attachments, and the
            # budget left as Dubbo's own ``timeout``.
            body = with_attachments(frame.body, outgoing)
            if body is not None:
                frame = Frame(frame.header, body)
        try:
            call.upstream_id = connection.send(frame, call.settle)
        except UpstreamError as exc:
            record.end_attempt(attempt, Outcome.UPSTREAM_ERROR)
            call.attempt = None
            raise exc from None
        call.host = host
        call.connection = connection
        host.active_requests += 1
        if self.batch.active:
            self._sent_to.add(connection)  # written when the read is handled; checked then
        elif not connection.writable and not self.paused & PAUSE_UPSTREAM:
            self.pause(PAUSE_UPSTREAM)
            connection.when_writable(self._upstream_drained)

    async def _connect_and_send(self, call: _Call, host: Host) -> None:
        """The slow path: no open connection to the chosen provider. Connect failures move
        on to other providers (up to the service's connect_attempts) and are reported to
        the cluster, whose outlier detection ejects a provider that keeps failing."""
        cluster = self.context.cluster
        tried: set[str] = set()
        attempts = self.context.service.connect_attempts
        last_error = ""
        chosen: Host | None = host
        while chosen is not None and not call.done:
            try:
                connection = await self.pool.get(chosen)
                if not call.done:
                    self._send(call, chosen, connection)
                return
            except ConnectError as exc:
                record = call.record
                record.end_attempt(record.begin_attempt(chosen.id), Outcome.CONNECT_ERROR)
                cluster.report_failure(chosen, connect=True)
                last_error = str(exc)
                tried.add(chosen.id)
                log.info(
                    "connect to provider failed: %s",
                    exc,
                    extra={"listener": self.context.listener.display_name, "endpoint": chosen.id},
                )
            except UpstreamError as lost:  # closed between connect and send
                last_error = str(lost)
                tried.add(chosen.id)
            if len(tried) >= attempts:
                break
            chosen = cluster.choose(PickContext(exclude=frozenset(tried)))
        if call.done:
            return
        call.done = True
        self.calls.discard(call)
        if chosen is None and not tried:
            call.record.fail(NoEndpointError(f"no provider available for {self.service_name}"))
            self._no_provider(call.client_id)
            return
        call.record.fail(ConnectError(f"no provider reachable: {last_error}"))
        self.answer_error(
            call.client_id,
            Status.SERVER_ERROR,
            f"meshagent: no provider of {self.service_name} reachable "
            f"({len(tried)} tried): {last_error}",
        )
        self._maybe_close()

    def _send_oneway(self, frame: Frame, head: InvocationHead) -> None:
        host = self.context.cluster.choose(NO_CONTEXT)
        connection = self.pool.live(host) if host is not None else None
        if connection is not None:
            connection.send_oneway(frame)
            return
        if host is None:
            self.context.stats.request_errors += 1
            log.warning(
                "one-way request dropped: no provider",
                extra={"listener": self.context.listener.display_name, "method": head.method},
            )
            return
        self._spawn(self._connect_and_send_oneway(frame, host))

    async def _connect_and_send_oneway(self, frame: Frame, host: Host) -> None:
        try:
            connection = await self.pool.get(host)
            connection.send_oneway(frame)
        except UpstreamError as exc:
            if isinstance(exc, ConnectError):
                self.context.cluster.report_failure(host, connect=True)
            self.context.stats.request_errors += 1
            log.warning(
                "one-way request dropped: %s",
                exc,
                extra={"listener": self.context.listener.display_name, "endpoint": host.id},
            )

    # -- answers and flow control ------------------------------------------------------

    def answer_error(self, request_id: int, status: Status, message: str) -> None:
        self.context.stats.request_errors += 1
        self.write(error_response_frame(request_id, status, message))

    def call_done(self, call: _Call) -> None:
        self.calls.discard(call)
        if self.eof and not self.calls:
            self._maybe_close()

    def _maybe_close(self) -> None:
        if self.eof and not self.calls and self.transport is not None:
            self.flush()
            self.transport.close()

    def _no_provider(self, request_id: int) -> None:
        log.warning(
            "no provider available",
            extra={"listener": self.context.listener.display_name, "service": self.service_name},
        )
        self.answer_error(
            request_id,
            Status.SERVICE_NOT_FOUND,
            f"meshagent: no provider available for {self.service_name}",
        )

    def _bad_request(self, request_id: int, reason: str) -> None:
        log.warning(
            "bad request refused: %s",
            reason,
            extra={
                "listener": self.context.listener.display_name,
                "client": self.peer,
                "request_id": request_id,
            },
        )
        self.answer_error(request_id, Status.BAD_REQUEST, f"meshagent: {reason}")

    def _refuse_stream(self, reason: str, request_id: int | None) -> None:
        """The byte stream cannot be read on (Dubbo has no resynchronisation point)."""
        self.context.stats.rejected += 1
        log.warning(
            "closing client connection: %s",
            reason,
            extra={
                "listener": self.context.listener.display_name,
                "client": self.peer,
                "request_id": request_id,
            },
        )
        if request_id is not None:
            self.answer_error(request_id, Status.BAD_REQUEST, f"meshagent: {reason}")
        self.closed = True  # read no further frames; connection_lost still runs
        if self.transport is not None:
            # close() lets the error response flush; calls in flight are abandoned.
            self.flush()
            self.transport.close()

    def _upstream_drained(self) -> None:
        self.resume(PAUSE_UPSTREAM)

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
