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
import secrets
import time
from collections.abc import Mapping
from typing import Any

from agent.calls import Call, CallRejected, Outcome
from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.codec import NEED_DATA
from agent.config import ServiceConfig
from agent.errors import (
    ConfigError,
    ConnectError,
    InvalidRequest,
    RemoteProtocolError,
    UpstreamError,
)
from agent.exchange import Action, Exchange
from agent.governance.policy import Degraded, connection_refusal
from agent.governance.retry import Failure, FailureKind
from agent.runtime.client_connection import (
    PAUSE_UPSTREAM,
    PAUSE_YIELD,
    BatchedClientConnection,
)
from agent.runtime.deadlines import Deadlines
from agent.runtime.protocols import ListenerContext
from agent.telemetry.propagation import propagation_headers
from plugins.thrift import governance
from plugins.thrift.base import BaseValues, read_extra, with_base
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
from plugins.thrift.config import ThriftConfig, ThriftServiceOptions
from plugins.thrift.upstream import UpstreamConnection, UpstreamPool, WireForm

log = logging.getLogger(__name__)

# A partial message holding more than this makes the connection read one chunk per turn
# of the loop (ThriftProxyConnection._yield_if_large).
_YIELD_BYTES = 256 * 1024

_PROTOS: dict[str, Proto | None] = {"binary": Proto.BINARY, "compact": Proto.COMPACT, "auto": None}
_TRANSPORTS: dict[str, Transport | None] = {
    "framed": Transport.FRAMED,
    "buffered": Transport.BUFFERED,
    "auto": None,
}


class _Call:
    """One two-way call from the client, from dispatch to its answer."""

    __slots__ = (
        "base",
        "cluster",
        "connection",
        "deadline",
        "done",
        "exchange",
        "header",
        "host",
        "message",
        "proxy",
        "record",
        "request",
        "seqid",
        "target",
        "timeout_ms",
    )

    def __init__(
        self, proxy: ThriftProxyConnection, message: Message, target: Target, timeout_ms: int
    ) -> None:
        self.proxy = proxy
        self.target = target
        self.cluster = target.cluster
        self.request = message  # as the client sent it
        self.message = message  # as the current attempt sends it
        self.header = message.header
        self.done = False
        self.host: Host | None = None
        self.connection: UpstreamConnection | None = None
        self.seqid = 0
        self.timeout_ms = timeout_ms  # the listener's, or the shorter budget that arrived
        # Loop time; the client connection's Deadlines expire it.
        self.deadline = proxy.loop.time() + timeout_ms / 1000
        self.record: Call | None = None  # the call record (agent/calls.py)
        self.base = False  # the method's IDL has Base: filled in when the call is sent
        # Its attempts (agent/exchange.py), set once the call record is known.
        self.exchange = _NO_EXCHANGE

    def settle(self, outcome: Message | UpstreamError) -> None:
        if self.done:
            return
        host = self.host
        assert host is not None
        proxy = self.proxy
        if isinstance(outcome, UpstreamError) and proxy.retry_lost(self, host):
            return
        self._finish()
        if self.record is not None:
            self.record.finish(
                Outcome.OK if isinstance(outcome, Message) else Outcome.UPSTREAM_ERROR
            )
        if isinstance(outcome, Message):
            self.cluster.report_success(host)
            proxy.write(with_seqid(outcome, self.header.seqid, proxy.kind[1]))
        else:
            self.cluster.report_failure(host)
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
        timeout_ms = self.timeout_ms
        if connection is not None and host is not None:
            connection.cancel(self.seqid)
            self.cluster.report_failure(host)
            proxy.answer_error(
                self.header,
                f"meshagent: provider {host.id} did not answer {self.header.name} "
                f"within {timeout_ms} ms",
            )
        else:
            proxy.answer_error(
                self.header,
                f"meshagent: no connection to a provider of {self.target.name} "
                f"within {timeout_ms} ms",
            )

    def _finish(self) -> None:
        self.done = True
        if self.connection is not None and self.host is not None:
            self.host.active_requests -= 1
        self.proxy.call_done(self)

    def fail(self, outcome: Outcome, message: str) -> None:
        """End the call with the agent's own error (no provider was reached)."""
        if self.done:
            return
        self.done = True
        if self.record is not None:
            self.record.finish(outcome)
        proxy = self.proxy
        proxy.call_done(self)
        proxy.answer_error(self.header, message)

    def abandon(self) -> None:
        """The client went away: stop waiting, say nothing."""
        if self.done:
            return
        self.done = True
        if self.record is not None:
            self.record.finish(Outcome.CANCELLED)
        if self.connection is not None:
            self.connection.cancel(self.seqid)
            if self.host is not None:
                self.host.active_requests -= 1


class ThriftProxyConnection(BatchedClientConnection):
    """A client's connection to a Thrift listener."""

    def __init__(
        self,
        context: ListenerContext,
        config: ThriftConfig,
        pool: UpstreamPool,
        routes: Routes | None = None,
    ) -> None:
        super().__init__(context, pool.batch)
        self.config = config
        self.pool = pool
        self.routes = routes if routes is not None else Routes.build(context, config)
        self.service_name = context.service.name
        self.decoder = MessageDecoder(
            _PROTOS[config.protocol], _TRANSPORTS[config.transport], config.max_message_bytes
        )
        self.loop = asyncio.get_running_loop()
        self.calls: set[_Call] = set()
        self.closed = False
        self.eof = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent_to: set[UpstreamConnection] = set()  # written to in the current read
        # Deadlines without a timer per call (one timer for the earliest deadline).
        self.deadlines = Deadlines(self.loop, self.batch)
        # The pool's endpoint kind: this client's wire form, which its calls keep on the
        # way to providers. Known from the first message on (set there; a placeholder till
        # then, which nothing reads).
        self.kind: WireForm = (Proto.BINARY, Transport.FRAMED)
        self._kind_known = False

    @property
    def wire(self) -> Transport:
        # Known once the first message is decoded (the only time it is asked).
        assert self.decoder.transport is not None
        return self.decoder.transport

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
                message = decoder.next_event()
                if message is NEED_DATA:
                    break
                assert isinstance(message, Message)
                self._message_received(message)
        except RemoteProtocolError as exc:
            self._refuse_stream(str(exc), AppError.PROTOCOL_ERROR)
        finally:
            if outer:
                batch.finish()
                if self._sent_to:
                    self._check_upstreams()
        if self.closed:
            return
        buffered = decoder.buffered
        self.hold(buffered)
        if buffered > _YIELD_BYTES and not self.paused & PAUSE_YIELD:
            # A large message is arriving: one chunk per turn of the loop. libuv reads a
            # readable socket up to 32 times in one go, and the decoder's walk of each
            # chunk, though linear, then ran for most of a second on a 16 MB message
            # before anything else (a /healthz) got the loop (issue 25).
            self.pause(PAUSE_YIELD)
            self.loop.call_soon(self.resume, PAUSE_YIELD)

    def partial_timed_out(self, held_s: float) -> None:
        self._refuse_stream(
            f"message not received whole within {self.context.listener.request_timeout_s:g} s "
            f"({self.decoder.buffered} bytes in {held_s:.1f} s)",
            AppError.PROTOCOL_ERROR,
        )

    def _check_upstreams(self) -> None:
        """After the read's calls went out: pause reading while a provider is over high water."""
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
        self.release_held()
        calls, self.calls = self.calls, set()
        for call in calls:
            call.abandon()
        self.deadlines.clear()
        for task in self._tasks:
            task.cancel()

    # -- calls ---------------------------------------------------------------------------

    def _message_received(self, message: Message) -> None:
        header = message.header
        self.context.stats.requests += 1
        if not self._kind_known:
            self.kind = (header.proto, self.wire)
            self._kind_known = True
        routes = self.routes
        target = routes.by_method.get(header.name, routes.default)
        base = bool(target.base_methods) and _method(header.name) in target.base_methods
        if header.type == MessageType.ONEWAY:
            if base:
                message = self._with_base(message, target, {}, target.timeout_ms)
            self._send_oneway(message, target)
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
        timeout_ms = target.timeout_ms
        # Only a Base can carry the previous hop's context (plain Thrift has no headers).
        incoming = propagation_headers(read_extra(message)) if base else None
        record = governance.start(self.context, target.name, header.name, timeout_ms, incoming)
        if isinstance(record, CallRejected):
            self._refused(header, target, record)
            return
        if record is not None:
            # A budget that arrived (or a policy) may leave less than the listener's timeout.
            deadline = record.deadline
            if deadline is not None:  # the budget granted when the call started (just now)
                budget_ms = int((deadline - record.started) * 1000 + 1e-6)  # float noise
                timeout_ms = max(1, min(timeout_ms, budget_ms))
        call = _Call(self, message, target, timeout_ms)
        call.record = record
        # Without a rule, the service's connect_attempts move a call on to other providers
        # when connecting fails; one sent is never sent again (the provider may have run
        # it), unless a retry rule says so.
        call.exchange = exchange = Exchange(
            record,
            retries=target.service.connect_attempts - 1,
            retry_on=_CONNECT_ONLY,
        )
        exchange.exclude_subset(governance.excluded(call.cluster, record))
        call.base = base
        self.calls.add(call)
        self.deadlines.add(call, timeout_ms)
        step = exchange.begin()
        if step.action is Action.WAIT:
            # An injected delay: a timer, then the call goes on as any other (its deadline
            # runs meanwhile).
            self.loop.call_later(step.delay_s, self._dispatch, call)
        else:
            self._dispatch(call)

    def _dispatch(self, call: _Call) -> None:
        """Choose a provider for the call (again, on a retry) and send it."""
        if call.done:
            return
        cluster = call.cluster
        excluded = call.exchange.excluded
        host = cluster.choose(PickContext(exclude=excluded) if excluded else NO_CONTEXT)
        if host is None:
            self._no_provider(call)
            return
        connection = self.pool.live(host, self.kind)
        if connection is None:
            refused = self._over_connection_limit(call)
            if refused is not None:
                # A busy endpoint that could grow queues on what it has instead; only a
                # call that would need a first connection to its provider is refused.
                existing = self.pool.usable(host, self.kind)
                if existing:
                    self._send(call, host, min(existing, key=lambda c: len(c.pending)))
                else:
                    call.fail(Outcome.REJECTED, f"meshagent: overloaded: {refused}")
                return
            self._spawn(self._connect_and_send(call, host))
        else:
            self._send(call, host, connection)

    def _over_connection_limit(self, call: _Call) -> str | None:
        """Why the call may not open a provider connection (the cluster's
        ``max_connections``), or None."""
        record = call.record
        if record is None:
            return None
        cluster = call.cluster
        return connection_refusal(record, cluster.name, lambda: self.pool.open_to(cluster.hosts()))

    def retry_lost(self, call: _Call, host: Host) -> bool:
        """The connection to ``host`` was lost after the call was sent: under a retry rule
        that allows it (``reset``, an idempotent method: the provider may have run it), send
        it to another provider after the rule's backoff. True when a retry is under way."""
        record = call.record
        if record is None or self.closed:
            return False
        step = call.exchange.failed(host.id, Failure(FailureKind.RESET, sent=True))
        if step.action is Action.GIVE_UP:
            return False
        record.end_attempt(record.attempts[-1], Outcome.UPSTREAM_ERROR)
        call.cluster.report_failure(host)
        host.active_requests -= 1
        call.host = call.connection = None
        self.loop.call_later(step.delay_s, self._dispatch, call)
        return True

    def _send(self, call: _Call, host: Host, connection: UpstreamConnection) -> None:
        record = call.record
        outgoing: Mapping[str, str] = {}
        if record is not None:
            outgoing = record.outgoing(record.begin_attempt(host.id))
        if call.base:
            # What is left of the budget when the call goes out (after a connect).
            left_ms = max(1, round((call.deadline - self.loop.time()) * 1000))
            call.message = self._with_base(call.request, call.target, outgoing, left_ms)
        call.seqid = connection.send(call.message, call.settle)
        call.host = host
        call.connection = connection
        host.active_requests += 1
        if self.batch.active:
            self._sent_to.add(connection)  # written when the read is handled; checked then
        elif not connection.writable and not self.paused & PAUSE_UPSTREAM:
            # Backpressure: stop reading this client until the provider's socket drains.
            self.pause(PAUSE_UPSTREAM)
            connection.when_writable(self._upstream_drained)

    def _upstream_drained(self) -> None:
        self.resume(PAUSE_UPSTREAM)

    async def _connect_and_send(self, call: _Call, host: Host) -> None:
        """The slow path: connect failures move on to other providers (up to the service's
        connect_attempts) and count against the provider in the cluster."""
        cluster = call.cluster
        exchange = call.exchange
        last_error = ""
        chosen: Host | None = host
        tried = 0
        while chosen is not None and not call.done:
            try:
                connection = await self.pool.get(chosen, self.kind)
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
            except UpstreamError as lost:  # closed between connect and send
                last_error = str(lost)
            tried += 1
            step = exchange.failed(chosen.id, Failure(FailureKind.CONNECT, sent=False))
            if step.action is Action.GIVE_UP:
                break
            if step.action is Action.WAIT:
                await asyncio.sleep(step.delay_s)
            excluded = exchange.excluded
            chosen = cluster.choose(PickContext(exclude=excluded))
        call.fail(
            Outcome.CONNECT_ERROR,
            f"meshagent: no provider of {call.target.name} reachable ({tried} tried): {last_error}",
        )

    def _send_oneway(self, message: Message, target: Target) -> None:
        host = target.cluster.choose(NO_CONTEXT)
        if host is None:
            self._dropped(message, "no provider")
            return
        connection = self.pool.live(host, self.kind)
        if connection is not None:
            connection.send_oneway(message)
        else:
            self._spawn(self._connect_and_send_oneway(message, host, target.cluster))

    async def _connect_and_send_oneway(
        self, message: Message, host: Host, cluster: Cluster
    ) -> None:
        try:
            connection = await self.pool.get(host, self.kind)
            connection.send_oneway(message)
        except UpstreamError as exc:
            if isinstance(exc, ConnectError):
                cluster.report_failure(host, connect=True)
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

    def _refused(self, header: Header, target: Target, refusal: CallRejected) -> None:
        """Answer a call governance refused: a degradation's fallback value as the
        method's result when the service has an IDL to encode it with, else a
        TApplicationException naming the reason."""
        if isinstance(refusal, Degraded) and refusal.has_value and target.idl is not None:
            from plugins.thrift.invoker import encode_reply

            method = _method(header.name)
            try:
                if method in target.idl.thrift_services:
                    self.write(encode_reply(target.idl, method, refusal.value, header, self.wire))
                    return
            except InvalidRequest as exc:
                log.warning(
                    "fallback value does not fit the method's result: %s",
                    exc,
                    extra={"listener": self.context.listener.display_name, "method": method},
                )
        self.answer_error(header, f"meshagent: {refusal.reason}: {refusal}")

    def _no_provider(self, call: _Call) -> None:
        name = call.target.name
        log.warning(
            "no provider available",
            extra={"listener": self.context.listener.display_name, "service": name},
        )
        call.fail(Outcome.NO_ENDPOINT, f"meshagent: no provider available for {name}")

    def _with_base(
        self, message: Message, target: Target, outgoing: Mapping[str, str], timeout_ms: int
    ) -> Message:
        """The call with its Base filled in (base.py): the budget goes into Extra where the
        app did not set it; ``outgoing`` (the attempt's propagation fields, derived from
        what arrived in the app's Extra) replaces the app's copy."""
        deadline_ms = int(time.time() * 1000) + timeout_ms
        extra = {"timeout_ms": str(timeout_ms), "deadline_ms": str(deadline_ms)}
        values = BaseValues(
            secrets.token_hex(16),
            self.routes.caller,
            self.peer.rpartition(":")[0],
            extra,
            dict(outgoing),
        )
        return with_base(message, values)[0]

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


_NO_EXCHANGE = Exchange(None)
_CONNECT_ONLY = frozenset({FailureKind.CONNECT})


def _method(name: str) -> str:
    return name.rpartition(":")[2]  # "Service:method" under TMultiplexedProtocol


class Target:
    """Where a method's calls go: a service, its cluster, and what the listener does to
    them (the timeout; which methods carry the Base struct)."""

    __slots__ = ("base_methods", "cluster", "idl", "name", "service", "timeout_ms")

    def __init__(
        self,
        service: ServiceConfig,
        cluster: Cluster,
        timeout_ms: int,
        base: frozenset[str],
        idl: Any = None,
    ) -> None:
        self.name = service.name
        self.service = service
        self.cluster = cluster
        self.timeout_ms = timeout_ms
        self.base_methods = base
        # The service's IDL (a thriftpy2 module) when it names one: fallback values are
        # encoded with it.
        self.idl = idl


class Routes:
    """A listener's method -> service map, with its service as the default."""

    __slots__ = ("by_method", "caller", "default")

    def __init__(self, default: Target, by_method: Mapping[str, Target], caller: str) -> None:
        self.default = default
        self.by_method = dict(by_method)
        self.caller = caller

    @classmethod
    def build(cls, context: ListenerContext, config: ThriftConfig) -> Routes:
        """Raises ConfigError for a route to a service the agent does not have, or one
        that does not speak Thrift."""
        where = f"listener {context.listener.display_name}"
        targets: dict[str, Target] = {}

        def target(name: str, service: ServiceConfig, cluster: Cluster) -> Target:
            found = targets.get(name)
            if found is None:
                idl = _load_idl(service, where)
                base: frozenset[str] = frozenset()
                if config.base == "auto" and idl is not None:
                    from plugins.thrift.invoker import base_methods

                    base = base_methods(idl)
                found = targets[name] = Target(service, cluster, config.timeout_ms, base, idl)
            return found

        default = target(context.service.name, context.service, context.cluster)
        by_method: dict[str, Target] = {}
        for method, name in config.routes.items():
            service = context.services.get(name)
            cluster = context.clusters.get(name)
            if service is None or cluster is None:
                raise ConfigError(
                    [
                        f"{where}: routes.{method} names service {name!r}, which is not "
                        f"configured (services: {', '.join(sorted(context.services)) or 'none'})"
                    ]
                )
            if service.protocol != "thrift":
                raise ConfigError(
                    [
                        f"{where}: routes.{method} names service {name!r}, which speaks "
                        f"{service.protocol!r}, not thrift"
                    ]
                )
            by_method[method] = target(name, service, cluster)
        return cls(default, by_method, config.caller or context.calls.app)


def _load_idl(service: ServiceConfig, where: str) -> Any:
    """The service's IDL as a thriftpy2 module, or None when it names none."""
    if not service.options.get("idl"):
        return None
    # thriftpy2 is needed only here, for services that name an IDL.
    from plugins.thrift.invoker import load_service

    try:
        return load_service(service.protocol_options(ThriftServiceOptions), service.name)
    except Exception as exc:
        raise ConfigError([f"{where}: service {service.name!r}: {exc}"]) from None
