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
from typing import Any

import grpc  # type: ignore[import-untyped]

from agent.runtime.protocols import BoundListener, ListenerContext
from plugins.grpc.channels import ChannelPool

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
    def __init__(self, context: ListenerContext, pool: ChannelPool) -> None:
        self._context = context
        self._pool = pool

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
        cluster = context.cluster
        host = cluster.choose()
        if host is None:
            context.stats.request_errors += 1
            await server_context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"meshagent: no provider of {context.service.name} is available",
            )
        assert host is not None
        channel = self._pool.get(host, cluster)
        call = channel.stream_stream(method)(
            metadata=forwardable(server_context.invocation_metadata()),
            # The client's deadline goes upstream as grpc-timeout; past it the upstream
            # call ends with DEADLINE_EXCEEDED, so the agent never waits longer.
            timeout=server_context.time_remaining(),
        )
        host.active_requests += 1
        sender = asyncio.get_running_loop().create_task(_send(requests, call))
        failed = False
        try:
            try:
                headers = await call.initial_metadata()
                if headers:
                    await server_context.send_initial_metadata(forwardable(headers))
                while (message := await call.read()) is not grpc.aio.EOF:
                    await server_context.write(message)
                code = await call.code()
                details = await call.details()
                trailers = await call.trailing_metadata()
            except grpc.aio.AioRpcError as exc:
                code, details, trailers = exc.code(), exc.details(), exc.trailing_metadata()
            failed = code == grpc.StatusCode.UNAVAILABLE
            server_context.set_trailing_metadata(forwardable(trailers))
            if code != grpc.StatusCode.OK:
                await server_context.abort(code, details or "")
        finally:
            # A client that went away (cancelled, reset) cancels this task: the upstream
            # call is cancelled with it, so the provider stops working for nobody.
            call.cancel()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            host.active_requests -= 1
            if failed:
                cluster.report_failure(host)
            else:
                cluster.report_success(host)


async def _send(requests: AsyncIterator[bytes], call: Any) -> None:
    try:
        async for message in requests:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        # The upstream call already ended; its status is what the client gets.
        return


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
    context: ListenerContext, pool: ChannelPool, max_message_bytes: int
) -> GrpcListener:
    config = context.listener
    server = grpc.aio.server(
        handlers=[_RelayHandler(context, pool)],
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # grpc sets SO_REUSEPORT by default, which would let a second agent bind the
            # same port silently; a port in use must be a startup error.
            ("grpc.so_reuseport", 0),
        ],
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    try:
        port = server.add_insecure_port(f"{host}:{config.port}")
    except RuntimeError as exc:
        raise OSError(f"address in use or unavailable ({exc})") from None
    await server.start()
    return GrpcListener(server, (config.host, int(port)))
