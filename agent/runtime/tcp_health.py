"""The default active health check: a TCP connect that completes within the timeout."""

from __future__ import annotations

import asyncio

from agent.cluster.host import Host
from agent.plugins import EmptyConfig, Plugin, PluginKind
from agent.runtime.health import HealthChecker


class TcpConnectChecker(HealthChecker):
    async def check(self, host: Host) -> bool:
        # A bare protocol, not a stream pair: the check needs the connect, not a reader,
        # and an idle agent spends most of its CPU here (docs/benchmarks.md, idle cost).
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, host.instance.host, host.instance.port
        )
        transport.close()
        return True


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "tcp", EmptyConfig, lambda _config: TcpConnectChecker()
)
