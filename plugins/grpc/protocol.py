"""The ``grpc`` protocol plugin: a gRPC-aware outbound listener that needs no protos.

The listener is a grpc.aio server of its own (:meth:`GrpcProtocol.bind`), relaying every
method as bytes over pooled per-endpoint channels (plugins/grpc/proxy.py).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import BoundListener, ListenerContext, ProtocolSupport
from plugins.grpc.channels import ChannelPool

# gRPC's own default receive limit.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


class GrpcConfig(BaseModel):
    """Settings of a gRPC listener (``listeners[].config``) and of JSON invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Larger messages, either way, end the call with RESOURCE_EXHAUSTED.
    max_message_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE


class GrpcProtocol(ProtocolSupport):
    name = "grpc"

    def __init__(self, config: GrpcConfig) -> None:
        self.config = config
        self.pool = ChannelPool(config.max_message_bytes)

    async def bind(self, context: ListenerContext) -> BoundListener:
        from plugins.grpc.proxy import serve

        return await serve(context, self.pool, self.config.max_message_bytes)

    async def close(self) -> None:
        await self.pool.close()


PLUGIN: Plugin[ProtocolSupport] = Plugin(PluginKind.PROTOCOL, "grpc", GrpcConfig, GrpcProtocol)
