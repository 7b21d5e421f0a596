"""The default active health check: a TCP connect that completes within the timeout."""

from __future__ import annotations

import asyncio
import contextlib

from agent.cluster.host import Host
from agent.plugins import EmptyConfig, Plugin, PluginKind
from agent.runtime.health import HealthChecker


class TcpConnectChecker(HealthChecker):
    async def check(self, host: Host) -> bool:
        _reader, writer = await asyncio.open_connection(host.instance.host, host.instance.port)
        writer.close()
        # The peer may reset right after accepting: the connect itself succeeded.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "tcp", EmptyConfig, lambda _config: TcpConnectChecker()
)
