"""The ``thrift`` protocol's runtime part: the listener factory, invocation, the shared pool.

The listener (plugins/thrift/proxy.py) and the invoker (plugins/thrift/invoker.py, which
needs thriftpy2) are imported when first used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.runtime.protocols import InvokeRequest, InvokeResult, ListenerContext, ProtocolSupport
from plugins.thrift.config import ThriftConfig
from plugins.thrift.upstream import UpstreamPool


class ThriftProtocol(ProtocolSupport):
    name = "thrift"

    def __init__(self, config: ThriftConfig) -> None:
        self.config = config
        self.pool = UpstreamPool(
            config.connect_timeout_s,
            config.max_message_bytes,
            config.connections_per_endpoint,
            config.connection_pick,
        )

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        from plugins.thrift.proxy import Routes, ThriftProxyConnection

        # Checked and built once per listener (an unknown service in ``routes`` is a
        # config error); IDLs are loaded here only for services that name one.
        routes = Routes.build(context, self.config)
        return lambda: ThriftProxyConnection(context, self.config, self.pool, routes)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        from plugins.thrift.invoker import invoke

        return await invoke(request, self.config, self.pool)

    async def close(self) -> None:
        await self.pool.close()
