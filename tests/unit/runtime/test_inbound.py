"""The inbound listener in one process: relay to the app, the limit, readiness, drain."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from agent.runtime.agent import Agent
from tests.fixtures.net import async_wait_until, free_port
from tests.unit.runtime.conftest import AgentFactory, EchoServer


def config(app_port: int, **inbound: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "inbound": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": 0,
            "app_port": app_port,
            "health": {"interval_s": 0.05, "timeout_s": 0.5},
            **inbound,
        },
        "drain_timeout_s": 1,
    }


async def dial(agent: Agent) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert agent.inbound is not None
    return await asyncio.open_connection(*agent.inbound.address)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_relays_to_the_app_and_counts(start_agent: AgentFactory) -> None:
    app = await EchoServer("app").start()
    agent = await start_agent(config(app.port))
    reader, writer = await dial(agent)
    writer.write(b"hi")
    writer.write_eof()
    assert await reader.read() == b"app:hibye from app"
    await close(writer)
    assert agent.inbound is not None
    stats = agent.inbound.context.stats
    await async_wait_until(lambda: stats.active == 0)
    assert stats.accepted == 1 and stats.bytes_in == 2
    assert ("inbound", "inbound", stats) in agent.side_listener_stats()
    await app.stop()


async def test_connections_over_the_limit_are_closed_and_counted(
    start_agent: AgentFactory,
) -> None:
    app = await EchoServer("app").start()
    agent = await start_agent(config(app.port, max_connections=2))
    assert agent.inbound is not None
    inbound = agent.inbound
    held = [await dial(agent) for _ in range(2)]
    await async_wait_until(lambda: inbound.context.stats.active == 2)
    reader, writer = await dial(agent)
    with contextlib.suppress(ConnectionResetError):  # closed, or reset with bytes unread
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert inbound.over_limit == 1
    for _reader, held_writer in held:
        await close(held_writer)
    await close(writer)
    await app.stop()


async def test_the_limit_holds_for_a_burst_of_connections(start_agent: AgentFactory) -> None:
    app = await EchoServer("app").start()
    agent = await start_agent(config(app.port, max_connections=2))
    assert agent.inbound is not None
    inbound = agent.inbound
    # Accepted in one go, before any connection_made has run: still only two get through.
    burst = await asyncio.gather(*(dial(agent) for _ in range(6)))
    await async_wait_until(lambda: inbound.over_limit == 4, what="four refused")
    # The two admitted send nothing: relayed once the sniff times out.
    await async_wait_until(lambda: inbound.context.stats.accepted == 2, what="two relayed")
    assert inbound.over_limit == 4 and inbound.sniff_timeouts == 2
    for _reader, writer in burst:
        await close(writer)
    await app.stop()


async def test_readiness_follows_the_app_health_check(start_agent: AgentFactory) -> None:
    port = free_port()
    agent = await start_agent(config(port, health={"interval_s": 0.05, "unhealthy_threshold": 2}))
    ready, reasons = agent.ready()
    assert not ready
    assert any(f"local app 127.0.0.1:{port} not healthy" in r for r in reasons)
    app = await EchoServer("app").start(port)
    await async_wait_until(lambda: agent.ready()[0], within=5, what="ready once the app is up")
    await app.stop()
    await async_wait_until(lambda: not agent.ready()[0], within=5, what="not ready once down")


async def test_without_a_health_check_the_app_counts_as_healthy(
    start_agent: AgentFactory,
) -> None:
    agent = await start_agent(config(free_port(), health={"enabled": False}))
    assert agent.ready() == (True, [])


async def test_drain_stops_taking_inbound_connections_first(start_agent: AgentFactory) -> None:
    app = await EchoServer("app").start()
    agent = await start_agent(config(app.port))
    assert agent.inbound is not None
    address = agent.inbound.address
    reader, writer = await dial(agent)
    writer.write(b"a")
    assert await reader.readexactly(5) == b"app:a"
    drain = asyncio.get_running_loop().create_task(agent.drain_and_stop())
    # While the open connection keeps the drain waiting, no new one is accepted...
    await async_wait_until(lambda: agent.draining)
    refused = False
    try:
        _r, w = await asyncio.open_connection(*address)
        await close(w)
    except OSError:
        refused = True
    assert refused
    # ...and the open one still works until it ends.
    writer.write(b"b")
    assert await reader.readexactly(5) == b"app:b"
    await close(writer)
    await asyncio.wait_for(drain, 5)
    await app.stop()


async def test_a_server_first_protocol_is_relayed_after_the_sniff_timeout(
    start_agent: AgentFactory,
) -> None:
    """A client that waits for the server to speak (SMTP, MySQL) is not stalled past the
    sniff timeout: it is relayed as TCP, and the greeting reaches it."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        data = await reader.readline()
        writer.write(b"got " + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = await start_agent(config(port, sniff_timeout_s=0.1))
    reader, writer = await dial(agent)
    assert await asyncio.wait_for(reader.readline(), 5) == b"220 ready\r\n"
    writer.write(b"QUIT\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b"got QUIT\r\n"
    await close(writer)
    assert agent.inbound is not None
    assert agent.inbound.sniff_timeouts == 1
    assert agent.inbound.pipelines == {"tcp": 1}
    server.close()
    await server.wait_closed()


async def test_without_protocols_everything_is_relayed_at_once(start_agent: AgentFactory) -> None:
    app = await EchoServer("app").start()
    agent = await start_agent(config(app.port, protocols=[]))
    reader, writer = await dial(agent)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")  # HTTP, but not read as such
    writer.write_eof()
    assert await reader.read() == b"app:GET / HTTP/1.1\r\n\r\nbye from app"
    await close(writer)
    assert agent.inbound is not None
    assert agent.inbound.pipelines == {}
    await app.stop()
