from __future__ import annotations

import asyncio
import contextlib

from agent.runtime.agent import Agent
from tests.fixtures.net import async_wait_until, free_port
from tests.unit.runtime.conftest import AgentFactory, EchoServer, agent_config


async def connect(agent: Agent) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    _listener, host, port = agent.listener_addresses()[0]
    return await asyncio.open_connection(host, port)


async def roundtrip(agent: Agent, payload: bytes = b"ping") -> bytes:
    reader, writer = await connect(agent)
    writer.write(payload)
    writer.write_eof()
    data = await reader.read()
    await close(writer)
    return data


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_relays_both_ways_and_half_close(start_agent: AgentFactory) -> None:
    upstream = await EchoServer("u1").start()
    agent = await start_agent(agent_config([upstream.port]))
    # The client's EOF reaches the upstream, whose answer after EOF still reaches us.
    assert await roundtrip(agent, b"hello") == b"u1:hellobye from u1"
    stats = agent.listeners[0].context.stats
    await async_wait_until(lambda: stats.active == 0)
    assert stats.accepted == 1
    assert stats.bytes_in == 5 and stats.bytes_out == len(b"u1:hellobye from u1")
    await upstream.stop()


async def test_round_robin_across_endpoints(start_agent: AgentFactory) -> None:
    ups = [await EchoServer(f"u{i}").start() for i in range(3)]
    agent = await start_agent(agent_config([u.port for u in ups]))
    answers = [await roundtrip(agent) for _ in range(6)]
    assert sorted(a.split(b":")[0] for a in answers) == [b"u0", b"u0", b"u1", b"u1", b"u2", b"u2"]
    for up in ups:
        await up.stop()


async def test_connect_failure_retries_another_endpoint_then_ejects(
    start_agent: AgentFactory,
) -> None:
    live = await EchoServer("live").start()
    dead_port = free_port()  # nothing listens there
    agent = await start_agent(
        agent_config([dead_port, live.port], outlier={"consecutive_failures": 2})
    )
    # Every client is served although one endpoint refuses every connect.
    for _ in range(6):
        assert (await roundtrip(agent)).startswith(b"live:")
    dead = agent.clusters["echo"].get(f"127.0.0.1:{dead_port}")
    assert dead is not None
    assert dead.stats.connect_failures == 2 and dead.stats.ejections == 1
    assert dead.ejected_until > 0
    await live.stop()


async def test_no_endpoint_closes_the_client_and_counts_it(start_agent: AgentFactory) -> None:
    agent = await start_agent(agent_config([free_port()], connect_attempts=1))
    reader, writer = await connect(agent)
    assert await reader.read() == b""
    await close(writer)
    assert agent.listeners[0].context.stats.rejected == 1


async def test_backpressure_pauses_the_client_when_upstream_does_not_read(
    start_agent: AgentFactory,
) -> None:
    upstream = await EchoServer("slow", read=False).start()
    agent = await start_agent(agent_config([upstream.port]))
    _reader, writer = await connect(agent)
    context = agent.listeners[0].context
    await async_wait_until(lambda: context.connections)
    (downstream,) = context.connections
    upstream_side = agent.clusters["echo"].hosts()[0]
    await async_wait_until(lambda: upstream_side.active_requests == 1, what="upstream connected")
    assert downstream.is_reading()
    chunk = b"x" * 65536

    async def flood() -> None:
        while True:
            writer.write(chunk)
            await writer.drain()

    flooding = asyncio.get_running_loop().create_task(flood())
    # The agent must stop reading from the client instead of buffering without bound.
    await async_wait_until(lambda: not downstream.is_reading(), what="client reads paused")
    flooding.cancel()
    # Unsent data would hold a graceful close forever: the upstream never reads.
    writer.transport.abort()
    await upstream.stop()


async def test_drain_waits_for_open_connections(start_agent: AgentFactory) -> None:
    upstream = await EchoServer("u").start()
    agent = await start_agent(agent_config([upstream.port]))
    reader, writer = await connect(agent)
    writer.write(b"a")
    assert await reader.readexactly(3) == b"u:a"
    draining = asyncio.get_running_loop().create_task(agent.drain_and_stop())
    await async_wait_until(lambda: agent.draining)
    # Still served while draining; new connections are refused.
    writer.write(b"b")
    assert await reader.readexactly(3) == b"u:b"
    assert not agent.ready()[0]
    writer.write_eof()
    assert await reader.read() == b"bye from u"
    await asyncio.wait_for(draining, 5)
    await close(writer)
    await upstream.stop()
