"""The ``dubbo`` protocol's runtime part: the listener factory, invocation, the shared pool.

The listener (plugins/dubbo/proxy.py) and the JSON invoker (plugins/dubbo/invoker.py) are
imported when first used, so an agent without Dubbo services never loads them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.discovery.registry import Registry
from agent.runtime.protocols import InvokeRequest, InvokeResult, ListenerContext, ProtocolSupport
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.upstream import UpstreamPool


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
