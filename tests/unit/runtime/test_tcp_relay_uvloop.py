"""The TCP relay on uvloop, the loop the agent runs on (pytest-asyncio's loop is asyncio's).

uvloop starts reading a transport *after* ``connection_made`` returns, so a client's bytes
can arrive before the relay has an upstream: they must be held, not dropped or crashed on
(the relay used to assert there, and under load every connection failed).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvloop

from agent.config import parse_config
from agent.runtime.agent import Agent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(upstream_port: int) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"echo": [{"host": "127.0.0.1", "port": upstream_port}]}},
            }
        ],
        "services": [{"name": "echo", "health": {"enabled": False}}],
        "listeners": [{"port": _free_port(), "service": "echo"}],
        "drain_timeout_s": 1,
    }


async def _echo_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer everything the client sent, once it has half-closed."""
    data = await reader.read()
    writer.write(b"echo:" + data)
    await writer.drain()
    writer.close()


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Sent at once, before the relay can have connected upstream.
    if payload:
        writer.write(payload)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


async def _relay_scenarios() -> None:
    upstream = await asyncio.start_server(_echo_until_eof, "127.0.0.1", 0)
    agent = Agent(parse_config(_config(upstream.sockets[0].getsockname()[1])))
    await agent.start()
    try:
        _listener, _host, port = agent.listener_addresses()[0]
        payloads = [b"x%d" % i * 100 for i in range(50)] + [b""]
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(_exchange(port, p) for p in payloads))
        assert answers == [b"echo:" + p for p in payloads]
        context = agent.listeners[0].context
        async with asyncio.timeout(5):
            await context.idle.wait()
        stats = context.stats
        assert stats.accepted == len(payloads) and stats.rejected == 0
        assert stats.bytes_in == sum(map(len, payloads))
        assert stats.bytes_out == sum(len(a) for a in answers)
    finally:
        await agent.stop()
        upstream.close()


def test_bytes_and_eof_sent_before_the_upstream_connects_are_relayed() -> None:
    uvloop.run(_relay_scenarios())
