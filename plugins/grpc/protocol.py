"""The ``grpc`` protocol plugin: a gRPC-aware outbound listener that needs no protos.

The listener is a grpc.aio server of its own (:meth:`GrpcProtocol.bind`), relaying every
method as bytes over pooled per-endpoint channels (plugins/grpc/proxy.py). JSON invocation
finds messages by server reflection (plugins/grpc/invoker.py, plugins/grpc/reflection.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import (
    BoundListener,
    InvokeRequest,
    InvokeResult,
    ListenerContext,
    ProtocolSupport,
)
from plugins.grpc.channels import ChannelPool
from plugins.grpc.invoker import GrpcServiceOptions
from plugins.grpc.reflection import DescriptorCache

# gRPC's own default receive limit.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


class GrpcConfig(BaseModel):
    """Settings of a gRPC listener (``listeners[].config``) and of JSON invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Larger messages, either way, end the call with RESOURCE_EXHAUSTED.
    max_message_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE
    # A server reflection lookup (JSON invocation) that takes longer fails.
    reflection_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # HTTP/1.1 requests on the listener's port are transcoded to gRPC calls by the
    # service's google.api.http rules; gRPC (HTTP/2) shares the port (plugins/grpc/front.py).
    http_transcoding: bool = False
    # The listener's engine: "grpcio", a grpc.aio server relaying messages (plugins/grpc/
    # proxy.py), or "h2", an HTTP/2 frame relay on the agent's own loop (plugins/grpc/
    # h2relay.py). Not combined with http_transcoding (which splices to "grpcio").
    relay: Literal["grpcio", "h2"] = "grpcio"


class GrpcProtocol(ProtocolSupport):
    name = "grpc"

    def __init__(self, config: GrpcConfig) -> None:
        self.config = config
        self.pool = ChannelPool(config.max_message_bytes)
        self.descriptors = DescriptorCache(config.reflection_timeout_s)
        self._h2_pool: Any = None

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
        from plugins.grpc.h2relay import UpstreamPool, protocol_factory

        if self._h2_pool is None:
            self._h2_pool = UpstreamPool(context.service.connect_timeout_s)
        return protocol_factory(context, self._h2_pool, self.config.max_message_bytes)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        from plugins.grpc.invoker import invoke

        return await invoke(request, self.pool, self.descriptors)

    async def close(self) -> None:
        await self.pool.close()
        if self._h2_pool is not None:
            self._h2_pool.close()


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "grpc",
    GrpcConfig,
    GrpcProtocol,
    service_options_model=GrpcServiceOptions,
)
