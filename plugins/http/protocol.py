"""The ``http`` protocol's runtime part: the listener factory, invocation, the shared pools.

The listener (plugins/http/h1_listener.py) and the invoker (plugins/http/invoker.py) are imported
when first used, so an agent without HTTP services never loads httptools, h11 or h2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from agent.runtime.protocols import (
    HttpInvokeRequest,
    HttpInvokeResult,
    ListenerContext,
    ProtocolSupport,
)
from plugins.http.config import HttpConfig


class HttpProtocol(ProtocolSupport):
    name = "http"

    def __init__(self, config: HttpConfig) -> None:
        from agent.h2.upstream import H2Pool
        from plugins.http.h1_upstream import FastPool
        from plugins.http.h2_listener import upstream_settings
        from plugins.http.h11_pool import UpstreamPool

        self.config = config
        # h11 stream connections (invocation, HTTP/2 streams, upgrades) ...
        self.pool = UpstreamPool(config.max_idle_per_endpoint, config.idle_timeout_s)
        # ... the listener's HTTP/1.1 fast path's protocol connections ...
        self.fast_pool = FastPool(config.max_idle_per_endpoint, config.idle_timeout_s)
        # ... and HTTP/2 connections to providers whose service says upstream_protocol: h2.
        self.h2_pool = H2Pool(upstream_settings())
        # Client connections' tasks, so that close() ends those a drain left open.
        self.sessions: set[asyncio.Task[None]] = set()
        # The listeners (and capture pipelines) served, whose connections a drain ends.
        self.contexts: list[ListenerContext] = []

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        from plugins.http.h1_listener import HttpProxyConnection
        from plugins.http.routing import Router

        # Routes to unknown services were refused when the agent was built
        # (HttpConfig.service_references, checked in agent/runtime/agent.py).
        router = Router(context, self.config.routes)
        self.contexts.append(context)
        config, fast_pool, pool, sessions = self.config, self.fast_pool, self.pool, self.sessions
        h2_pool = self.h2_pool

        def make() -> asyncio.Protocol:
            # An asyncio protocol by its methods (compiled, its one base is ClientSide).
            connection = HttpProxyConnection(
                context, config, fast_pool, h2_pool, pool, router, sessions
            )
            return cast(asyncio.Protocol, connection)

        return make

    async def invoke_http(self, request: HttpInvokeRequest) -> HttpInvokeResult:
        from plugins.http.invoker import invoke_http

        return await invoke_http(request, self.config, self.pool)

    def drain(self) -> None:
        from plugins.http.h1_listener import HttpProxyConnection
        from plugins.http.h1_session import H11Connection
        from plugins.http.h2_listener import H2ClientConnection

        for context in self.contexts:
            for transport in list(context.connections):
                # Capture contexts share their connection set with other protocols.
                connection = transport.get_protocol()
                if isinstance(connection, HttpProxyConnection | H11Connection | H2ClientConnection):
                    connection.drain()

    async def close(self) -> None:
        sessions = list(self.sessions)
        for task in sessions:
            task.cancel()
        if sessions:
            await asyncio.gather(*sessions, return_exceptions=True)
        self.fast_pool.close()
        self.h2_pool.close()
        await self.pool.close()
