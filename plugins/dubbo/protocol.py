"""The ``dubbo`` protocol plugin: a Dubbo-aware outbound listener and generic invocation.

The listener (plugins/dubbo/proxy.py) and the JSON invoker (plugins/dubbo/invoker.py) are
imported when first used, so an agent without Dubbo services never loads them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.discovery.registry import Registry
from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import InvokeRequest, InvokeResult, ListenerContext, ProtocolSupport
from plugins.dubbo.frame import DEFAULT_MAX_BODY
from plugins.dubbo.options import DubboServiceOptions
from plugins.dubbo.upstream import DEFAULT_HEARTBEAT_S, UpstreamPool


class DubboConfig(BaseModel):
    """Settings of a Dubbo listener (``listeners[].config``) and of generic invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Dubbo's own ``payload`` default: 8 MiB per frame body.
    max_body_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_BODY
    # Dubbo's consumer default ``timeout`` is 1000 ms; per-method settings override it.
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    heartbeat_s: Annotated[float, Field(gt=0)] = DEFAULT_HEARTBEAT_S
    connect_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Requests one client connection may have waiting for providers; past it the client
    # gets SERVER_THREADPOOL_EXHAUSTED_ERROR, as from a Dubbo provider whose pool is full.
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # Connections per provider (Dubbo's ``connections``; 0 there means one shared). More
    # than one keeps a slow call from holding up the calls behind it on its connection;
    # the pool opens them as calls find every connection busy.
    connections_per_endpoint: Annotated[int, Field(ge=1, le=64)] = 1
    connection_pick: Literal["least_pending", "round_robin"] = "least_pending"


class DubboProtocol(ProtocolSupport):
    name = "dubbo"

    def __init__(self, config: DubboConfig) -> None:
        self.config = config
        self.pool = UpstreamPool(
            config.connect_timeout_s,
            config.max_body_bytes,
            config.heartbeat_s,
            config.connections_per_endpoint,
            config.connection_pick,
        )

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        from plugins.dubbo.proxy import DubboProxyConnection

        return lambda: DubboProxyConnection(context, self.config, self.pool)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        from plugins.dubbo.invoker import invoke

        return await invoke(request, self.config, self.pool)

    def attach_registry(self, registry: Registry) -> None:
        # Duck-typed: a registry with Dubbo application-level discovery (ZooKeeper today)
        # asks us for metadata that providers keep to themselves (MetadataService).
        hook = getattr(registry, "set_local_metadata_resolver", None)
        if callable(hook):
            from plugins.dubbo.metadata import MetadataResolver

            hook(MetadataResolver(self.pool))

    async def close(self) -> None:
        await self.pool.close()


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "dubbo",
    DubboConfig,
    DubboProtocol,
    service_options_model=DubboServiceOptions,
)
