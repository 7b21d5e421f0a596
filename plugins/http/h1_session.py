"""HTTP/1.1 over asyncio streams with h11: the connections the listener's fast path
(plugins/http/h1_listener.py) hands over, because they stop being plain request/response.

- upgrade requests (``Connection: upgrade``: WebSocket) and CONNECT: the handshake is
  relayed here, and after a 101 both connections are spliced as raw TCP. (HTTP/2, by its
  preface or an h2c upgrade, goes from the fast path to plugins/http/h2_listener.py; an
  h2c upgrade that reaches this session, behind pipelined requests, is ignored and the
  request served over HTTP/1.1, as RFC 7540 §3.2 allows.)

The fast path hands a connection over only between requests, so h11 starts on a fresh
request; it gets the bytes read so far (the request head, re-serialised from the parsed
fields, and what followed it). This session keeps the full h11 behaviour for what it
serves: routing, pooled keep-alive upstreams, 100-continue, pipelining, bad input (400/431,
lingering close), problem details for the agent's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import h11

from agent.calls import Call, CallRejected, Outcome
from agent.errors import ConnectError, NoEndpointError, UpstreamError, UpstreamTimeout
from agent.exchange import Action, Exchange
from agent.governance.retry import Failure, FailureKind
from agent.runtime.protocols import ListenerContext, ListenerStats
from plugins.http.calls import (
    exchange_for,
    outcome_of_status,
    refusal,
    with_outgoing,
)
from plugins.http.config import HttpConfig
from plugins.http.h11_pool import UpstreamConnection, UpstreamPool
from plugins.http.headers import (
    Headers,
    comma_tokens,
    end_to_end,
    forwarding,
    header_value,
    is_upgrade,
    split_fields,
)
from plugins.http.routing import (
    Router,
    Target,
    problem_body,
    problem_headers,
)

log = logging.getLogger(__name__)

# Lingering close: how long, and how many bytes, to read and discard from a client that
# is still sending after its connection's last response.
_LINGER_S = 2.0
_LINGER_BYTES = 1024 * 1024


class _ClientGone(Exception):
    """The client closed or broke its connection mid-request."""


class _UpstreamFailed(Exception):
    """The provider's connection failed before its response head arrived."""


class H11Connection(asyncio.StreamReaderProtocol):
    """One client connection handed over by the fast path: the stream protocol plus the
    task that serves it."""

    def __init__(
        self,
        context: ListenerContext,
        config: HttpConfig,
        pool: UpstreamPool,
        router: Router,
        sessions: set[asyncio.Task[None]],
    ) -> None:
        self.reader = asyncio.StreamReader(limit=2 * config.read_chunk_bytes)
        super().__init__(self.reader)
        self.context = context
        self.config = config
        self.pool = pool
        self.router = router
        self.sessions = sessions
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: _Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Takes over a connection the fast path accepted, counted and tracked."""
        super().connection_made(transport)
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        writer = asyncio.StreamWriter(self.transport, self, self.reader, loop)
        session = self.session = _Session(self, writer)
        # Held in the set (the loop keeps only weak references to tasks) until done.
        self.task = loop.create_task(session.run())
        self.sessions.add(self.task)
        self.task.add_done_callback(self.sessions.discard)

    def data_received(self, data: bytes) -> None:
        self.context.stats.bytes_in += len(data)
        super().data_received(data)

    def drain(self) -> None:
        """The agent is draining: an idle connection closes now; a busy one after its
        response (``Connection: close``)."""
        session = self.session
        if session is None:
            return
        session.draining = True
        if not session.busy and self.task is not None:
            self.task.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.transport is not None:
            self.context.stats.active -= 1
            self.context.untrack(self.transport)


class _Session:
    def __init__(self, owner: H11Connection, writer: asyncio.StreamWriter) -> None:
        self.owner = owner
        self.context = owner.context
        self.config = owner.config
        self.reader = owner.reader
        self.writer = writer
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes
        )
        peer = writer.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        # A request is being served (not waiting for the next one).
        self.busy = False
        self.draining = False

    # -- client side -------------------------------------------------------------------

    async def _next(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.reader.read(self.config.read_chunk_bytes)
                except ConnectionError as exc:
                    raise _ClientGone from exc
                self.conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                return h11.PAUSED
            assert isinstance(event, h11.Event)
            return event

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.context.stats.bytes_out += len(data)
            self.writer.write(data)
            try:
                await self.writer.drain()
            except ConnectionError as exc:
                raise _ClientGone from exc

    async def _answer(self, status: int, detail: str, service: str) -> None:
        self.context.stats.request_errors += 1
        if self.conn.our_state is not h11.SEND_RESPONSE:
            return  # a response is already under way: nothing to say but closing
        body = problem_body(status, detail, service)
        await self._send(
            h11.Response(status_code=status, headers=problem_headers(body) + self._closing())
        )
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    def _closing(self) -> Headers:
        """``Connection: close`` when answering before the request's end was read.

        The rest of the request is never read, so the connection ends after this response,
        and the client must know not to send another request on it.
        """
        if self.conn.their_state is h11.DONE and not self.draining:
            return []
        return [(b"Connection", b"close")]

    async def run(self) -> None:
        listener = self.context.listener.display_name
        try:
            await self._serve()
            await self._linger()
        except _ClientGone:
            pass
        except h11.RemoteProtocolError as exc:
            # A body that breaks framing mid-request (a bad chunk size, EOF too early).
            log.warning("bad request body from client: %s", exc, extra={"listener": listener})
        except Exception:
            log.exception("http proxy connection failed", extra={"listener": listener})
        finally:
            self.writer.close()

    async def _serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.client_idle_timeout_s):
                    event = await self._next()
            except TimeoutError:
                return
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, str(exc))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or a client that sent nothing
            self.busy = True
            try:
                if not await self._exchange(event):
                    return
            finally:
                self.busy = False
            if self.draining:
                return
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
            else:
                return

    async def _linger(self) -> None:
        """Close without losing our last response to a client still sending.

        Closing a socket with unread input makes the kernel send RST, which may destroy
        the response (a 502 or 400 sent while the request body was arriving) before the
        client reads it. So: half-close, then read and discard for a short, bounded while
        (nginx's lingering close).
        """
        if self.conn.their_state in (h11.IDLE, h11.DONE, h11.CLOSED, h11.SWITCHED_PROTOCOL):
            return
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            discarded = 0
            async with asyncio.timeout(_LINGER_S):
                while discarded < _LINGER_BYTES and (data := await self.reader.read(65536)):
                    discarded += len(data)

    async def _refuse(self, status: int, reason: str) -> None:
        log.warning(
            "bad request from client: %s",
            reason,
            extra={"listener": self.context.listener.display_name, "client": self.client_ip},
        )
        self.context.stats.rejected += 1
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = problem_body(status, reason, self.owner.router.default.service.name)
        headers = [*problem_headers(body), (b"Connection", b"close")]
        with contextlib.suppress(h11.LocalProtocolError, _ClientGone):
            await self._send(h11.Response(status_code=status, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())

    # -- one request -------------------------------------------------------------------

    async def _exchange(self, request: h11.Request) -> bool:
        """Serve one request; False closes the client connection."""
        self.context.stats.requests += 1
        raw: Headers = list(request.headers.raw_items())
        # h11's limit only applies to a head still incomplete in its buffer; one that
        # arrived whole in a single read is measured here.
        size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in raw)
        if size > self.config.max_header_bytes:
            await self._refuse(431, f"request head of {size} bytes over the limit")
            return False
        length = header_value(raw, b"content-length")
        chunked = header_value(raw, b"transfer-encoding") is not None
        if length is not None and chunked:
            # RFC 9112 6.1: a proxy must not forward both; the classic smuggling vector.
            await self._refuse(400, "both Content-Length and Transfer-Encoding")
            return False
        host = header_value(raw, b"host")
        target = self.owner.router.route(host, request.target)
        self.context.stats.route(target.service.name).requests += 1
        # An h2c upgrade not taken (a body, or HTTP/2 off) is ours to ignore, not the
        # provider's to accept.
        upgrade = is_upgrade(raw) and b"h2c" not in comma_tokens(raw, b"upgrade")
        headers = end_to_end(raw, keep_upgrade=upgrade)
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        if self.config.x_forwarded or self.config.forwarded:
            config = self.config
            headers = forwarding(
                headers, config.x_forwarded, config.forwarded, self.client_ip, host
            )
        upstream_request = h11.Request(
            method=request.method, target=request.target, headers=headers
        )
        has_body = chunked or (length is not None and length.strip() != b"0")
        if not has_body:
            # Reading the (empty) end now lets an error answer keep the connection.
            end = await self._next()
            assert isinstance(end, h11.EndOfMessage)
        name = target.service.name
        # The call: governance, metrics, tracing and the access log see this request as
        # they see one on the fast path (issue 21: this session used to skip them).
        router = self.owner.router
        incoming: dict[str, str] = {}
        split_fields(raw, incoming)
        try:
            call = self.context.calls.start(
                "http", router.direction, router.call_routes.route(name, request.method), incoming
            )
        except CallRejected as exc:
            await self._refusal(exc, name)
            return True
        exchange = exchange_for(call, target, request.method, has_body, raw)
        try:
            return await self._attempts(exchange, call, upstream_request, target, has_body)
        except BaseException as exc:
            call.fail(exc)
            raise

    async def _attempts(
        self,
        exchange: Exchange,
        call: Call,
        request: h11.Request,
        target: Target,
        has_body: bool,
    ) -> bool:
        """Attempts as the exchange says, until an answer or its last failure."""
        name = target.service.name
        step = exchange.begin()
        fresh = False
        while True:
            if step.action is Action.WAIT:
                await asyncio.sleep(step.delay_s)
            try:
                upstream = await self.owner.pool.acquire(
                    target.cluster,
                    target.service,
                    fresh=fresh,
                    exclude=exchange.tried,
                    subset_out=exchange.subset_out,
                )
            except UpstreamError as exc:
                if isinstance(exc, ConnectError):
                    step = exchange.failed("", Failure(FailureKind.CONNECT, sent=False))
                    if step.action is not Action.GIVE_UP:
                        continue
                status = 503 if isinstance(exc, NoEndpointError) else 502
                log.warning("http request not forwarded: %s", exc, extra={"service": name})
                call.fail(exc, str(status))
                await self._answer(status, str(exc), name)
                return True
            fresh = False
            attempt = call.begin_attempt(upstream.host.id)
            outgoing = call.outgoing(attempt)
            sent = (
                request
                if not outgoing
                else h11.Request(
                    method=request.method,
                    target=request.target,
                    headers=with_outgoing(list(request.headers.raw_items()), outgoing),
                )
            )
            upstream.host.active_requests += 1
            try:
                status = await self._forward(
                    sent, upstream, target, has_body, exchange, exchange.timeout_s(target.timeout_s)
                )
            except _UpstreamFailed as exc:
                upstream.close()
                call.end_attempt(attempt, Outcome.UPSTREAM_ERROR)
                if upstream.reused:
                    # A kept-alive connection the provider closed as we reused it: the
                    # request never reached it, and without a body it can be sent again.
                    step = exchange.stale(upstream.host.id)
                    if step.action is Action.RESEND:
                        fresh = True
                        continue
                else:
                    step = exchange.failed(upstream.host.id, Failure(FailureKind.RESET, True))
                target.cluster.report_failure(upstream.host)
                if step.action is not Action.GIVE_UP:
                    continue
                detail = f"service {name!r}: endpoint {upstream.host.id} failed: {exc}"
                log.warning("http upstream failed: %s", exc, extra={"service": name})
                call.finish(Outcome.UPSTREAM_ERROR, "502")
                await self._answer(502, detail, name)
                return True
            except UpstreamTimeout as exc:
                upstream.close()
                call.end_attempt(attempt, Outcome.TIMEOUT)
                target.cluster.report_failure(upstream.host)
                log.warning("http upstream timeout: %s", exc, extra={"service": name})
                call.fail(exc, "504")
                await self._answer(504, str(exc), name)
                return True
            except BaseException:
                upstream.close()
                call.end_attempt(attempt, Outcome.CANCELLED)
                raise
            finally:
                upstream.host.active_requests -= 1
            call.end_attempt(attempt, outcome_of_status(status), str(status))
            call.finish(outcome_of_status(status), str(status))
            return status != 101

    async def _refusal(self, rejected: CallRejected, service: str) -> None:
        """A call refused by a policy (rate limit, circuit, fault, loop): its answer."""
        self.context.stats.request_errors += 1
        status, content_type, body = refusal(rejected, service)
        if self.conn.our_state is not h11.SEND_RESPONSE:
            return
        headers = [(b"Content-Type", content_type), (b"Content-Length", b"%d" % len(body))]
        await self._send(h11.Response(status_code=status, headers=headers + self._closing()))
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _forward(
        self,
        request: h11.Request,
        upstream: UpstreamConnection,
        target: Target,
        has_body: bool,
        exchange: Exchange,
        timeout_s: float,
    ) -> int:
        """Send ``request`` and relay the answer; its status (101: the connection is spliced
        and ends with it)."""
        pump_error: list[BaseException] = []
        pump: asyncio.Task[None] | None = None
        try:
            await upstream.send(request)
            if not has_body:
                await upstream.send(h11.EndOfMessage())
        except (ConnectionError, OSError) as exc:
            raise _UpstreamFailed(str(exc) or type(exc).__name__) from exc
        if has_body:
            pump = asyncio.get_running_loop().create_task(
                self._pump_request_body(upstream, pump_error)
            )
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    response = await self._response_head(upstream)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"service {target.service.name!r}: endpoint {upstream.host.id} sent no "
                    f"response within {timeout_s:g}s"
                ) from None
            except (ConnectionError, OSError, h11.RemoteProtocolError) as exc:
                if pump_error:
                    raise pump_error[0] from None
                raise _UpstreamFailed(str(exc) or type(exc).__name__) from exc
            if response.status_code >= 500:
                target.cluster.report_failure(upstream.host)
            else:
                target.cluster.report_success(upstream.host)
            exchange.answer_started()
            if response.status_code == 101:
                if pump is not None:
                    await pump
                await self._splice(response, upstream)
                return 101
            await self._send(
                h11.Response(
                    status_code=response.status_code,
                    headers=end_to_end(list(response.headers.raw_items())) + self._closing(),
                    reason=response.reason,
                )
            )
            await self._relay_response_body(upstream)
        finally:
            if pump is not None and not pump.done():
                # The provider answered before the client finished sending: the client
                # connection cannot be reused (h11's states say so), the provider's neither.
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        if pump_error:
            raise pump_error[0]
        self.owner.pool.release(upstream)
        return response.status_code

    async def _pump_request_body(
        self, upstream: UpstreamConnection, errors: list[BaseException]
    ) -> None:
        try:
            while True:
                event = await self._next()
                if isinstance(event, h11.Data):
                    await upstream.send(h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    trailers = end_to_end(list(event.headers.raw_items()))
                    await upstream.send(h11.EndOfMessage(headers=trailers))
                    return
                else:
                    raise _ClientGone
        except (_ClientGone, h11.RemoteProtocolError) as exc:
            errors.append(exc)
            # Fails the response read too, so the exchange ends at once.
            upstream.writer.transport.abort()
        except (ConnectionError, OSError):
            return  # the provider's side failed: the response read says how

    async def _response_head(self, upstream: UpstreamConnection) -> h11.Response:
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return cast(h11.Response, event)
                # 100 Continue (the client's Expect was forwarded) and 103 Early Hints.
                await self._send(
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=end_to_end(list(event.headers.raw_items())),
                        reason=event.reason,
                    )
                )
                continue
            if isinstance(event, h11.Response):
                return event
            raise h11.RemoteProtocolError(f"connection closed before a response ({event!r})")

    async def _relay_response_body(self, upstream: UpstreamConnection) -> None:
        while True:
            try:
                event = await upstream.next_event()
            except (ConnectionError, OSError, h11.RemoteProtocolError) as exc:
                # Mid-body: the status is sent, so the only honest signal is a cut.
                log.warning(
                    "http upstream failed mid-response: %s",
                    exc,
                    extra={"endpoint": upstream.host.id},
                )
                upstream.close()
                raise _ClientGone from exc
            if isinstance(event, h11.Data):
                await self._send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                trailers = end_to_end(list(event.headers.raw_items()))
                await self._send(h11.EndOfMessage(headers=trailers))
                return
            else:
                upstream.close()
                raise _ClientGone

    async def _splice(self, response: h11.Response, upstream: UpstreamConnection) -> None:
        """After 101 Switching Protocols: raw bytes both ways, half-close relayed."""
        raw = list(response.headers.raw_items())
        await self._send(
            h11.InformationalResponse(
                status_code=101, headers=end_to_end(raw, keep_upgrade=True), reason=response.reason
            )
        )
        client_rest = self.conn.trailing_data[0]
        upstream_rest = upstream.conn.trailing_data[0]
        if client_rest:
            upstream.writer.write(client_rest)
        if upstream_rest:
            self.context.stats.bytes_out += len(upstream_rest)
            self.writer.write(upstream_rest)
        try:
            await asyncio.gather(
                _copy(self.reader, upstream.writer, self.config.read_chunk_bytes),
                _copy(
                    upstream.reader, self.writer, self.config.read_chunk_bytes, self.context.stats
                ),
            )
        finally:
            upstream.close()


async def _copy(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    chunk: int,
    to_client: ListenerStats | None = None,
) -> None:
    try:
        while data := await reader.read(chunk):
            if to_client is not None:
                to_client.bytes_out += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
