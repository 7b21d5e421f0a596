"""The Dubbo listener in-process, against small providers built from our own codec.

The Java peer is the reference (tests/interop/test_dubbo_proxy.py); these check what is
awkward to provoke there: the in-flight bound, one-way forwarding, held answers, stats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.codec import NEED_DATA
from agent.config import parse_config
from agent.runtime.agent import Agent
from plugins.dubbo.body import (
    Invocation,
    decode_invocation,
    decode_result,
    encode_invocation,
    request_frame,
    value_response_frame,
)
from plugins.dubbo.frame import Frame, FrameDecoder, Status
from tests.fixtures.net import async_wait_until, free_port

SERVICE = "org.example.Echo"


class Provider:
    """Answers each request with ``"{name}:{method}"``; holds answers while ``hold`` is clear."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hold = asyncio.Event()
        self.hold.set()
        self.received: list[Frame] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Provider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        decoder = FrameDecoder()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                decoder.receive_data(data)
                while (frame := decoder.next_event()) is not NEED_DATA:
                    assert isinstance(frame, Frame)
                    self.received.append(frame)
                    if frame.header.two_way and not frame.header.event:
                        task = asyncio.get_running_loop().create_task(self._answer(frame, writer))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)

    async def _answer(self, frame: Frame, writer: asyncio.StreamWriter) -> None:
        await self.hold.wait()
        method = decode_invocation(frame.body).method
        writer.write(value_response_frame(frame.header.request_id, f"{self.name}:{method}"))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()

    def send(self, request_id: int, method: str, two_way: bool = True) -> None:
        body = encode_invocation(Invocation(SERVICE, "", method, (), (), {"timeout": "2000"}))
        self.writer.write(request_frame(request_id, body, two_way))

    async def read(self) -> Frame:
        while (frame := self.decoder.next_event()) is NEED_DATA:
            data = await self.reader.read(65536)
            assert data, "connection closed"
            self.decoder.receive_data(data)
        assert isinstance(frame, Frame)
        return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def config(ports: list[int], **listener: Any) -> dict[str, Any]:
    instances = [{"host": "127.0.0.1", "port": p} for p in ports]
    return {
        "admin": {"port": 0},
        "registries": [
            {"name": "local", "type": "local", "config": {"services": {SERVICE: instances}}}
        ],
        "services": [{"name": SERVICE, "protocol": "dubbo", "health": {"enabled": False}}],
        "listeners": [
            {"port": free_port(), "service": SERVICE, "protocol": "dubbo", "config": listener}
        ],
        "drain_timeout_s": 1,
    }  # fmt: skip


@pytest.fixture
async def run() -> AsyncIterator[Callable[..., Any]]:
    agents: list[Agent] = []
    clients: list[Client] = []

    async def start(raw: dict[str, Any]) -> tuple[Agent, Client]:
        agent = Agent(parse_config(raw))
        await agent.start()
        agents.append(agent)
        _listener, host, port = agent.listener_addresses()[0]
        client = Client(*await asyncio.open_connection(host, port))
        clients.append(client)
        return agent, client

    yield start
    for client in clients:
        await client.close()
    for agent in agents:
        await agent.stop()


async def test_per_request_balancing_and_stats(run: Callable[..., Any]) -> None:
    providers = [await Provider(f"p{i}").start() for i in range(2)]
    agent, client = await run(config([p.port for p in providers]))
    for request_id in range(4):
        client.send(request_id, "hello")
    answers = {}
    for _ in range(4):
        frame = await client.read()
        answers[frame.header.request_id] = decode_result(frame.header, frame.body).value
    assert sorted(answers) == [0, 1, 2, 3]
    assert sorted(answers.values()) == ["p0:hello", "p0:hello", "p1:hello", "p1:hello"]
    stats = agent.listeners[0].context.stats
    assert (stats.accepted, stats.active, stats.requests, stats.request_errors) == (1, 1, 4, 0)
    assert len(agent.listeners[0].context.connections) == 1
    for provider in providers:
        await provider.stop()


async def test_in_flight_bound(run: Callable[..., Any]) -> None:
    provider = await Provider("p").start()
    provider.hold.clear()
    _agent, client = await run(config([provider.port], max_in_flight=2))
    for request_id in (1, 2, 3):
        client.send(request_id, "m")
    refused = await client.read()
    assert refused.header.request_id == 3
    assert refused.header.status == Status.SERVER_THREADPOOL_EXHAUSTED_ERROR
    assert (
        "2 requests already in flight" in decode_result(refused.header, refused.body).error_message
    )
    provider.hold.set()
    assert {(await client.read()).header.request_id for _ in range(2)} == {1, 2}
    await provider.stop()


async def test_one_way_is_forwarded_without_an_answer(run: Callable[..., Any]) -> None:
    provider = await Provider("p").start()
    _agent, client = await run(config([provider.port]))
    client.send(7, "fire", two_way=False)
    client.send(8, "after")
    frame = await client.read()
    assert frame.header.request_id == 8  # nothing came back for the one-way request
    methods = [decode_invocation(f.body).method for f in provider.received]
    assert methods == ["fire", "after"]
    assert provider.received[0].header.two_way is False
    await provider.stop()


async def test_client_gone_with_answers_pending(run: Callable[..., Any]) -> None:
    provider = await Provider("p").start()
    provider.hold.clear()
    agent, client = await run(config([provider.port]))
    client.send(1, "m")
    await async_wait_until(lambda: provider.received)
    await client.close()
    context = agent.listeners[0].context
    await async_wait_until(lambda: context.stats.active == 0)
    assert context.idle.is_set()
    provider.hold.set()  # the late answer finds no client: dropped quietly
    host = agent.clusters[SERVICE].hosts()[0]
    assert host.active_requests == 0
    await provider.stop()
