from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.fixtures.net import free_port


class EchoServer:
    """An upstream that answers every chunk with ``{name}:{chunk}`` and counts connections."""

    def __init__(self, name: str, read: bool = True) -> None:
        self.name = name
        self.read = read
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        if not self.read:
            return
        try:
            while data := await reader.read(65536):
                writer.write(self.name.encode() + b":" + data)
            # Half-close: the client is done sending; answer once more, then close.
            writer.write(b"bye from " + self.name.encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


def agent_config(upstreams: list[int], **service: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {"echo": [{"host": "127.0.0.1", "port": p} for p in upstreams]}
                },
            }
        ],
        "services": [{"name": "echo", "health": {"enabled": False}, **service}],
        "listeners": [{"port": free_port(), "service": "echo"}],
        "drain_timeout_s": 2,
    }


AgentFactory = Callable[..., Any]


@pytest.fixture
async def start_agent() -> AsyncIterator[AgentFactory]:
    agents: list[Agent] = []

    async def start(raw: dict[str, Any]) -> Agent:
        agent = Agent(parse_config(raw))
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.stop()
