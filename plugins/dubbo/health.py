"""The ``dubbo`` active health check: a Dubbo heartbeat on a fresh connection.

A TCP connect only says the port is open; a Dubbo provider whose IO threads are stuck
still accepts. This probe connects, sends a heartbeat request (an event frame with a null
body, what Dubbo's own HeaderExchangeClient sends on idle) and passes only when a
heartbeat response with the same request id comes back. The runner applies the timeout:
a server that accepts and never answers fails the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from agent.cluster.host import Host
from agent.codec import NEED_DATA
from agent.plugins import EmptyConfig, Plugin, PluginKind
from agent.runtime.health import HealthChecker
from plugins.dubbo.body import heartbeat_request
from plugins.dubbo.frame import Frame, FrameDecoder, Status

# Heartbeat bodies are one byte; anything bigger from a provider here is not an answer.
_MAX_BODY = 64 * 1024


class DubboHeartbeatChecker(HealthChecker):
    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def check(self, host: Host) -> bool:
        reader, writer = await asyncio.open_connection(host.instance.host, host.instance.port)
        try:
            request_id = next(self._ids)
            writer.write(heartbeat_request(request_id))
            decoder = FrameDecoder(_MAX_BODY)
            while True:
                data = await reader.read(4096)
                if not data:
                    return False  # closed without answering
                decoder.receive_data(data)
                while (frame := decoder.next_event()) is not NEED_DATA:
                    assert isinstance(frame, Frame)
                    header = frame.header
                    if not header.request and header.request_id == request_id:
                        return header.event and header.status == Status.OK
                    # A provider may send its own heartbeat first: skip anything else.
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "dubbo", EmptyConfig, lambda _config: DubboHeartbeatChecker()
)
