from __future__ import annotations

import asyncio

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.runtime.health import HealthChecker, probe
from agent.runtime.tcp_health import TcpConnectChecker
from tests.fixtures.net import free_port


class Hangs(HealthChecker):
    async def check(self, host: Host) -> bool:
        await asyncio.Event().wait()
        return True


class Breaks(HealthChecker):
    async def check(self, host: Host) -> bool:
        raise RuntimeError("bug in a checker")


def host(port: int) -> Host:
    return Host(Instance(f"127.0.0.1:{port}", "127.0.0.1", port))


async def test_tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await probe(TcpConnectChecker(), host(port), 1.0)
    server.close()
    await server.wait_closed()
    assert not await probe(TcpConnectChecker(), host(free_port()), 1.0)


async def test_a_hanging_or_broken_checker_counts_as_a_failed_probe() -> None:
    assert not await probe(Hangs(), host(1), 0.05)
    assert not await probe(Breaks(), host(1), 1.0)
