"""HTTP invocation over the OpenAPI: ``ANY /v1/invoke/http/{service}/{path}``, and the
forwarding it shares with HTTP/2 client streams (``forward``).

After Dapr's service invocation: the caller's method, path, query, headers and body go to
an endpoint the service's cluster picks, and the provider's status, headers and body come
back as they are. Hop-by-hop fields are dropped; Host names the endpoint, since the
caller's named the agent. The agent's own failures are UpstreamErrors (no endpoint 503,
connect failure 502, timeout 504) for the API layer to turn into problem details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import h11

from agent.calls import Call, Direction, Outcome, outcome_of
from agent.errors import ConnectError, UpstreamError, UpstreamTimeout
from agent.exchange import Action
from agent.governance.retry import Failure, FailureKind
from agent.runtime.protocols import HttpInvokeRequest, HttpInvokeResult
from agent.telemetry.propagation import propagation_headers
from plugins.http.calls import RETRYABLE_STATUSES, exchange_for
from plugins.http.config import HttpConfig
from plugins.http.h11_pool import UpstreamConnection, UpstreamPool
from plugins.http.headers import Headers, end_to_end, header_value
from plugins.http.routing import Target, service_target

log = logging.getLogger(__name__)

# Not forwarded: Host names the agent, and the API server has answered Expect already.
_REPLACED = frozenset({b"host", b"expect"})


async def invoke_http(
    request: HttpInvokeRequest, config: HttpConfig, pool: UpstreamPool
) -> HttpInvokeResult:
    length = header_value(request.headers, b"content-length")
    chunked = length is None and header_value(request.headers, b"transfer-encoding") is not None
    headers = [(n, v) for n, v in end_to_end(request.headers) if n.lower() not in _REPLACED]
    url = request.path + ("?" + request.query if request.query else "")
    calls = request.calls
    incoming = propagation_headers({n.decode("latin-1"): v.decode("latin-1") for n, v in headers})
    call = calls.start(
        "http",
        Direction.INVOKE,
        calls.outbound_route(request.service.name, request.method.upper()),
        incoming,
    )
    try:
        result = await forward(
            pool,
            service_target(request.service, request.cluster),
            request.method.upper().encode("ascii"),
            url.encode("latin-1"),
            headers,
            None,
            chunked or (length is not None and length.strip() != b"0"),
            request.body,
            call,
        )
    except BaseException as exc:
        call.fail(exc)
        raise
    # Ends at the response head: the body streams to the caller afterwards.
    call.finish(Outcome.OK if result.status < 500 else Outcome.APP_ERROR, str(result.status))
    return result


async def forward(
    pool: UpstreamPool,
    target: Target,
    method: bytes,
    url: bytes,
    headers: Headers,
    host_header: bytes | None,
    has_body: bool,
    body: AsyncIterator[bytes],
    call: Call | None = None,
) -> HttpInvokeResult:
    """Send one request to an endpoint of ``target`` and return the response head.

    ``headers`` are end-to-end already; Host is ``host_header``, or the endpoint's address
    when None. A body without Content-Length is sent chunked. Retries as configured.
    """
    name = target.service.name
    if has_body and header_value(headers, b"content-length") is None:
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
    # The call's attempts (agent/exchange.py): which providers, the rule's retries or the
    # service's, backoff, the deadline, the stale keep-alive resend.
    exchange = exchange_for(call, target, method, has_body, headers)
    decision = exchange.decision
    step = exchange.begin()
    while True:
        if step.action is Action.WAIT:
            await asyncio.sleep(step.delay_s)
        try:
            upstream = await pool.acquire(
                target.cluster,
                target.service,
                fresh=exchange.stale_resent,
                exclude=exchange.tried,
                subset_out=exchange.subset_out,
            )
        except ConnectError:
            step = exchange.failed("", Failure(FailureKind.CONNECT, sent=False))
            if step.action is not Action.GIVE_UP:
                continue
            raise
        host = upstream.host
        instance = host.instance
        authority = host_header or f"{instance.host}:{instance.port}".encode()
        sent = headers
        record = call.begin_attempt(host.id) if call is not None else None
        if record is not None and call is not None:
            # What observers set replaces the caller's field of that name (Call.outgoing).
            mine = call.outgoing(record)
            if mine:
                sent = [(n, v) for n, v in headers if n.lower().decode("latin-1") not in mine]
                sent += [(k.encode(), v.encode()) for k, v in mine.items()]
        outgoing = h11.Request(method=method, target=url, headers=[(b"Host", authority), *sent])
        host.active_requests += 1
        pump: asyncio.Task[None] | None = None
        timeout_s = exchange.timeout_s(target.timeout_s)
        try:
            await upstream.send(outgoing)
            if has_body:
                pump = asyncio.get_running_loop().create_task(_send_body(upstream, body))
            else:
                await upstream.send(h11.EndOfMessage())
            async with asyncio.timeout(timeout_s):
                response = await _response_head(upstream)
        except TimeoutError:
            _abandon(upstream, pump)
            target.cluster.report_failure(host)
            host.active_requests -= 1
            if call is not None and record is not None:
                call.end_attempt(record, Outcome.TIMEOUT)
            step = exchange.failed(host.id, Failure(FailureKind.TIMEOUT, sent=True))
            if step.action is not Action.GIVE_UP:
                continue
            raise UpstreamTimeout(
                f"service {name!r}: endpoint {host.id} sent no response within {timeout_s:g}s"
            ) from None
        except (ConnectionError, OSError, h11.RemoteProtocolError) as exc:
            _abandon(upstream, pump)
            host.active_requests -= 1
            if call is not None and record is not None:
                call.end_attempt(record, Outcome.UPSTREAM_ERROR)
            if upstream.reused:
                # A kept-alive connection the provider closed as we reused it.
                step = exchange.stale(host.id)
                if step.action is Action.RESEND:
                    continue
            else:
                step = exchange.failed(host.id, Failure(FailureKind.RESET, sent=True))
            target.cluster.report_failure(host)
            if step.action is not Action.GIVE_UP:
                continue
            raise UpstreamError(
                f"service {name!r}: endpoint {host.id} failed: {exc or type(exc).__name__}"
            ) from None
        except BaseException as exc:
            _abandon(upstream, pump)
            host.active_requests -= 1
            if call is not None and record is not None:
                call.end_attempt(record, outcome_of(exc))
            raise
        if call is not None and record is not None:
            status = response.status_code
            ok = Outcome.OK if status < 500 else Outcome.APP_ERROR
            call.end_attempt(record, ok, str(status))
        if response.status_code >= 500:
            target.cluster.report_failure(host)
        else:
            target.cluster.report_success(host)
        if response.status_code in RETRYABLE_STATUSES and decision is not None:
            step = exchange.failed(host.id, Failure(FailureKind.STATUS, sent=True))
            if step.action is not Action.GIVE_UP:
                # The retried answer is dropped with its connection (its body unread).
                _abandon(upstream, pump)
                host.active_requests -= 1
                continue
        response_body = _ResponseBody(upstream, pool, pump)
        return HttpInvokeResult(
            status=response.status_code,
            headers=end_to_end(list(response.headers.raw_items())),
            body=response_body,
            close=response_body.close,
            endpoint=host.id,
        )


def _abandon(upstream: UpstreamConnection, pump: asyncio.Task[None] | None) -> None:
    if pump is not None:
        pump.cancel()
    upstream.close()


async def _send_body(upstream: UpstreamConnection, body: AsyncIterator[bytes]) -> None:
    try:
        async for chunk in body:
            if chunk:
                await upstream.send(h11.Data(data=chunk))
        await upstream.send(h11.EndOfMessage())
    except (ConnectionError, OSError):
        return  # the provider's side failed: the response read says how
    except Exception as exc:
        # The caller went away mid-body: the provider must not take a partial request.
        log.warning("http invoke body failed: %s", exc, extra={"endpoint": upstream.host.id})
        upstream.writer.transport.abort()


async def _response_head(upstream: UpstreamConnection) -> h11.Response:
    while True:
        event = await upstream.next_event()
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            continue  # 100 Continue, 103 Early Hints: the API server speaks for itself
        raise h11.RemoteProtocolError(f"no response from the provider ({event!r})")


class _ResponseBody:
    """The provider's body, chunk by chunk; the connection goes back to the pool at its
    end, or is closed if the caller stops early (``close``, idempotent)."""

    def __init__(
        self, upstream: UpstreamConnection, pool: UpstreamPool, pump: asyncio.Task[None] | None
    ) -> None:
        self.upstream = upstream
        self.pool = pool
        self.pump = pump
        self.finished = False
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self.closed:
            event = await self.upstream.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.finished = True
                break
            else:
                raise h11.RemoteProtocolError(f"response cut short ({event!r})")
        await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.upstream.host.active_requests -= 1
        if self.pump is not None:
            # Still sending when the answer ended: release() sees the exchange unfinished.
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
        if self.finished:
            self.pool.release(self.upstream)
        else:
            self.upstream.close()
