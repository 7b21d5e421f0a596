"""A request to an HTTP/2 provider (``upstream_protocol: h2``), from either door of the
HTTP listener: a stream on a pooled, multiplexed provider connection (agent/h2/upstream.py:
more connections when the provider's stream limit is reached, liveness pings, GOAWAY).

The request's fields become HTTP/2 headers (lower-case names, the pseudo-header fields,
Host as ``:authority``, no connection-specific fields); its body goes as DATA within the
provider's windows, and past ``_HELD_HIGH`` bytes waiting for them the client side is
told to stop reading the client. The response's headers, DATA and trailers go to the
client side as they come; its window is given back to the provider as the client side
takes them, and held while the client side says it cannot (``pause_response``). What
the driver decides is the same as for HTTP/1.1 providers (plugins/http/h1_exchange.py);
what HTTP/2 adds: a stream the provider refused (REFUSED_STREAM) or did not process
before its GOAWAY is sent again when it can be (no body), a connection that cannot take
another stream counts as a connect failure, and a retried answer is reset rather than
read to its end.
"""

from __future__ import annotations

import logging
from collections import deque
from http import HTTPStatus

from agent.calls import Outcome
from agent.cluster.host import Host
from agent.cluster.lb import PickContext
from agent.errors import ConnectError, NoEndpointError
from agent.exchange import Action
from agent.governance.retry import Failure, FailureKind
from agent.h2.connection import CANCEL, REFUSED_STREAM, StreamGone, StreamLimit
from agent.h2.upstream import EndpointBusy, H2Upstream, StreamSink
from agent.runtime.protocols import RouteStats
from plugins.http.calls import RETRYABLE_STATUSES, outcome_of_status
from plugins.http.h1_exchange import (
    NO_BODY_STATUSES,
    NO_DRIVER,
    ClientSide,
    H1Exchange,
    ProviderExchange,
    Request,
)
from plugins.http.h1_upstream import pick_endpoint
from plugins.http.headers import Headers, end_to_end
from plugins.http.routing import Target

log = logging.getLogger(__name__)

# Request body bytes waiting for the provider's window past which the client is not read.
_HELD_HIGH = 256 * 1024

# HTTP/1.1 fields with no HTTP/2 form (RFC 9113 §8.2.2), and Host (it is :authority).
_NOT_SENT = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"host",
    }
)


def _reason(status: int) -> bytes:
    """The reason phrase an HTTP/1.1 client gets (HTTP/2 has none)."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def new_exchange(
    side: ClientSide, request: Request, target: Target, route: RouteStats
) -> ProviderExchange:
    """The exchange for a request to ``target``'s providers, by the protocol they speak."""
    if target.h2:
        return H2Exchange(side, request, target, route)
    return H1Exchange(side, request, target, route)


class _Sink(StreamSink):
    """What the provider's connection says about the exchange's stream. Held only by the
    connection (its streams): the exchange is freed by reference counting once its stream
    is done, with no cycle for the collector."""

    def __init__(self, exchange: H2Exchange) -> None:
        self.exchange = exchange

    def response_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.exchange.response_headers(headers, end_stream)

    def response_data(self, data: bytes, flow: int) -> None:
        self.exchange.response_data(data, flow)

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.exchange.response_trailers(trailers)

    def upstream_reset(self, code: int) -> None:
        self.exchange.stream_failed(f"the provider reset the stream ({code})", code)

    def upstream_writable(self) -> None:
        self.exchange.flush_up()

    def upstream_unprocessed(self) -> None:
        self.exchange.stream_failed("the provider is going away (GOAWAY)", REFUSED_STREAM)

    def upstream_lost(self, why: str) -> None:
        self.exchange.stream_failed(why, -1)

    def flush_downstream(self) -> None:
        self.exchange.side.uncork()


class H2Exchange(ProviderExchange):
    """One request as a stream to an HTTP/2 provider (see the module)."""

    def __init__(
        self, side: ClientSide, request: Request, target: Target, route: RouteStats
    ) -> None:
        super().__init__(side, request, target, route)
        self.up: H2Upstream | None = None
        self.up_id = 0
        self.attached = False  # counted in the host's active requests
        self.to_up: deque[bytes] = deque()
        self.to_up_size = 0
        self.upstream_full = False  # the client side was told to stop reading
        self.sent_end = False
        self.paused = False  # the client side cannot take more of the response
        self.held_out = 0  # response bytes whose window waits for resume_response

    # -- the attempt -----------------------------------------------------------------------

    def attempt(self) -> None:
        driver = self.driver
        try:
            host = pick_endpoint(self.target.cluster, driver.tried, driver.subset_out)
        except NoEndpointError as exc:
            self._fail_before_response(503, exc)
            return
        upstream = self.side.h2_pool.ready(host.id)
        if upstream is not None:
            self._start_stream(host, upstream)
            return
        self.connecting = self.side.loop.create_task(self._connect(host))

    async def _connect(self, first: Host) -> None:
        """A connection to ``first``, then to other endpoints while the service's
        ``connect_attempts`` last (as for HTTP/1.1 providers)."""
        target = self.target
        pool = self.side.h2_pool
        tried = set(self.driver.excluded)
        candidate: Host | None = first
        failure: Exception = ConnectError(f"no endpoint of {target.service.name!r} to try")
        host = first
        for _ in range(target.service.connect_attempts):
            if candidate is None:
                break
            host = candidate
            tried.add(host.id)
            instance = host.instance
            try:
                upstream = await pool.connect(instance.host, instance.port, host.id)
            except (OSError, TimeoutError, EndpointBusy) as exc:
                failure = exc
                if not isinstance(exc, EndpointBusy):
                    log.warning(
                        "upstream connect failed",
                        extra={"cluster": target.cluster.name, "endpoint": host.id},
                    )
                    target.cluster.report_failure(host, connect=True)
                candidate = target.cluster.choose(PickContext(None, frozenset(tried)))
                continue
            self.connecting = None
            if not self.done:
                self._start_stream(host, upstream)
            return
        self._connect_failed(host, failure)

    def _start_stream(self, host: Host, upstream: H2Upstream) -> None:
        request = self.request
        try:
            stream_id = upstream.conn.open_stream()
        except StreamLimit as exc:
            self._connect_failed(host, ConnectError(f"no stream to {host.id}: {exc}"))
            return
        self.up = upstream
        self.up_id = stream_id
        self.host = host
        self.attached = True
        host.active_requests += 1
        upstream.streams[stream_id] = _Sink(self)
        authority = request.host or host.id.encode()
        headers: Headers = []
        for name, value in self._outgoing(host):
            lower = name.lower()
            if lower not in _NOT_SENT:
                headers.append((lower, value))
        headers[:0] = [
            (b":method", request.method),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", request.url),
        ]
        for data in request.pending:
            self.to_up.append(data)
            self.to_up_size += len(data)
        request.pending = []
        end = request.complete and not self.to_up and not request.trailers
        upstream.conn.send_headers(stream_id, headers, end_stream=end)
        self.sent_end = end
        self.sending = True
        self.flush_up()
        upstream.schedule_flush()
        self.side.arm(self, self._response_timeout_s())

    # -- the request body ------------------------------------------------------------------

    def send_body(self, data: bytes) -> bool:
        if not self.sending or self.up is None:
            self.request.pending.append(data)
            self.request.pending_bytes += len(data)
            return False
        self.to_up.append(data)
        self.to_up_size += len(data)
        self.flush_up()
        return False  # given back as it goes (ClientSide.body_sent)

    def end_body(self) -> None:
        if self.sending:
            self.flush_up()

    def flush_up(self) -> None:
        """Send what waits within the provider's windows; end the stream once all is out."""
        upstream = self.up
        if upstream is None or self.done:
            return
        conn = upstream.conn
        stream_id = self.up_id
        sent = 0
        try:
            while self.to_up:
                window = conn.window(stream_id)
                if window <= 0:
                    break
                chunk = self.to_up.popleft()
                if len(chunk) > window:
                    self.to_up.appendleft(chunk[window:])
                    chunk = chunk[:window]
                conn.send_data(stream_id, chunk)
                sent += len(chunk)
            request = self.request
            if request.complete and not self.to_up and not self.sent_end:
                if request.trailers:
                    trailers = [(n.lower(), v) for n, v in end_to_end(request.trailers)]
                    conn.send_headers(stream_id, trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
                self.sent_end = True
        except StreamGone:
            self.to_up.clear()  # the provider ended the stream: its answer is coming
        self.to_up_size -= sent
        if self.to_up_size <= 0:
            self.to_up_size = 0
            self.to_up.clear()
        upstream.schedule_flush()
        side = self.side
        if sent:
            self.route.bytes_in += sent
            side.body_sent(self, sent)
        full = self.to_up_size > _HELD_HIGH
        if full != self.upstream_full:
            self.upstream_full = full
            side.upstream_writable(self, not full)

    # -- the response ----------------------------------------------------------------------

    def response_headers(self, headers: Headers, end_stream: bool) -> None:
        if self.done:
            return
        side = self.side
        request = self.request
        host = self.host
        assert host is not None
        status = 0
        fields: Headers = []
        length_given = False
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[:1] != b":":
                fields.append((name, value))
                if name == b"content-length":
                    length_given = True
        side.disarm(self)
        if status >= 500:
            self.target.cluster.report_failure(host)
        else:
            self.target.cluster.report_success(host)
        driver = self.driver
        if status in RETRYABLE_STATUSES and driver.decision is not None and request.complete:
            # Under a retry rule, a gateway error may be retried: this stream is reset (no
            # need to read the answer to reuse the connection) and the retry goes out.
            step = driver.failed(host.id, Failure(FailureKind.STATUS, True))
            if step.action is not Action.GIVE_UP:
                self.status = status
                self._end_attempt(Outcome.APP_ERROR, str(status))
                self._leave_stream(CANCEL)
                self._step(step)
                return
        if driver is not NO_DRIVER:
            driver.answer_started()
        self.responded = True
        self.status = status
        self._end_attempt(outcome_of_status(status), str(status))
        no_body = end_stream or request.method == b"HEAD" or status in NO_BODY_STATUSES
        chunked = not no_body and not length_given  # how an HTTP/1.1 client gets it framed
        side.response_started(self, status, _reason(status), fields, chunked, False)
        if end_stream:
            self._finish()

    def response_data(self, data: bytes, flow: int) -> None:
        upstream = self.up
        if self.done or upstream is None:
            if upstream is not None:
                upstream.ack(self.up_id, flow)
            return
        if data:
            self.side.response_data(self, data)
        if self.paused:
            self.held_out += flow
        else:
            upstream.ack(self.up_id, flow)
            upstream.schedule_flush()

    def response_trailers(self, trailers: Headers) -> None:
        if self.done:
            return
        if trailers:
            self.side.response_trailers(self, trailers)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self._leave_stream(-1 if self.sent_end else CANCEL)
        if self.call is not None:
            self.call.finish(outcome_of_status(self.status), str(self.status))
        self.side.response_done(self)

    def pause_response(self) -> None:
        self.paused = True

    def resume_response(self) -> None:
        self.paused = False
        held, self.held_out = self.held_out, 0
        if held and self.up is not None:
            self.up.ack(self.up_id, held)
            self.up.schedule_flush()

    # -- failures and ends -----------------------------------------------------------------

    def stream_failed(self, why: str, code: int) -> None:
        """The stream ended abnormally: the provider reset it (``code``), did not process
        it (REFUSED_STREAM), or its connection is gone (-1)."""
        if self.done:
            return
        host = self.host
        assert host is not None
        self._leave_stream(-1)
        self._end_attempt(Outcome.UPSTREAM_ERROR)
        if self.responded:
            log.warning("http upstream failed mid-response: %s", why, extra={"endpoint": host.id})
            self.done = True
            if self.call is not None:
                self.call.finish(Outcome.UPSTREAM_ERROR, str(self.status))
            self.side.response_cut(self)
            return
        self.side.disarm(self)
        self.sending = False
        driver = self._driver()
        if code == REFUSED_STREAM:
            # Not processed (RFC 9113 §8.7): sent again at once, if it can be (no body).
            step = driver.stale(host.id)
            if step.action is Action.RESEND:
                self.attempt()
                return
        else:
            step = driver.failed(host.id, Failure(FailureKind.RESET, True))
            self.target.cluster.report_failure(host)
            if self._step(step):
                return
        self._provider_failed(host, why)

    def _leave_stream(self, code: int) -> None:
        """Done with the stream: reset it with ``code`` unless -1; its windows given back."""
        upstream = self.up
        if upstream is None:
            return
        self.up = None
        upstream.streams.pop(self.up_id, None)
        if code >= 0 and self.up_id in upstream.conn.streams:
            upstream.conn.reset(self.up_id, code)
        if self.held_out:
            upstream.ack(self.up_id, self.held_out)  # the connection's share comes back
            self.held_out = 0
        upstream.schedule_flush()
        self.to_up.clear()
        self.to_up_size = 0
        if self.attached:
            self.attached = False
            if self.host is not None:
                self.host.active_requests -= 1

    def timeout(self) -> None:
        self._leave_stream(CANCEL)
        self._timed_out()

    def cancel(self) -> None:
        self._leave_stream(CANCEL)
        self._cancelled()
