"""The ``grpc`` protocol's runtime part: the listener (a grpc.aio server or the h2 relay),
invocation, the shared channels.

The listener is a grpc.aio server of its own (:meth:`GrpcProtocol.bind`), relaying every
method as bytes over pooled per-endpoint channels (plugins/grpc/proxy.py). JSON invocation
finds messages by server reflection (plugins/grpc/invoker.py, plugins/grpc/reflection.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent.runtime.protocols import (
    BoundListener,
    InvokeRequest,
    InvokeResult,
    ListenerContext,
    ProtocolSupport,
)
from plugins.grpc.channels import ChannelPool
from plugins.grpc.config import GrpcConfig
from plugins.grpc.reflection import DescriptorCache


class GrpcProtocol(ProtocolSupport):
    name = "grpc"

    def __init__(self, config: GrpcConfig) -> None:
        self.config = config
        self.pool = ChannelPool(config.max_message_bytes)
        self.descriptors = DescriptorCache(config.reflection_timeout_s)
        self._h2_pool: Any = None
        self._contexts: list[ListenerContext] = []  # the h2 relay's, for drain()

    async def bind(self, context: ListenerContext) -> BoundListener | None:
        config = self.config
        if config.relay == "h2" and not config.http_transcoding:
            return None  # the runtime binds outbound_listener() on its own loop
        if config.http_transcoding:
            from plugins.grpc.front import serve_mixed

            return await serve_mixed(context, self.pool, self.descriptors, config.max_message_bytes)
        from plugins.grpc.proxy import serve

        return await serve(
            context, self.pool, config.max_message_bytes, descriptors=self.descriptors
        )

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        from agent.h2.upstream import H2Pool
        from plugins.grpc.h2relay import protocol_factory, upstream_settings

        self._contexts.append(context)
        if self._h2_pool is None:
            config = self.config
            self._h2_pool = H2Pool(
                upstream_settings(),
                context.service.connect_timeout_s,
                config.max_connections_per_endpoint,
                config.ping_interval_s,
                config.ping_timeout_s,
            )
        return protocol_factory(
            context, self._h2_pool, self.config.max_message_bytes, self.descriptors
        )

    def drain(self) -> None:
        """GOAWAY on the h2 relay's client connections (the grpcio relay's server is
        stopped with a grace period by the runtime)."""
        from plugins.grpc.h2relay import drain_connection

        for context in self._contexts:
            for transport in list(context.connections):
                drain_connection(transport.get_protocol())

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        from plugins.grpc.invoker import invoke

        return await invoke(request, self.pool, self.descriptors)

    async def close(self) -> None:
        await self.pool.close()
        if self._h2_pool is not None:
            self._h2_pool.close()
