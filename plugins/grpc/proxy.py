"""The gRPC outbound listener: a grpc.aio server that relays any method as opaque bytes.

Every call, whatever its method and cardinality, is handled as a bidirectional stream of
undecoded messages (unary and the one-sided streams are special cases on the wire), so no
protos are needed. Per call: pick an endpoint (LB per call), open the same method on the
endpoint's pooled channel with the client's metadata and remaining deadline, relay
messages both ways, then hand back the endpoint's headers, trailers and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]

from agent.calls import Call, CallRejected
from agent.cluster.host import Host
from agent.cluster.lb import PickContext
from agent.errors import MeshAgentError
from agent.exchange import Action, Exchange, Next
from agent.governance.policy import Degraded, connection_refusal
from agent.governance.retry import Failure
from agent.runtime.protocols import BoundListener, ListenerContext
from agent.telemetry.propagation import TIMEOUT_MS
from plugins.grpc import governance
from plugins.grpc.channels import ChannelPool
from plugins.grpc.fallback import encode_fallback
from plugins.grpc.reflection import DescriptorCache
from plugins.grpc.triple import triple_headers

log = logging.getLogger(__name__)

# Set by HTTP/2 or by gRPC itself for each hop; the upstream call makes its own.
_HOP_HEADERS = frozenset(
    {
        "content-type",
        "te",
        "user-agent",
        "host",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
    }
)


def forwardable(metadata: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """The application's metadata: HTTP/2 pseudo-headers and per-hop gRPC headers left out."""
    if not metadata:
        return []
    return [(k, v) for k, v in metadata if not k.startswith(":") and k not in _HOP_HEADERS]


class _RelayHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(
        self, context: ListenerContext, pool: ChannelPool, descriptors: DescriptorCache | None
    ) -> None:
        self._context = context
        self._pool = pool
        self._descriptors = descriptors

    def service(self, details: Any) -> Any:
        method: str = details.method

        async def relay(requests: AsyncIterator[bytes], call_context: Any) -> None:
            await self._relay(method, requests, call_context)

        return grpc.stream_stream_rpc_method_handler(relay)

    async def _relay(
        self, method: str, requests: AsyncIterator[bytes], server_context: Any
    ) -> None:
        context = self._context
        context.stats.requests += 1
        record = await governance.admit(context, method, server_context)
        if isinstance(record, Degraded):
            await self._fallback(method, record, server_context)
            return
        pick = governance.pick_context(context, record, server_context)
        # The call's attempts (agent/exchange.py): a rule's retries only (gRPC has none
        # of its own), never once part of the answer reached the client.
        exchange = Exchange(record)
        exchange.exclude_subset(pick.exclude)
        client_metadata = forwardable(server_context.invocation_metadata())
        code: Any = None
        try:
            shape: _Shape = await _request_shape(requests)
            while True:
                excluded = exchange.excluded
                host = context.cluster.choose(
                    PickContext(pick.hash_key, excluded) if excluded else pick
                )
                if host is None:
                    if code is not None:
                        break  # every provider tried: the last failure is the answer
                    context.stats.request_errors += 1
                    code = grpc.StatusCode.UNAVAILABLE
                    await server_context.abort(
                        code, f"meshagent: no provider of {context.service.name} is available"
                    )
                assert host is not None
                if record is not None and not self._pool.has(host):
                    await self._refuse_connection(record, server_context)
                result = await self._attempt(
                    method, host, shape, requests, client_metadata, record, server_context
                )
                code, details, trailers = result.code, result.details, result.trailers
                if record is None or code == grpc.StatusCode.OK or result.relayed:
                    break
                retry = self._retry_shape(exchange, host.id, shape, result.unsent, code, details)
                if retry is None:
                    break
                shape, step = retry
                # Counted as the attempt it was; the call goes on to another provider.
                record.end_attempt(record.attempts[-1], governance.attempt_outcome(code), code.name)
                if step.action is Action.WAIT:
                    await asyncio.sleep(step.delay_s)
            server_context.set_trailing_metadata(forwardable(trailers))
            if code != grpc.StatusCode.OK:
                await server_context.abort(code, details or "")
        finally:
            governance.finish(record, code)

    async def _refuse_connection(self, record: Call, server_context: Any) -> None:
        """Abort the call when a channel to its provider would pass the cluster's
        ``max_connections`` (a channel is one HTTP/2 connection)."""
        cluster = self._context.cluster
        pool = self._pool
        refused = connection_refusal(record, cluster.name, lambda: pool.open_to(cluster.hosts()))
        if refused is None:
            return
        rejection = CallRejected("overloaded", refused)
        record.fail(rejection)
        self._context.stats.request_errors += 1
        await server_context.abort(
            governance.status_code(rejection), f"meshagent: overloaded: {refused}"
        )

    async def _fallback(self, method: str, degraded: Degraded, server_context: Any) -> None:
        """Answer a degradation's fallback value (JSON) as the method's one reply, encoded
        by the reply type that reflection (or the service's descriptor set) describes."""
        context = self._context
        try:
            reply = await encode_fallback(self._context, self._descriptors, method, degraded.value)
        except MeshAgentError as exc:
            log.warning(
                "fallback value not answered: %s",
                exc,
                extra={"listener": context.listener.display_name, "method": method},
            )
            context.stats.request_errors += 1
            await server_context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"meshagent: degraded: the fallback value cannot be encoded: {exc}",
            )
        await server_context.write(reply)

    @staticmethod
    def _retry_shape(
        exchange: Exchange,
        endpoint: str,
        shape: _Shape,
        unsent: bytes | None,
        code: Any,
        details: str | None,
    ) -> tuple[_Shape, Next] | None:
        """What to send again and when, when the call driver retries this failure; None
        when it does not. A client stream can be sent again only when none of it reached
        the provider (the agent keeps no copy of streamed messages)."""
        failure = governance.failure_of(code, details)
        if not isinstance(shape, bytes):
            if unsent is None:
                return None
            failure = Failure(failure.kind, sent=False)
        step = exchange.failed(endpoint, failure)
        if step.action is Action.GIVE_UP:
            return None
        if isinstance(shape, bytes):
            return shape, step
        assert unsent is not None
        return _Resend(unsent), step

    async def _attempt(
        self,
        method: str,
        host: Host,
        shape: _Shape,
        requests: AsyncIterator[bytes],
        client_metadata: list[tuple[str, Any]],
        record: Call | None,
        server_context: Any,
    ) -> _Result:
        """One upstream call on ``host``; what the provider answered, and what of it was
        already relayed to the client."""
        context = self._context
        cluster = context.cluster
        channel = self._pool.get(host, cluster)
        metadata = client_metadata + triple_headers(
            host.instance.metadata, client_metadata, context.service.attributes
        )
        options = {
            "metadata": metadata,
            # The client's deadline goes upstream as grpc-timeout; past it the upstream
            # call ends with DEADLINE_EXCEEDED, so the agent never waits longer.
            "timeout": server_context.time_remaining(),
        }
        if record is not None:
            # What observers send (trace context, hop count) replaces the client's field
            # of that name; the budget left goes as grpc-timeout through ``timeout``.
            mine = record.outgoing(record.begin_attempt(host.id))
            if mine:
                metadata = [(k, v) for k, v in metadata if k not in mine]
                metadata += [(k, v) for k, v in mine.items() if k != TIMEOUT_MS]
                options["metadata"] = metadata
            remaining = record.remaining_s()
            if remaining is not None and remaining < (options["timeout"] or float("inf")):
                options["timeout"] = remaining
        host.active_requests += 1
        call: Any = None
        sender: asyncio.Task[bytes | None] | None = None
        result = _Result()
        try:
            if isinstance(shape, _Resend):
                shape = await _request_shape(requests, shape.first)
            for race in range(_ATTEMPTS):
                if isinstance(shape, bytes):
                    # One message and the end of the stream: sent upstream in one batch
                    # with the headers. (Sent apart, as a stream call does, a provider
                    # that fails the call at once races the message, and grpc then
                    # reports INTERNAL instead of the provider's status.)
                    call = channel.unary_stream(method)(shape, **options)
                else:
                    call = channel.stream_stream(method)(**options)
                    sender = asyncio.get_running_loop().create_task(_send(shape, requests, call))
                try:
                    headers = await call.initial_metadata()
                    if headers:
                        result.relayed = True
                        await server_context.send_initial_metadata(forwardable(headers))
                    while (message := await call.read()) is not grpc.aio.EOF:
                        result.relayed = True
                        await server_context.write(message)
                    result.code = await call.code()
                    result.details = await call.details()
                    result.trailers = await call.trailing_metadata()
                except grpc.aio.AioRpcError as exc:
                    result.code = exc.code()
                    result.details, result.trailers = exc.details(), exc.trailing_metadata()
                result.unsent = None
                if sender is not None:
                    # The client's stream is no longer read once the status goes out.
                    result.unsent = sender.result() if sender.done() else None
                    await _stop(sender)
                    sender = None
                if (
                    result.code == grpc.StatusCode.INTERNAL
                    and result.unsent is not None
                    and not result.relayed
                    and race + 1 < _ATTEMPTS
                ):
                    # That race, lost: the provider ended the call before our first
                    # message left, so it never saw it. Ask again, in one batch if the
                    # client's stream has ended meanwhile.
                    shape = await _request_shape(requests, result.unsent)
                    continue
                break
            return result
        finally:
            # A client that went away (cancelled, reset) cancels this task: the upstream
            # call is cancelled with it, so the provider stops working for nobody.
            if call is not None:
                call.cancel()
            if sender is not None:
                await _stop(sender)
            host.active_requests -= 1
            if result.code == grpc.StatusCode.UNAVAILABLE:
                cluster.report_failure(host)
            else:
                cluster.report_success(host)


@dataclass(slots=True)
class _Result:
    """How one upstream call ended."""

    code: Any = None  # None: it did not end (the client went away)
    details: str | None = None
    trailers: Any = None
    # Headers or messages of this call already went to the client: it cannot be retried.
    relayed: bool = False
    # The client's first message, when the call ended before it could be sent.
    unsent: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Resend:
    """A client stream to send again from its first message (nothing of it was sent)."""

    first: bytes


_Shape = bytes | list[asyncio.Future[bytes | None]] | _Resend


# Upstream calls for one client call when the provider answers before the first message
# could be sent (see _relay): the first try and two more.
_ATTEMPTS = 3

# How long the start of a call waits for the client's first message and then for the end
# of its stream. A unary or server-streaming client sends headers, message and end of
# stream together, so both arrive within this; a streaming client that takes longer is
# relayed as a stream, which is always correct.
_SHAPE_WINDOW_S = 0.005


async def _next(requests: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(requests)
    except StopAsyncIteration:
        return None


async def _request_shape(
    requests: AsyncIterator[bytes], first: bytes | None = None
) -> bytes | list[asyncio.Future[bytes | None]]:
    """The one request message of a client that sent exactly one, or the reads so far of
    any other client's stream (done or pending, to be relayed in order). ``first``: the
    first message, already read."""
    loop = asyncio.get_running_loop()
    reads: list[asyncio.Future[bytes | None]] = []
    try:
        if first is None:
            reads.append(loop.create_task(_next(requests)))
            await asyncio.wait(reads, timeout=_SHAPE_WINDOW_S)
            if not reads[0].done() or reads[0].result() is None:
                return reads
        else:
            reads.append(loop.create_future())
            reads[0].set_result(first)
        reads.append(loop.create_task(_next(requests)))
        await asyncio.wait(reads[1:], timeout=_SHAPE_WINDOW_S)
    except BaseException:  # cancelled: the client went away
        for read in reads:
            read.cancel()
        raise
    message = reads[0].result()
    if reads[1].done() and reads[1].result() is None and message is not None:
        return message
    return reads


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _send(
    started: list[asyncio.Future[bytes | None]], requests: AsyncIterator[bytes], call: Any
) -> bytes | None:
    """Relay the client's stream upstream. Returns the first message if the call ended
    before it could be sent (nothing reached the provider), else None."""
    sent = 0
    message: bytes | None = None
    try:
        for read in started:
            message = await read
            if message is None:
                await call.done_writing()
                return None
            await call.write(message)
            sent += 1
        async for message in requests:
            await call.write(message)
            sent += 1
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        # The upstream call already ended; its status is what the client gets.
        return message if sent == 0 else None
    finally:
        for read in started:
            read.cancel()
    return None


class GrpcListener(BoundListener):
    def __init__(self, server: Any, address: tuple[str, int]) -> None:
        self._server = server
        self._address = address

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    async def close(self, grace_s: float) -> None:
        await self._server.stop(grace_s)


async def serve(
    context: ListenerContext,
    pool: ChannelPool,
    max_message_bytes: int,
    bind: tuple[str, int] | None = None,
    descriptors: DescriptorCache | None = None,
) -> GrpcListener:
    """The relay on the listener's address, or on ``bind`` (behind plugins/grpc/front.py)."""
    address = bind or (context.listener.host, context.listener.port)
    server = grpc.aio.server(
        handlers=[_RelayHandler(context, pool, descriptors)],
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # grpc sets SO_REUSEPORT by default, which would let a second agent bind the
            # same port silently; a port in use must be a startup error.
            ("grpc.so_reuseport", 0),
        ],
    )
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    try:
        port = server.add_insecure_port(f"{host}:{address[1]}")
    except RuntimeError as exc:
        raise OSError(f"address in use or unavailable ({exc})") from None
    await server.start()
    return GrpcListener(server, (address[0], int(port)))
