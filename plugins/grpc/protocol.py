"""The ``grpc`` protocol's runtime part: the listener (the h2 relay, with HTTP/1.1
transcoding on the same port when configured), invocation, the shared channels.

The listener relays every method as HTTP/2 frames on the agent's engine
(plugins/grpc/h2relay.py, agent/h2), over pooled per-endpoint provider connections; a
transcoding listener sniffs each connection first (plugins/grpc/front.py). JSON invocation
and transcoded calls find messages by server reflection (plugins/grpc/invoker.py,
plugins/grpc/reflection.py) and call through grpcio channels (plugins/grpc/channels.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent.runtime.protocols import (
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
        relay = protocol_factory(
            context, self._h2_pool, self.config.max_message_bytes, self.descriptors
        )
        if not self.config.http_transcoding:
            return relay
        from plugins.grpc import front

        return front.protocol_factory(
            context, self.pool, self.descriptors, self.config.max_message_bytes, relay
        )

    def drain(self) -> None:
        """GOAWAY on the h2 relay's client connections (a transcoding listener's HTTP/1.1
        connections are closed by the runtime after their grace period)."""
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
