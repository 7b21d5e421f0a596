"""One request's way to an HTTP/1.1 provider and its response's way back, whichever door
the request came in by: an HTTP/1.1 client connection (plugins/http/h1_listener.py) or
one stream of an HTTP/2 client connection (plugins/http/h2_listener.py).

The request is one call on the agent's Calls hub (metrics, traces, governance): opened
when it is routed, an attempt per provider tried (the call driver, agent/exchange.py,
says whether and when to try again), finished when the response's last byte is handed
to the client (or the client or provider goes away). The provider side is a pooled
keep-alive connection of plugins/http/h1_upstream.py, whose parser reports the response
here; the client side is a :class:`ClientSide`, which frames what it is given for its
client (HTTP/1.1 heads and chunks, or HTTP/2 HEADERS and DATA) and tells the exchange
when its client goes away or its deadline passes. Written once, so that retries,
deadlines, passive health and call records mean the same thing on both doors.
"""

from __future__ import annotations

import asyncio
import logging

from agent.calls import Attempt, Call, CallRejected, Outcome
from agent.cluster.host import Host
from agent.errors import ConnectError, NoEndpointError, UpstreamError, UpstreamTimeout
from agent.exchange import GIVE_UP, Action, Exchange, Next
from agent.governance.policy import decision_of
from agent.governance.retry import Failure, FailureKind
from agent.h2.upstream import H2Pool
from agent.runtime.protocols import ListenerContext, ListenerStats, RouteStats
from plugins.http.calls import (
    RETRYABLE_STATUSES,
    chain_of,
    exchange_for,
    outcome_of_status,
    refusal,
    with_outgoing,
)
from plugins.http.h1_upstream import FastPool, UpstreamConnection
from plugins.http.headers import Headers, end_to_end, split_fields
from plugins.http.routing import Router, Target, problem_body

log = logging.getLogger(__name__)

NO_BODY_STATUSES = frozenset({204, 304})


class Request:
    """One request as its client side parsed it; its body chunks (framed for the provider)
    wait in ``pending`` until a provider connection takes them, then go as they arrive."""

    __slots__ = (
        "chunked",
        "complete",
        "fields",
        "first",
        "has_body",
        "headers",
        "host",
        "incoming",
        "keep_alive",
        "method",
        "pending",
        "pending_bytes",
        "trailers",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.trailers: Headers = []
        self.method = b""
        self.version = "1.1"
        self.host: bytes | None = None
        # The request line and end-to-end fields to send (serialised per attempt, with
        # what the call's observers add), and the propagation fields that arrived.
        self.first = b""
        self.fields: Headers = []
        self.incoming: dict[str, str] = {}
        self.keep_alive = True
        self.chunked = False  # the body goes to the provider chunked
        self.has_body = False
        self.complete = False  # the client's whole request was read
        self.upgrade = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0


class ClientSide:
    """What an exchange needs from the door its request came in by. Subclassed by the
    HTTP/1.1 client connection and by the HTTP/2 client stream (single inheritance: both
    are compiled)."""

    context: ListenerContext
    stats: ListenerStats
    router: Router
    pool: FastPool
    h2_pool: H2Pool  # providers whose service says upstream_protocol: h2
    loop: asyncio.AbstractEventLoop
    # The client cannot take more now: the provider connection is not read meanwhile.
    write_paused: bool

    # -- the agent's own answers ---------------------------------------------------------

    def respond(
        self, exchange: ProviderExchange, status: int, content_type: bytes, body: bytes
    ) -> None:
        """An answer of the agent's own for the exchange's request; ends it."""
        raise NotImplementedError

    def answer(
        self,
        exchange: ProviderExchange,
        status: int,
        detail: str,
        extensions: dict[str, object] | None = None,
    ) -> None:
        """The agent's own error for the exchange's request (problem details); ends it."""
        body = problem_body(status, detail, exchange.target.service.name, extensions)
        self.stats.request_errors += 1
        self.respond(exchange, status, b"application/problem+json", body)

    # -- the provider's response ---------------------------------------------------------

    def informational(
        self, exchange: ProviderExchange, status: int, reason: bytes, fields: Headers
    ) -> None:
        """A 1xx response (100 Continue, 103 Early Hints)."""
        raise NotImplementedError

    def response_started(
        self,
        exchange: ProviderExchange,
        status: int,
        reason: bytes,
        fields: Headers,
        chunked: bool,
        until_close: bool,
    ) -> None:
        """The final response's head; ``fields`` are end to end (framing fields out),
        ``chunked``/``until_close`` say how the provider frames the body."""
        raise NotImplementedError

    def response_data(self, exchange: ProviderExchange, data: bytes) -> None:
        raise NotImplementedError

    def response_trailers(self, exchange: ProviderExchange, trailers: Headers) -> None:
        raise NotImplementedError

    def response_done(self, exchange: ProviderExchange) -> None:
        """The response is complete and the call finished."""
        raise NotImplementedError

    def response_cut(self, exchange: ProviderExchange) -> None:
        """The provider failed mid-response: the client must see the response cut."""
        raise NotImplementedError

    # -- timing and flow -----------------------------------------------------------------

    def arm(self, exchange: ProviderExchange, timeout_s: float) -> None:
        """The exchange's response head is due within ``timeout_s``: call its
        :meth:`H1Exchange.timeout` if it is not there by then."""
        raise NotImplementedError

    def disarm(self, exchange: ProviderExchange) -> None:
        raise NotImplementedError

    def body_sent(self, exchange: ProviderExchange, size: int) -> None:
        """``size`` bytes of the request's body that waited went to the provider (its
        client may send that much more)."""
        raise NotImplementedError

    def upstream_writable(self, exchange: ProviderExchange, writable: bool) -> None:
        """The provider's socket buffer filled (stop reading the request body) or drained."""
        raise NotImplementedError

    def cork(self) -> None:
        """Hold writes to the client until ``uncork``: one send per provider read."""

    def uncork(self) -> None:
        return None


class ProviderExchange:
    """One request's way to a provider and its response's way back: what every provider
    protocol shares (the call, the driver's steps, the agent's own failure answers). The
    provider side is the subclass's: HTTP/1.1 connections (:class:`H1Exchange`) or a
    stream on a pooled HTTP/2 connection (plugins/http/h2_exchange.py)."""

    def __init__(
        self, side: ClientSide, request: Request, target: Target, route: RouteStats
    ) -> None:
        self.side = side
        self.request = request
        self.target = target
        self.route = route
        route.requests += 1
        # The call's attempts (agent/exchange.py): which providers, retries, deadline.
        # Made when first needed (a rule in force, a failure): until then one shared and
        # never changed, so that a request that succeeds at once allocates no driver.
        self.driver = NO_DRIVER
        self.host: Host | None = None
        self.connecting: asyncio.Task[None] | None = None
        # A delayed attempt (an injected delay, a retry's backoff).
        self.timer: asyncio.TimerHandle | None = None
        # The request head went out: body chunks are sent as they arrive.
        self.sending = False
        self.responded = False
        # The client side's framing of the response (HTTP/1.1: chunked for the client;
        # the connection kept after it).
        self.chunked_out = False
        self.keep = False
        self.done = False
        self.status = 0
        self.timeout_s = target.timeout_s
        # When the response head is due (loop time; 0: not waiting), for the client side.
        self.deadline = 0.0
        self.call: Call | None = None
        self.record: Attempt | None = None

    # -- the call ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the call (policies may refuse it), then send, or wait an injected delay."""
        side = self.side
        request = self.request
        service = self.target.service.name
        router = side.router
        try:
            self.call = call = side.context.calls.start(
                "http",
                router.direction,
                router.call_routes.route(service, request.method),
                request.incoming,
            )
        except CallRejected as exc:
            self.done = True
            status, content_type, body = refusal(exc, service)
            if status >= 400:
                side.stats.request_errors += 1
            side.respond(self, status, content_type, body)
            return
        remaining = call.remaining_s()
        if remaining is not None and remaining < self.timeout_s:
            self.timeout_s = remaining  # never wait past the call's deadline
        if decision_of(call) is None:
            # No rule: the driver is made at the first failure, if any (nothing per call).
            self.attempt()
            return
        self._step(self._driver().begin())  # an injected delay, or the first attempt now

    def _driver(self) -> Exchange:
        """The call's driver, made now if it was not (a failure, or a rule in force)."""
        driver = self.driver
        if driver is NO_DRIVER:
            request = self.request
            driver = self.driver = exchange_for(
                self.call, self.target, request.method, request.has_body, request.headers
            )
        return driver

    def _attempt_later(self) -> None:
        self.timer = None
        if not self.done:
            self.attempt()

    def _end_attempt(self, outcome: Outcome, status: str = "") -> None:
        record, self.record = self.record, None
        if record is not None and self.call is not None:
            self.call.end_attempt(record, outcome, status)

    def _step(self, step: Next) -> bool:
        """Do what the driver says: attempt now or after a wait (True), or nothing (False:
        the caller answers with the failure)."""
        if step.action is Action.GIVE_UP:
            return False
        if step.action is Action.WAIT:
            self.timer = self.side.loop.call_later(step.delay_s, self._attempt_later)
        else:
            self.attempt()
        return True

    def _outgoing(self, host: Host) -> Headers:
        """The request's fields for an attempt on ``host`` (opening the attempt's record):
        what the call's observers send replaces the client's fields of those names."""
        fields = self.request.fields
        call = self.call
        if call is not None:
            self.record = record = call.begin_attempt(host.id)
            outgoing = call.outgoing(record)
            if outgoing:
                fields = with_outgoing(fields, outgoing)
        return fields

    def _response_timeout_s(self) -> float:
        timeout_s = self.timeout_s
        call = self.call
        if call is not None and call.deadline is not None:
            timeout_s = min(timeout_s, call.remaining_s() or 0.0)  # a retry's share
        return timeout_s

    def _connect_failed(self, host: Host, exc: Exception) -> None:
        """A connection to ``host`` could not be made: another attempt, or 502/503."""
        self.connecting = None
        if self.done:
            return
        call = self.call
        connect_error = isinstance(exc, ConnectError | OSError | TimeoutError)
        if call is not None and connect_error:
            call.end_attempt(call.begin_attempt(host.id), Outcome.CONNECT_ERROR)
        connect_failed = Failure(FailureKind.CONNECT, sent=False)
        if connect_error and self._step(self._driver().failed(host.id, connect_failed)):
            return
        if isinstance(exc, UpstreamError):
            error = exc
        else:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            error = ConnectError(
                f"could not connect to service {self.target.service.name!r}: "
                f"{host.id}: {reason or type(exc).__name__}"
            )
        self._fail_before_response(503 if isinstance(exc, NoEndpointError) else 502, error)

    # -- what the subclass does ------------------------------------------------------------

    def attempt(self) -> None:
        """Send the request to a provider (the driver's exclusions apply)."""
        raise NotImplementedError

    def send_body(self, data: bytes) -> bool:
        """Body bytes from the client: True when they went to the provider now; False when
        they wait (``ClientSide.body_sent`` says when they go)."""
        raise NotImplementedError

    def end_body(self) -> None:
        """The client's request is complete (``request.trailers`` holds its trailers)."""
        raise NotImplementedError

    def pause_response(self) -> None:
        """The client cannot take more of the response now: stop reading the provider."""

    def resume_response(self) -> None:
        return None

    def timeout(self) -> None:
        """The response head did not come in time (the client side's timer)."""
        raise NotImplementedError

    def cancel(self) -> None:
        """The client went away: drop the provider side."""
        raise NotImplementedError

    # -- ends ------------------------------------------------------------------------------

    def _timed_out(self) -> None:
        assert self.host is not None
        self._end_attempt(Outcome.TIMEOUT)
        self.target.cluster.report_failure(self.host)
        detail = (
            f"service {self.target.service.name!r}: endpoint {self.host.id} sent no "
            f"response within {self.timeout_s:g}s"
        )
        log.warning(
            "http upstream timeout: %s", detail, extra={"service": self.target.service.name}
        )
        self._fail_before_response(504, UpstreamTimeout(detail), logged=True)

    def _provider_failed(self, host: Host, why: str) -> None:
        """The provider failed the request before answering, and no attempt is left: 502."""
        name = self.target.service.name
        log.warning("http upstream failed: %s", why, extra={"service": name})
        self._fail_before_response(
            502,
            UpstreamError(f"service {name!r}: endpoint {host.id} failed: {why}"),
            logged=True,
        )

    def _fail_before_response(
        self, status: int, error: UpstreamError, *, logged: bool = False
    ) -> None:
        self.done = True
        if not logged:
            log.warning(
                "http request not forwarded: %s",
                error,
                extra={"service": self.target.service.name},
            )
        call = self.call
        if call is not None:
            call.fail(error, str(status))
        self.side.answer(self, status, str(error), chain_of(call))

    def _cancelled(self) -> None:
        self.done = True
        self.side.disarm(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._end_attempt(Outcome.CANCELLED)
        if self.call is not None:
            self.call.finish(Outcome.CANCELLED, str(self.status) if self.responded else "")


class H1Exchange(ProviderExchange):
    """A request to an HTTP/1.1 provider: one pooled keep-alive connection per attempt
    (plugins/http/h1_upstream.py), whose parser reports the response here."""

    def __init__(
        self, side: ClientSide, request: Request, target: Target, route: RouteStats
    ) -> None:
        super().__init__(side, request, target, route)
        self.upstream: UpstreamConnection | None = None
        # A provider's retryable answer being read to its end and dropped (a retry follows).
        self.discarding = False
        self.retry_step = GIVE_UP  # the driver's step after a dropped answer

    # -- getting a provider connection ------------------------------------------------------

    def attempt(self) -> None:
        driver = self.driver
        tried = driver.tried
        try:
            got = self.side.pool.choose(
                self.target.cluster,
                tried,
                fresh=driver.stale_resent,
                subset_out=driver.subset_out,
            )
        except NoEndpointError as exc:
            self._fail_before_response(503, exc)
            return
        if isinstance(got, UpstreamConnection):
            self._send(got)
            return
        self.connecting = self.side.loop.create_task(self._connect(got))

    async def _connect(self, host: Host) -> None:
        target = self.target
        try:
            upstream = await self.side.pool.connect(
                target.cluster, target.service, host, self.driver.excluded
            )
        except UpstreamError as exc:
            self._connect_failed(host, exc)
            return
        self.connecting = None
        if self.done:
            self.side.pool.release(upstream)
            return
        self._send(upstream)

    def _send(self, upstream: UpstreamConnection) -> None:
        request = self.request
        side = self.side
        self.upstream = upstream
        self.host = host = upstream.host
        host.active_requests += 1
        head = serialise(request.first, self._outgoing(host))
        upstream.start(self, head_only=request.method == b"HEAD")
        if side.write_paused:
            upstream.pause_reading()
        waiting = request.pending_bytes
        if request.pending or (request.complete and request.chunked):
            framed = [head]
            for data in request.pending:
                framed += self._framed(data)
            if request.complete and request.chunked:
                framed.append(self._last_chunk())
            self.route.bytes_in += sum(map(len, framed))
            upstream.writelines(framed)
            request.pending = []
            request.pending_bytes = 0
        else:
            self.route.bytes_in += len(head)
            upstream.write(head)
        self.sending = True
        if waiting:
            side.body_sent(self, waiting)
        side.arm(self, self._response_timeout_s())

    def _framed(self, data: bytes) -> list[bytes]:
        if self.request.chunked:
            return [b"%x\r\n" % len(data), data, b"\r\n"]
        return [data]

    def _last_chunk(self) -> bytes:
        trailers = self.request.trailers
        return serialise(b"0\r\n", end_to_end(trailers)) if trailers else b"0\r\n\r\n"

    def send_body(self, data: bytes) -> bool:
        upstream = self.upstream
        if not self.sending or upstream is None:
            self.request.pending.append(data)
            self.request.pending_bytes += len(data)
            return False
        framed = self._framed(data)
        self.route.bytes_in += sum(map(len, framed))
        upstream.writelines(framed)
        return True

    def end_body(self) -> None:
        upstream = self.upstream
        if self.sending and upstream is not None and self.request.chunked:
            last = self._last_chunk()
            self.route.bytes_in += len(last)
            upstream.write(last)

    def pause_response(self) -> None:
        if self.upstream is not None and not self.done:
            self.upstream.pause_reading()

    def resume_response(self) -> None:
        if self.upstream is not None and not self.done:
            self.upstream.resume_reading()

    # -- ResponseSink (called by the provider connection) ----------------------------------

    def response_head(self, status: int, reason: bytes, headers: Headers) -> bool:
        side = self.side
        request = self.request
        fields, length, chunked, _ = split_fields(headers)
        if status < 200:
            # 100 Continue (the client's Expect was forwarded) and 103 Early Hints.
            side.informational(self, status, reason, fields)
            return False
        side.disarm(self)
        assert self.host is not None
        if status >= 500:
            self.target.cluster.report_failure(self.host)
        else:
            self.target.cluster.report_success(self.host)
        no_body = request.method == b"HEAD" or status in NO_BODY_STATUSES
        until_close = not no_body and length is None and not chunked
        driver = self.driver
        if status in RETRYABLE_STATUSES and driver.decision is not None and request.complete:
            # Under a retry rule (whose driver exists since the call opened), a gateway
            # error may be retried: read it to its end and drop it (response_end tries
            # again), unless the rule or budget says no.
            step = driver.failed(self.host.id, Failure(FailureKind.STATUS, True))
            if step.action is not Action.GIVE_UP:
                self.discarding = True
                self.status = status
                self._end_attempt(Outcome.APP_ERROR, str(status))
                self.retry_step = step
                return until_close
        # Once responded the driver is not asked again (upstream_failed cuts the client);
        # the shared no-driver is left alone.
        if driver is not NO_DRIVER:
            driver.answer_started()
        self.responded = True
        self.status = status
        self._end_attempt(outcome_of_status(status), str(status))
        side.response_started(self, status, reason, fields, chunked, until_close)
        return until_close

    def response_body(self, data: bytes) -> None:
        if not self.discarding:
            self.side.response_data(self, data)

    def response_trailers(self, trailers: Headers) -> None:
        if not self.discarding:
            self.side.response_trailers(self, trailers)

    def response_end(self) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.host.active_requests -= 1
        side = self.side
        if self.discarding:
            # The dropped answer is read: the connection goes back, the retry goes out.
            self.discarding = False
            self.upstream = None
            self.sending = False
            side.pool.release(upstream)
            self._step(self.retry_step)
            return
        self.done = True
        self.upstream = None
        if self.request.complete:
            if side.write_paused:
                upstream.resume_reading()
            side.pool.release(upstream)
        else:
            # The provider answered before the client finished sending: neither
            # connection can carry another request.
            upstream.detach()
        if self.call is not None:
            self.call.finish(outcome_of_status(self.status), str(self.status))
        side.response_done(self)

    def upstream_failed(self, reason: str) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.upstream = None
        self.sending = False
        self.host.active_requests -= 1
        upstream.detach()
        self._end_attempt(Outcome.UPSTREAM_ERROR)
        if self.responded:
            # Mid-body: the status is sent, so the only honest signal is a cut.
            log.warning(
                "http upstream failed mid-response: %s", reason, extra={"endpoint": self.host.id}
            )
            self.done = True
            if self.call is not None:
                self.call.finish(Outcome.UPSTREAM_ERROR, str(self.status))
            self.side.response_cut(self)
            return
        self.discarding = False
        self.side.disarm(self)
        driver = self._driver()
        if upstream.reused:
            # A kept-alive connection the provider closed as we reused it: the request
            # never reached it, and without a body it can be sent again (once).
            step = driver.stale(self.host.id)
            if step.action is Action.RESEND:
                self.attempt()
                return
        else:
            step = driver.failed(self.host.id, Failure(FailureKind.RESET, True))
        self.target.cluster.report_failure(self.host)
        if self._step(step):
            return
        self._provider_failed(self.host, reason)

    def upstream_writable(self, writable: bool) -> None:
        self.side.upstream_writable(self, writable)

    def cork(self) -> None:
        self.side.cork()

    def uncork(self) -> None:
        self.side.uncork()

    # -- ends ------------------------------------------------------------------------------

    def timeout(self) -> None:
        upstream = self.upstream
        assert upstream is not None and self.host is not None
        self.upstream = None
        self.host.active_requests -= 1
        upstream.detach()
        self._timed_out()

    def cancel(self) -> None:
        """The client went away: drop the provider side (never reused)."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None and self.host is not None:
            self.host.active_requests -= 1
            upstream.abort()
        self._cancelled()


NO_DRIVER = Exchange(None)


def serialise(first_line: bytes, fields: Headers) -> bytes:
    """An HTTP/1.1 head: its first line (with CRLF), the fields, the empty line."""
    parts = [first_line]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
